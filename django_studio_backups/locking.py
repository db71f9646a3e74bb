"""One backup or restore at a time per backup folder, across processes, with ``flock``.

A Python without ``fcntl`` (Windows) cannot serialise backups this way: ``LOCKS_AVAILABLE``
is False, and every lock raises ``LockUnavailable``, so backups and restores are refused
with that reason. Django still starts, ``check`` says so (W013), and ``migrate`` runs.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".lock"
POLL_INTERVAL = 0.05
LOCKS_AVAILABLE = fcntl is not None


class LockTimeout(Exception):
    # The kind of trouble, as exceptions.problem_of reads it.
    problem = "busy"


class LockUnavailable(OSError):
    """This Python has no ``flock``: backups and restores are refused."""

    def __init__(self) -> None:
        super().__init__(
            "this Python has no file locks (no fcntl module, as on Windows), so backups "
            "could not be kept from running into each other"
        )


@contextlib.contextmanager
def exclusive(path: Path, timeout: float) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path``, waiting at most ``timeout`` seconds.

    The kernel drops a flock when its process dies, so a run killed with SIGKILL never
    leaves the folder locked. ``path`` may be a directory, which is locked without creating
    any file in it.
    """
    if not LOCKS_AVAILABLE:
        raise LockUnavailable()
    if path.is_dir():
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    else:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LockTimeout(
                        f"another backup, restore or off-site copy has held {path} for "
                        f"more than {timeout:g} s"
                    ) from None
                time.sleep(POLL_INTERVAL)
        yield
    finally:
        os.close(fd)


def is_locked(path: Path) -> bool:
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False
