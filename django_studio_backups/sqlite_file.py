"""SQLite files as the engine sees them: opening without creating, reading headers, the
descriptors kept on live databases, and SQLite's own checks.

Nothing here knows about Django (see ``engine``).
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable
from pathlib import Path

SQLITE_HEADER = b"SQLite format 3\x00"
HASH_BLOCK = 1024 * 1024
# SQLite steps between two looks at a count's deadline.
COUNT_STEPS = 10_000
# How often a waiting loop looks again: for a check to end, and for a busy database's lock.
POLL_INTERVAL = 0.05
LOCK_RETRY = 0.001


class EngineError(Exception):
    """A copy, check or restore that could not be done; the message says why."""


class NotADatabase(EngineError):
    pass


class CheckFailed(EngineError):
    # The kind of trouble, as exceptions.problem_of reads it.
    problem = "damaged"


def file_uri(path: Path) -> str:
    # Always with an (empty) authority: a path that starts with // would otherwise be read
    # as "file://authority/...", and a relative one as relative to SQLite's own guess.
    return f"file://{urllib.parse.quote(str(path.absolute()))}"


def connect(path: Path, *, mode: str = "rw", timeout: float = 5.0) -> sqlite3.Connection:
    """Open ``path`` without ever creating it by accident (``mode`` is a SQLite URI mode)."""
    return sqlite3.connect(
        f"{file_uri(path)}?mode={mode}", uri=True, timeout=timeout, isolation_level=None
    )


def open_snapshot_file(path: Path) -> sqlite3.Connection:
    # Backup files never change once published: immutable=1 skips locking and never
    # creates -wal/-shm files beside them, so checks also work in read-only directories.
    return sqlite3.connect(f"{file_uri(path)}?mode=ro&immutable=1", uri=True, isolation_level=None)


def read_header(path: Path) -> bytes:
    """The first 100 bytes of the SQLite file ``path``; ``NotADatabase`` for anything else.

    Only for files no SQLite connection in this process has open: use
    ``read_live_header`` for a live database.
    """
    try:
        with open(path, "rb") as f:
            return _valid_header(path, f.read(100))
    except IsADirectoryError:
        raise NotADatabase(f"{path} is a directory, not a SQLite database") from None


def read_live_header(path: Path) -> bytes:
    """``read_header`` for a database that connections in this process may have open."""
    if path.is_dir():
        raise NotADatabase(f"{path} is a directory, not a SQLite database")
    return _valid_header(path, os.pread(live_descriptor(path), 100, 0))


def _valid_header(path: Path, header: bytes) -> bytes:
    if len(header) < 100 or not header.startswith(SQLITE_HEADER):
        raise NotADatabase(f"{path} is not a SQLite database")
    return header


# Closing any descriptor on a file releases every POSIX lock this process holds on it,
# SQLite's own included (SQLite's "How To Corrupt" page lists it): another process could
# then believe it is the database's last user and, in WAL mode, checkpoint and delete the
# -wal that this process's connections still read. So a live database file is read
# through one descriptor per file, kept open for the life of the process, as SQLite keeps
# its own descriptors open while it holds locks.
_live_descriptors: dict[tuple[int, int], int] = {}


_live_descriptors_lock = threading.Lock()


def live_descriptor(path: Path) -> int:
    """A read-only descriptor on the live database file ``path``; never close it."""
    with _live_descriptors_lock:
        for key, kept in list(_live_descriptors.items()):
            if os.fstat(kept).st_nlink == 0:
                # The file was deleted: no connection opened by name can lock it any more.
                os.close(kept)
                del _live_descriptors[key]
        stat = os.stat(path)
        descriptor = _live_descriptors.get((stat.st_dev, stat.st_ino))
        if descriptor is None:
            descriptor = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            opened = os.fstat(descriptor)
            _live_descriptors[(opened.st_dev, opened.st_ino)] = descriptor
        return descriptor


def is_damage(exc: sqlite3.Error) -> bool:
    """Whether SQLite's error says the file is damaged (SQLITE_CORRUPT, SQLITE_NOTADB), as
    opposed to a check that could not run: busy, locked, interrupted, I/O, no memory."""
    message = str(exc)
    return "malformed" in message or "not a database" in message


def is_wal(header: bytes) -> bool:
    # Bytes 18-19 of the header (the read and write versions) are 2 in WAL mode, 1 with a
    # rollback journal.
    return header[18] == 2


def page_size(header: bytes) -> int:
    # Bytes 16-17, big-endian; the value 1 stands for 65,536.
    size = int.from_bytes(header[16:18], "big")
    return 65536 if size == 1 else size


def fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def database_size(connection: sqlite3.Connection) -> int:
    page_count = connection.execute("PRAGMA page_count").fetchone()[0]
    page_size = connection.execute("PRAGMA page_size").fetchone()[0]
    return int(page_count) * int(page_size)


def check(path: Path, *, full: bool = False) -> None:
    """Raise ``CheckFailed`` unless SQLite's quick_check (or integrity_check) passes."""
    _check(path, full, lambda connection: True)


def _check(path: Path, full: bool, share: Callable[[sqlite3.Connection | None], bool]) -> bool:
    # share() is given the connection once it is open (False: stop there, and return
    # False) and None before it closes, so that another thread can interrupt the check.
    read_header(path)
    pragma = "integrity_check" if full else "quick_check"
    try:
        connection = open_snapshot_file(path)
        try:
            if not share(connection):
                return False
            rows = [row[0] for row in connection.execute(f"PRAGMA {pragma}").fetchmany(5)]
        finally:
            share(None)
            connection.close()
    except sqlite3.Error as exc:
        if not is_damage(exc):
            # A disk that failed to read, memory that ran out: nothing known of the data.
            raise EngineError(f"{path.name} could not be checked: {exc}") from exc
        raise CheckFailed(f"{path.name} failed {pragma}: {exc}") from exc
    if rows != ["ok"]:
        raise CheckFailed(f"{path.name} failed {pragma}: {'; '.join(map(str, rows))}")
    return True


class BackgroundCheck:
    """``check(path, full=...)`` in a thread of its own, while the caller does other work.

    Use it as a context manager: leaving the block cancels a check still running.
    """

    def __init__(self, path: Path, *, full: bool = False) -> None:
        self.path = path
        self.full = full
        self._passed = False
        self._error: EngineError | None = None
        self._lock = threading.Lock()
        self._connection: sqlite3.Connection | None = None
        self._cancelled = False
        self._thread = threading.Thread(target=self._run, name="studio-backups-check", daemon=True)

    def __enter__(self) -> BackgroundCheck:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.cancel()

    def _run(self) -> None:
        try:
            self._passed = _check(self.path, self.full, self._share)
        except EngineError as exc:
            self._error = exc
        except Exception as exc:  # an unreadable file, no memory: not a pass either
            self._error = CheckFailed(f"{self.path.name} could not be checked: {exc!r}")

    def _share(self, connection: sqlite3.Connection | None) -> bool:
        with self._lock:
            self._connection = connection
            return not self._cancelled

    def failure(self) -> EngineError | None:
        """Why the check did not pass, once it has ended; None while it runs or if it passed."""
        if self._thread.is_alive() or self._passed:
            return None
        return self._error or CheckFailed(f"{self.path.name} was not checked: cancelled")

    def wait(self) -> None:
        """Wait for the check to end (``failure`` then says how it went)."""
        self._thread.join()

    def cancel(self) -> None:
        with self._lock:
            self._cancelled = True
        while self._thread.is_alive():
            # Interrupting before the PRAGMA has begun would not stop it: repeat until done.
            with self._lock:
                if self._connection is not None:
                    self._connection.interrupt()
            self._thread.join(POLL_INTERVAL)


def readable(path: Path, *, wait: float) -> bool:
    """Whether a read transaction on the live database ``path`` can begin within ``wait``
    seconds (False: a lock keeps readers out, in rollback-journal mode)."""
    connection = connect(path, timeout=0)
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                connection.execute("SELECT count(*) FROM sqlite_master").fetchone()
                return True
            except sqlite3.OperationalError:
                if time.monotonic() > deadline:
                    return False
                time.sleep(LOCK_RETRY)
    finally:
        connection.close()


def has_table(path: Path, table: str) -> bool:
    connection = open_snapshot_file(path)
    try:
        row = connection.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
        ).fetchone()
    finally:
        connection.close()
    return row is not None


def count_rows(
    path: Path, tables: Iterable[str], *, live: bool, deadline: float
) -> dict[str, int | None]:
    """How many rows each of ``tables`` holds in the database at ``path``, read in one
    transaction; 0 for a table it lacks, None for one not counted by ``deadline`` (a
    ``time.monotonic()``) or while the database stayed busy. ``live``: a database in use
    (its read lock holds writers back in rollback-journal mode, so the deadline bounds that
    too), not a backup."""
    if live:  # a writer's lock is waited for until the deadline, no longer
        connection = connect(path, mode="ro", timeout=max(0.0, deadline - time.monotonic()))
    else:
        connection = open_snapshot_file(path)
    connection.set_progress_handler(lambda: time.monotonic() > deadline, COUNT_STEPS)
    counts: dict[str, int | None] = dict.fromkeys(tables)
    try:
        connection.execute("BEGIN")
        existing = {
            str(name)
            for (name,) in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
        for table in counts:
            if time.monotonic() > deadline:
                break
            if table not in existing:
                counts[table] = 0
                continue
            quoted = table.replace('"', '""')
            (counts[table],) = connection.execute(f'SELECT count(*) FROM "{quoted}"').fetchone()
    except sqlite3.OperationalError:
        pass  # interrupted at the deadline, or busy: what is left is not counted
    finally:
        connection.close()
    return counts


def read_rows(path: Path, query: str) -> list[tuple[object, ...]]:
    connection = open_snapshot_file(path)
    try:
        return [tuple(row) for row in connection.execute(query)]
    finally:
        connection.close()


def journal_mode(path: Path, *, timeout: float = 5.0) -> str:
    connection = connect(path, mode="ro", timeout=timeout)
    try:
        return _journal_mode(connection)
    finally:
        connection.close()


def _journal_mode(connection: sqlite3.Connection) -> str:
    return str(connection.execute("PRAGMA journal_mode").fetchone()[0]).lower()


def in_wal_mode(connection: sqlite3.Connection) -> bool:
    return _journal_mode(connection) == "wal"


def check_restorable(backup: Path, live: Path) -> None:
    """Raise ``CheckFailed`` if SQLite cannot restore ``backup`` over the live database
    ``live``: its page size differs from that of a live database in WAL mode.
    (``BackgroundCheck`` runs the integrity_check.)"""
    if not live.exists() or live.stat().st_size == 0:
        return  # no live database (or the empty file Django creates): nothing to match
    current = read_live_header(live)
    restored = read_header(backup)
    # SQLite cannot change the page size of a database in WAL mode.
    if is_wal(current) and page_size(current) != page_size(restored):
        raise CheckFailed(
            f"its page size ({page_size(restored)} bytes) differs from the live "
            f"database's ({page_size(current)} bytes), which is in WAL mode"
        )
