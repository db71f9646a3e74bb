"""Restore a backup into a live SQLite database through SQLite's backup API, as one
transaction, and check the result. Part of the Engine, as ``engine`` (whose watcher it
shares) and ``sqlite_file`` are: paths in, ``EngineError`` out, nothing of Django.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from .engine import Progress, Watcher, explain
from .sqlite_file import (
    LOCK_RETRY,
    CheckFailed,
    EngineError,
    connect,
    in_wal_mode,
    is_damage,
    open_snapshot_file,
    page_size,
    read_header,
)

# What a restore writes per backup API step. In rollback-journal mode its first step must
# stay in the page cache (RESTORE_CACHE_KIB, twice as large): a page spilled to the file
# before the safety copy is made would end up in that copy.
RESTORE_STEP_BYTES = 4 * 1024 * 1024
RESTORE_CACHE_KIB = 2 * RESTORE_STEP_BYTES // 1024
CHECKPOINT_WAIT_MS = 200
# SQLite's result codes; the sqlite3 module only names them from Python 3.11 on.
SQLITE_OK = 0
SQLITE_BUSY = 5
SQLITE_LOCKED = 6

logger = logging.getLogger("django_studio_backups")


def has_wal_reset_bug(version: str) -> bool:
    """Whether SQLite ``version`` has the WAL-reset bug: a RESTART or TRUNCATE checkpoint
    racing a writer can corrupt the database. Fixed in 3.51.3, and in 3.50.7 and 3.44.6."""
    try:
        number = tuple(int(part) for part in version.split(".")[:3])
    except ValueError:
        return True  # an unknown build: assume the worst
    if (3, 50, 7) <= number < (3, 51, 0) or (3, 44, 6) <= number < (3, 45, 0):
        return False
    return (3, 7, 0) <= number < (3, 51, 3)


HAS_WAL_RESET_BUG = has_wal_reset_bug(sqlite3.sqlite_version)


def _backup_step_guard(deadline: float, what: str) -> Callable[[int, int, int], None]:
    # CPython's Connection.backup() sleeps and retries forever while the source is busy;
    # raising from the progress callback is the only way to give up after a deadline.
    def guard(status: int, remaining: int, total: int) -> None:
        if status in (SQLITE_BUSY, SQLITE_LOCKED) and time.monotonic() > deadline:
            raise EngineError(f"{what}: the database is locked by another connection")

    return guard


def _gated(
    guard: Callable[[int, int, int], None],
    step: int,
    while_locked: Callable[[], None] | None,
    before_commit: Callable[[], None] | None,
) -> Callable[[int, int, int], None]:
    # Called after every step. The first step that copied pages has taken the destination's
    # write lock, and in rollback-journal mode (the cache holds more than a step) has not
    # yet written into its file: while_locked runs then. The backup API commits in the step
    # that copies the last page: that step begins only once before_commit has returned.
    locked = while_locked
    waiting = before_commit

    def on_step(status: int, remaining: int, total: int) -> None:
        nonlocal locked, waiting
        guard(status, remaining, total)
        if locked is not None and status == SQLITE_OK and remaining > 0:
            locked()
            locked = None
        if waiting is not None and 0 < remaining <= step:
            waiting()
            waiting = None

    return on_step


def restore_into(
    backup: Path,
    live: Path,
    *,
    timeout: float = 5.0,
    progress: Progress | None = None,
    before_commit: Callable[[], None] | None = None,
    while_locked: Callable[[], None] | None = None,
    passive: bool = False,
) -> str | None:
    """Write ``backup`` into the live database ``live`` through SQLite's backup API.

    The whole copy is one transaction on the live database: other connections see either
    the old data or the restored data, a crash midway is rolled back by SQLite's own
    recovery, and stale ``-wal`` content cannot bring old rows back. Raises ``EngineError``
    with the live database unchanged when the copy cannot be done.

    ``while_locked`` is called once the restore holds the live database's write lock and
    before it has written anything into its file: no one else can commit from then on, so
    ``engine.copy_database(live, ..., under_restore=True)`` made then holds exactly the data the
    restore replaces. ``passive``: checkpoint only PASSIVE, as where Litestream replicates the
    database (it checkpoints itself, and a reset of the -wal would compete with it).
    ``before_commit`` is called once every page but the last batch is
    written. Whatever either raises rolls the transaction back and is raised again, with
    the live database unchanged.

    Returns None once the restored database passed quick_check, or why it could not be
    checked (see ``check_restored``); ``CheckFailed`` means it was restored and is damaged.
    """
    header = read_header(backup)
    src = open_snapshot_file(backup)
    try:
        # Create the live database only where there is none: a name that does not lead to
        # it must not become a new, empty database that is then reported as restored.
        dst = connect(live, mode="rw" if live.exists() else "rwc", timeout=timeout)
        try:
            wal = in_wal_mode(dst)
            pages = int(src.execute("PRAGMA page_count").fetchone()[0])
            expected = pages * page_size(header)
            # Never all in one step: a step that copies the last page also commits, and
            # while_locked must come between taking the lock and committing.
            step = max(1, min(RESTORE_STEP_BYTES // page_size(header), pages - 1))
            if while_locked is not None and pages < 2:
                raise EngineError(f"{backup} holds no data to restore")
            watched = [Path(f"{live}-wal")] if wal else [Path(f"{live}-journal")]
            if before_commit is not None and pages <= step:
                # One step copies it all, and commits: before_commit goes first.
                before_commit()
                before_commit = None
            deadline = time.monotonic() + timeout
            guard = _backup_step_guard(deadline, f"Could not write {live}")
            on_step = _gated(guard, step, while_locked, before_commit)
            # The backup API retries a busy step itself, every LOCK_RETRY; SQLite's own busy
            # handler waits longer and longer between tries, and against a writer that holds
            # its lock all but a moment between commits, a restore in rollback-journal mode
            # then waited many times as long for its turn (see bench/RESULTS.md).
            dst.execute("PRAGMA busy_timeout=0")
            dst.execute(f"PRAGMA cache_size=-{RESTORE_CACHE_KIB}")
            with Watcher(watched, expected, progress).running():
                try:
                    src.backup(dst, pages=step, progress=on_step, sleep=LOCK_RETRY)
                except BaseException:
                    if wal:
                        # Rolled back; but the -wal keeps the size of what was written into
                        # it (up to the whole database) until a checkpoint truncates it.
                        with contextlib.suppress(sqlite3.Error):
                            _checkpoint(dst, passive)
                    raise
            if wal:
                _checkpoint_restored(dst, live, passive)
            return check_restored(dst, live, timeout)
        finally:
            dst.close()
    except sqlite3.Error as exc:
        _roll_back_hot_journal(live)
        raise EngineError(f"Could not restore into {live}: {explain(exc, live)}") from exc
    finally:
        src.close()


def check_restored(connection: sqlite3.Connection, live: Path, timeout: float) -> str | None:
    """quick_check ``live`` through ``connection`` right after a restore committed into it.

    None if it passed. A check that could not run (the database stayed busy or locked for
    ``timeout``, it was interrupted, the disk failed to read) says nothing about the data:
    its reason is returned, and the restore stands. ``CheckFailed`` only for damage that
    SQLite found.
    """
    # SQLite's busy handler retries a busy check until the timeout.
    connection.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
    try:
        rows = [row[0] for row in connection.execute("PRAGMA quick_check").fetchmany(5)]
    except sqlite3.Error as exc:
        if not is_damage(exc):
            return f"{live.name} was restored, but could not be checked: {exc}"
        raise CheckFailed(f"{live.name} failed quick_check after the restore: {exc}") from exc
    if rows != ["ok"]:
        raise CheckFailed(
            f"{live.name} failed quick_check after the restore: {'; '.join(map(str, rows))}"
        )
    return None


def _checkpoint_restored(connection: sqlite3.Connection, live: Path, passive: bool) -> None:
    # Move the restored pages from the WAL into the database file now, rather than leaving
    # a WAL as large as the database for the next writer to pay for.
    try:
        _checkpoint(connection, passive)
    except sqlite3.Error as exc:
        # The restore is committed (and synced) in the -wal, and every reader sees it there:
        # failing now would report a restore that happened as one that did not. SQLite
        # moves the pages later, once there is room.
        logger.warning("Restored %s, but could not checkpoint its -wal yet: %s", live, exc)


def _checkpoint(connection: sqlite3.Connection, passive: bool) -> None:
    # TRUNCATE also gives the -wal's space back, but it resets the -wal, and on a SQLite
    # with the WAL-reset bug a reset racing a writer can corrupt the database: there a
    # PASSIVE checkpoint moves the pages, and the -wal keeps its size until it is reused.
    # TRUNCATE waits for readers while holding the write lock: wait only briefly, so the
    # site's writers are not kept out for the whole LOCK_TIMEOUT.
    connection.execute(f"PRAGMA busy_timeout={CHECKPOINT_WAIT_MS}")
    how = "PASSIVE" if passive or HAS_WAL_RESET_BUG else "TRUNCATE"
    connection.execute(f"PRAGMA wal_checkpoint({how})").fetchall()


def _roll_back_hot_journal(live: Path) -> None:
    # A restore that failed midway in rollback-journal mode (a full disk) leaves a hot
    # journal and half-written pages; the first connection to read the file rolls them
    # back. Do it now, so the file itself is the old database again, not only through SQLite.
    # No waiting: a hot journal has no connection holding a lock on the file.
    with contextlib.suppress(sqlite3.Error):
        connection = connect(live, timeout=0)
        try:
            connection.execute("SELECT count(*) FROM sqlite_master").fetchone()
        finally:
            connection.close()
