"""Work that must not hold up its caller: an e-mail, a heartbeat, an off-site upload.

A daemon thread per piece of work, so none can keep a process alive for good (a server that
trickles a byte every few seconds defeats any socket timeout). At exit the process waits for
the notifications it started, up to ``EXIT_WAIT`` seconds in all, so that a command's
failure mail goes out before it ends. Uploads are not waited for: one cut short leaves its
backup "being copied", and the next daily job or ``sync_offsite`` copies it.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

logger = logging.getLogger("django_studio_backups")

EXIT_WAIT = 30.0

# Each running thread, and whether the process waits for it at exit.
_running: dict[threading.Thread, bool] = {}
_guard = threading.Lock()


def start(name: str, work: Callable[..., Any], *args: Any, wait_at_exit: bool) -> None:
    """Run ``work(*args)`` in a thread; whatever it raises is logged, never lost."""

    def run() -> None:
        try:
            work(*args)
        except Exception:
            logger.exception("%s failed", name)
        finally:
            with _guard:
                _running.pop(threading.current_thread(), None)

    thread = threading.Thread(target=run, name=f"studio-backups: {name}", daemon=True)
    with _guard:  # (the thread forgets itself under it, so only once it is known)
        try:
            thread.start()
            _running[thread] = wait_at_exit
            return
        except RuntimeError:
            pass
    # "can't create new thread at interpreter shutdown" (Python 3.12): work started while
    # the process ends. A notification, bounded by its timeouts, is sent at once; an upload
    # is left to the next daily job or sync_offsite.
    if wait_at_exit:
        run()
    else:
        logger.warning("Not starting %s: the process is ending", name)


def wait(timeout: float | None = None, *, uploads: bool = True) -> bool:
    """Wait for the work started so far (and any it starts), uploads too unless ``uploads``
    is False; False if some is still running after ``timeout`` seconds."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        with _guard:
            running = [
                thread
                for thread, at_exit in _running.items()
                if (uploads or at_exit) and thread is not threading.current_thread()
            ]
        if not running:
            return True
        for thread in running:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            thread.join(left)
            if thread.is_alive():
                return False


@atexit.register
def _at_exit() -> None:
    if not wait(EXIT_WAIT, uploads=False):
        logger.warning("Gave up waiting for notifications after %g s", EXIT_WAIT)
