"""One backup or restore at a time per backup folder, across processes."""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path

LOCK_NAME = ".lock"
POLL_INTERVAL = 0.05


class LockTimeout(Exception):
    # The kind of trouble, as exceptions.problem_of reads it.
    problem = "busy"


@contextlib.contextmanager
def exclusive(path: Path, timeout: float) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path``, waiting at most ``timeout`` seconds.

    The kernel drops a flock when its process dies, so a run killed with SIGKILL never
    leaves the folder locked. ``path`` may be a directory, which is locked without creating
    any file in it.
    """
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
