"""Copy live SQLite databases and restore backups into them (``sqlite_file`` opens, reads
and checks the files, and its names are this module's too).

Nothing here knows about Django: the functions take paths and plain values and raise
``EngineError`` (or a subclass) with a message fit for a person when something is wrong.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from .sqlite_file import (
    HASH_BLOCK,
    LOCK_RETRY,
    POLL_INTERVAL,
    SQLITE_HEADER,
    BackgroundCheck,
    CheckFailed,
    EngineError,
    NotADatabase,
    check,
    check_restorable,
    connect,
    count_rows,
    database_size,
    file_uri,
    fsync_directory,
    has_table,
    in_wal_mode,
    is_damage,
    is_wal,
    journal_mode,
    live_descriptor,
    open_snapshot_file,
    page_size,
    read_header,
    read_live_header,
    read_rows,
    readable,
    sha256_of,
)

# (bytes done, bytes expected). Called from a watcher thread, at most every POLL_INTERVAL.
Progress = Callable[[int, int], None]

# Dirty pages of a copy are flushed every FLUSH_CHUNK bytes while the copy runs, so the
# final fsync is small: one fsync of a whole large copy stalls concurrent writers for
# seconds, because it saturates the disk and the filesystem journal they commit through
# (see bench/RESULTS.md).
FLUSH_CHUNK = 32 * 1024 * 1024
COPY_CHUNK = 8 * 1024 * 1024
# The piece of a copy held in memory where sendfile() is not available.
READ_CHUNK = 1024 * 1024
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
# SQLite reports a -shm or -wal file it cannot extend on a full disk as "disk I/O error";
# with less than this left free, that error is taken to be the full disk's doing.
NEARLY_FULL = 1024 * 1024
SIDECAR_SUFFIXES = ("-wal", "-shm", "-journal")
WAL_HEADER_SIZE = 32

# sqlite_file's names are the Engine's too: the rest of the app imports them from here.
__all__ = [
    "CHECKPOINT_WAIT_MS",
    "COPY_CHUNK",
    "FLUSH_CHUNK",
    "HASH_BLOCK",
    "HAS_WAL_RESET_BUG",
    "LOCK_RETRY",
    "NEARLY_FULL",
    "POLL_INTERVAL",
    "READ_CHUNK",
    "RESTORE_CACHE_KIB",
    "RESTORE_STEP_BYTES",
    "SIDECAR_SUFFIXES",
    "SQLITE_BUSY",
    "SQLITE_HEADER",
    "SQLITE_LOCKED",
    "SQLITE_OK",
    "WAL_HEADER_SIZE",
    "BackgroundCheck",
    "CheckFailed",
    "EngineError",
    "NotADatabase",
    "check",
    "check_restorable",
    "check_restored",
    "connect",
    "copy_database",
    "count_rows",
    "database_size",
    "file_uri",
    "fsync_directory",
    "has_table",
    "has_wal_reset_bug",
    "in_wal_mode",
    "is_damage",
    "is_wal",
    "journal_mode",
    "live_descriptor",
    "open_snapshot_file",
    "page_size",
    "read_header",
    "read_live_header",
    "read_rows",
    "readable",
    "restore_into",
    "sha256_of",
]

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


class _Watcher(threading.Thread):
    """Reports how far the files being written have grown, and flushes them to disk in
    bounded chunks, together with the ``also_flush`` files that grow meanwhile."""

    def __init__(
        self,
        paths: Sequence[Path],
        expected: int,
        progress: Progress | None,
        *,
        also_flush: Sequence[Path] = (),
    ) -> None:
        super().__init__(name="studio-backups-watcher", daemon=True)
        self.paths = paths
        self.also_flush = also_flush
        self.expected = expected
        self.progress = progress
        self.done = threading.Event()

    def run(self) -> None:
        flushed: dict[Path, int] = {}
        while not self.done.wait(POLL_INTERVAL):
            for path in self.also_flush:
                self._flush_in_chunks(path, flushed)
            total = sum(self._flush_in_chunks(path, flushed) for path in self.paths)
            if self.progress is not None:
                self.progress(min(total, self.expected), self.expected)

    @staticmethod
    def _flush_in_chunks(path: Path, flushed: dict[Path, int]) -> int:
        try:
            size = path.stat().st_size
            if size - flushed.get(path, 0) >= FLUSH_CHUNK:
                _fdatasync_path(path)
                flushed[path] = size
        except FileNotFoundError:
            return 0
        return size

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        self.start()
        try:
            yield
        finally:
            self.done.set()
            self.join()
        # Only once the work succeeded: it is all done, whatever the last look saw (a small
        # copy may end before the first look).
        if self.progress is not None:
            self.progress(self.expected, self.expected)


def _fdatasync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        # (macOS has no fdatasync; fsync flushes the data too.)
        getattr(os, "fdatasync", os.fsync)(fd)
    finally:
        os.close(fd)


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


def copy_database(
    source: Path,
    destination: Path,
    *,
    timeout: float = 5.0,
    progress: Progress | None = None,
    under_restore: bool = False,
) -> None:
    """Snapshot the live database ``source`` into the new file ``destination``.

    Everything committed before the copy starts is in it, including what still sits in the
    ``-wal`` file. The copy is durable on return, uses the rollback journal (so opening it
    never creates ``-wal``/``-shm`` files) and is readable only by its owner.

    ``under_restore``: called from ``restore_into``'s ``while_locked``, while this process
    holds the database's write lock and has written nothing into its file.
    """
    if not source.exists():
        raise EngineError(f"The database {source} does not exist")
    header = read_live_header(source)
    # O_EXCL: never write into a file that someone else created under this name.
    os.close(os.open(destination, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    try:
        if under_restore and not is_wal(header):
            # The restore's exclusive lock keeps out every reader, this copy's too; and
            # while it holds that lock, no one can change the file: it is the snapshot.
            _copy_bytes(live_descriptor(source), destination)
        else:
            _copy_files(source, destination, timeout=timeout, progress=progress)
        _settle_copy(destination, timeout=timeout)
    except (sqlite3.Error, OSError) as exc:
        # Leaving WAL mode opens the copy's -wal and -shm; on a full disk they stay behind.
        for suffix in SIDECAR_SUFFIXES:
            Path(f"{destination}{suffix}").unlink(missing_ok=True)
        raise EngineError(f"Could not copy {source}: {_explain(exc, source, destination)}") from exc
    fd = os.open(destination, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _copy_files(
    source: Path, destination: Path, *, timeout: float, progress: Progress | None
) -> None:
    """Copy the database file, then its -wal, byte for byte, inside one read transaction.

    In rollback-journal mode the transaction's shared lock keeps every writer out of the
    file until the copy is done. In WAL mode its snapshot keeps the -wal from restarting
    and lets a checkpoint move into the file only pages that the -wal still holds, so the
    -wal copied afterwards covers every page that changed under the copy; SQLite then
    replays that -wal into the copy up to its last whole commit (``_settle_copy``).

    The kernel copies at ``cp`` speed: the backup API took about twice as long, and held the
    shared lock, which stops writers in rollback-journal mode, as long (see bench/RESULTS.md).
    """
    src = connect(source, timeout=timeout)
    try:
        src.execute("BEGIN")
        src.execute("SELECT count(*) FROM sqlite_master").fetchone()
        wal = in_wal_mode(src)
        expected = database_size(src)
        # While the read transaction lasts, no checkpoint can move the writers' commits out
        # of the source's -wal, and with synchronous=NORMAL nothing syncs them either: the
        # first checkpoint after the copy had to sync everything written meanwhile, and a
        # writer's commit waited for it. Syncing the -wal in chunks alongside the copy keeps
        # that wait short (see bench/RESULTS.md, "WAL stall").
        source_wal = [Path(f"{source}-wal")] if wal else []
        with _Watcher([destination], expected, progress, also_flush=source_wal).running():
            _copy_bytes(live_descriptor(source), destination)
            for path in source_wal:
                _copy_wal(path, Path(f"{destination}-wal"))
        src.execute("ROLLBACK")
    finally:
        src.close()


def _copy_wal(source: Path, destination: Path) -> None:
    # A -wal file carries no locks, so it can be opened and closed like any file.
    with open(source, "rb") as wal:
        header = os.pread(wal.fileno(), WAL_HEADER_SIZE, 0)
        complete = _copy_bytes(wal.fileno(), destination)
        restarted = os.pread(wal.fileno(), WAL_HEADER_SIZE, 0) != header
    if restarted or not complete:
        # Only a snapshot that needs none of the -wal (every frame was already in the
        # database file, which stays frozen while it is read) lets a writer restart or
        # truncate the -wal meanwhile. What was copied may then be the first part of the
        # old frames, whose replay would bring older versions of pages back: the database
        # file alone is the snapshot.
        os.truncate(destination, 0)


def _copy_bytes(source_fd: int, destination: Path) -> bool:
    """Copy ``source_fd`` from its start to its size at the call; False if it shrank."""
    fd = os.open(destination, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        # Up to the size the file had when the copy began: what a writer appends later is
        # not part of the snapshot, and a copy that chased it might never end.
        return _send(source_fd, fd, os.fstat(source_fd).st_size)
    finally:
        os.close(fd)


def _send(source_fd: int, destination_fd: int, length: int) -> bool:
    offset = 0
    while offset < length:
        sent = _send_chunk(source_fd, destination_fd, offset, min(length - offset, COPY_CHUNK))
        if sent == 0:
            return False  # the file shrank
        offset += sent
    return True


# Where sendfile() cannot copy a file to a file (macOS wants a socket; some filesystems and
# sandboxes refuse it), it says so with one of these, and the copy reads and writes instead.
SENDFILE_REFUSALS = {
    errno.EINVAL,
    errno.ENOSYS,
    errno.ENOTSUP,
    errno.EOPNOTSUPP,
    errno.ENOTSOCK,
}
_sendfile_refused = False


def _send_chunk(source_fd: int, destination_fd: int, offset: int, count: int) -> int:
    """Copy up to ``count`` bytes of ``source_fd`` from ``offset`` (its own position is left
    alone, as the snapshot's read transaction needs) to ``destination_fd``'s position."""
    global _sendfile_refused
    sendfile = getattr(os, "sendfile", None)
    if sendfile is not None and not _sendfile_refused:
        try:
            return int(sendfile(destination_fd, source_fd, offset, count))
        except OSError as exc:
            if exc.errno not in SENDFILE_REFUSALS:
                raise
            _sendfile_refused = True
            logger.info("sendfile() cannot copy files here (%s); reading and writing", exc)
    data = os.pread(source_fd, min(count, READ_CHUNK), offset)
    view = memoryview(data)
    while view:
        view = view[os.write(destination_fd, view) :]
    return len(data)


def _settle_copy(destination: Path, *, timeout: float) -> None:
    """Replay the copied -wal into the copy and leave it in rollback-journal mode, so a
    backup opens anywhere, read-only too, without leaving -wal/-shm files beside it."""
    dst = connect(destination, timeout=timeout)
    try:
        # The copy is fsynced once at the end; nobody else sees it before.
        dst.execute("PRAGMA synchronous=OFF")
        dst.execute("PRAGMA journal_mode=DELETE").fetchone()
        size = database_size(dst)
    finally:
        dst.close()
    # SQLite ignores what lies past the database size in the header (a file that a crash
    # or another tool left longer than the database); the backup ends where the data does.
    if destination.stat().st_size > size:
        os.truncate(destination, size)


def restore_into(
    backup: Path,
    live: Path,
    *,
    timeout: float = 5.0,
    progress: Progress | None = None,
    before_commit: Callable[[], None] | None = None,
    while_locked: Callable[[], None] | None = None,
) -> str | None:
    """Write ``backup`` into the live database ``live`` through SQLite's backup API.

    The whole copy is one transaction on the live database: other connections see either
    the old data or the restored data, a crash midway is rolled back by SQLite's own
    recovery, and stale ``-wal`` content cannot bring old rows back. Raises ``EngineError``
    with the live database unchanged when the copy cannot be done.

    ``while_locked`` is called once the restore holds the live database's write lock and
    before it has written anything into its file: no one else can commit from then on, so
    ``copy_database(live, ..., under_restore=True)`` made then holds exactly the data the
    restore replaces. ``before_commit`` is called once every page but the last batch is
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
            with _Watcher(watched, expected, progress).running():
                try:
                    src.backup(dst, pages=step, progress=on_step, sleep=LOCK_RETRY)
                except BaseException:
                    if wal:
                        # Rolled back; but the -wal keeps the size of what was written into
                        # it (up to the whole database) until a checkpoint truncates it.
                        with contextlib.suppress(sqlite3.Error):
                            _checkpoint(dst)
                    raise
            if wal:
                _checkpoint_restored(dst, live)
            return check_restored(dst, live, timeout)
        finally:
            dst.close()
    except sqlite3.Error as exc:
        _roll_back_hot_journal(live)
        raise EngineError(f"Could not restore into {live}: {_explain(exc, live)}") from exc
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


def _checkpoint_restored(connection: sqlite3.Connection, live: Path) -> None:
    # Move the restored pages from the WAL into the database file now, rather than leaving
    # a WAL as large as the database for the next writer to pay for.
    try:
        _checkpoint(connection)
    except sqlite3.Error as exc:
        # The restore is committed (and synced) in the -wal, and every reader sees it there:
        # failing now would report a restore that happened as one that did not. SQLite
        # moves the pages later, once there is room.
        logger.warning("Restored %s, but could not checkpoint its -wal yet: %s", live, exc)


def _checkpoint(connection: sqlite3.Connection) -> None:
    # TRUNCATE also gives the -wal's space back, but it resets the -wal, and on a SQLite
    # with the WAL-reset bug a reset racing a writer can corrupt the database: there a
    # PASSIVE checkpoint moves the pages, and the -wal keeps its size until it is reused.
    # TRUNCATE waits for readers while holding the write lock: wait only briefly, so the
    # site's writers are not kept out for the whole LOCK_TIMEOUT.
    connection.execute(f"PRAGMA busy_timeout={CHECKPOINT_WAIT_MS}")
    how = "PASSIVE" if HAS_WAL_RESET_BUG else "TRUNCATE"
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


def _explain(exc: sqlite3.Error | OSError, *paths: Path) -> str:
    if isinstance(exc, OSError):
        full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
        return f"{exc.strerror}{' (the disk is full)' if full else ''}"
    message = str(exc)
    if "readonly" in message:
        # The backup API cannot change the page size of a database in WAL mode.
        return f"{message} (is the backup's page size different from the live database's?)"
    if "disk I/O error" in message and any(_nearly_full(path) for path in paths):
        return f"{message} (the disk is full)"
    return message


def _nearly_full(path: Path) -> bool:
    return shutil.disk_usage(path.parent).free < NEARLY_FULL
