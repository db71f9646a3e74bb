"""Copy live SQLite databases (``engine_restore`` restores backups into them, ``file_copy``
moves the bytes, ``sqlite_file`` opens, reads and checks the files, and its names are this
module's too).

Nothing here knows about Django: the functions take paths and plain values and raise
``EngineError`` (or a subclass) with a message fit for a person when something is wrong.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from .file_copy import copy_bytes
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
# SQLite reports a -shm or -wal file it cannot extend on a full disk as "disk I/O error";
# with less than this left free, that error is taken to be the full disk's doing.
NEARLY_FULL = 1024 * 1024
SIDECAR_SUFFIXES = ("-wal", "-shm", "-journal")
WAL_HEADER_SIZE = 32

# sqlite_file's names are the Engine's too: the rest of the app imports them from here.
__all__ = [
    "FLUSH_CHUNK",
    "HASH_BLOCK",
    "LOCK_RETRY",
    "NEARLY_FULL",
    "POLL_INTERVAL",
    "SIDECAR_SUFFIXES",
    "SQLITE_HEADER",
    "WAL_HEADER_SIZE",
    "BackgroundCheck",
    "CheckFailed",
    "EngineError",
    "NotADatabase",
    "check",
    "check_restorable",
    "connect",
    "copy_database",
    "count_rows",
    "database_size",
    "file_uri",
    "fsync_directory",
    "has_table",
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
    "sha256_of",
]


class Watcher(threading.Thread):
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

    ``under_restore``: called from ``engine_restore.restore_into``'s ``while_locked``, while
    this process holds the database's write lock and has written nothing into its file.
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
            copy_bytes(live_descriptor(source), destination)
        else:
            _copy_files(source, destination, timeout=timeout, progress=progress)
        _settle_copy(destination, timeout=timeout)
    except (sqlite3.Error, OSError) as exc:
        # Leaving WAL mode opens the copy's -wal and -shm; on a full disk they stay behind.
        for suffix in SIDECAR_SUFFIXES:
            Path(f"{destination}{suffix}").unlink(missing_ok=True)
        raise EngineError(f"Could not copy {source}: {explain(exc, source, destination)}") from exc
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
        with Watcher([destination], expected, progress, also_flush=source_wal).running():
            copy_bytes(live_descriptor(source), destination)
            for path in source_wal:
                _copy_wal(path, Path(f"{destination}-wal"))
        src.execute("ROLLBACK")
    finally:
        src.close()


def _copy_wal(source: Path, destination: Path) -> None:
    # A -wal file carries no locks, so it can be opened and closed like any file.
    with open(source, "rb") as wal:
        header = os.pread(wal.fileno(), WAL_HEADER_SIZE, 0)
        complete = copy_bytes(wal.fileno(), destination)
        restarted = os.pread(wal.fileno(), WAL_HEADER_SIZE, 0) != header
    if restarted or not complete:
        # Only a snapshot that needs none of the -wal (every frame was already in the
        # database file, which stays frozen while it is read) lets a writer restart or
        # truncate the -wal meanwhile. What was copied may then be the first part of the
        # old frames, whose replay would bring older versions of pages back: the database
        # file alone is the snapshot.
        os.truncate(destination, 0)


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


def explain(exc: sqlite3.Error | OSError, *paths: Path) -> str:
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
