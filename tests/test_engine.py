from __future__ import annotations

import errno
import logging
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from django_studio_backups import engine, engine_restore, file_copy, sqlite_file
from tests import processes
from tests.conftest import REPO, fill_database


def count(path: Path, table: str = "pair") -> int:
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return int(connection.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
    finally:
        connection.close()


def start_writer(
    database: Path, mode: str, program: str = "writer"
) -> tuple[subprocess.Popen[bytes], Path]:
    stop = database.with_name("stop")
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.processes", program, str(database), mode, str(stop)],
        cwd=REPO,
    )
    deadline = time.monotonic() + 30
    while not stop.with_suffix(".ready").exists():
        assert process.poll() is None, "the writer died"
        assert time.monotonic() < deadline, "the writer never got going"
        time.sleep(0.01)
    return process, stop


@pytest.mark.parametrize("mode", ["wal", "delete"])
def test_copy_is_consistent_while_pages_all_over_the_file_change(tmp_path: Path, mode: str) -> None:
    # Checkpoints move pages into the file while it is copied, a truncating checkpoint
    # restarts the -wal, and VACUUM shrinks the file: every copy must still be one moment.
    database = tmp_path / "live.db"
    process, stop = start_writer(database, mode, "shuffler")
    try:
        for attempt in range(25):
            copy = tmp_path / f"copy{attempt}.db"
            engine.copy_database(database, copy, timeout=10)
            engine.check(copy, full=True)
            assert engine.read_rows(copy, "SELECT count(*), sum(balance) FROM account") == [
                (processes.ACCOUNTS, processes.TOTAL_BALANCE)
            ]
            assert sorted(
                path.name for path in tmp_path.iterdir() if path.name.startswith(copy.name)
            ) == [copy.name]
            copy.unlink()
    finally:
        stop.touch()
        assert process.wait(timeout=30) == 0


@pytest.mark.parametrize("mode", ["wal", "delete"])
def test_copy_is_one_consistent_moment_while_another_process_writes(
    tmp_path: Path, mode: str
) -> None:
    copies_are_moments_of_a_writer(tmp_path, mode, megabytes=8, copies=5)


def copies_are_moments_of_a_writer(tmp_path: Path, mode: str, megabytes: int, copies: int) -> None:
    """Copy a database while another process commits pairs of rows: each copy is whole."""
    database = tmp_path / "live.db"
    fill_database(database, megabytes, journal_mode=mode)
    process, stop = start_writer(database, mode)
    try:
        for attempt in range(copies):
            committed_before = count(database)
            copy = tmp_path / f"copy{attempt}.db"
            engine.copy_database(database, copy, timeout=10)
            engine.check(copy, full=True)
            in_copy = count(copy)
            # Pairs are inserted in one transaction: an odd count would be a torn snapshot.
            assert in_copy % 2 == 0
            assert in_copy >= committed_before
    finally:
        stop.touch()
        assert process.wait(timeout=30) == 0
    assert count(database) > in_copy


def test_copy_includes_what_is_still_in_the_wal(tmp_path: Path) -> None:
    database = tmp_path / "live.db"
    writer = sqlite3.connect(database, isolation_level=None)
    writer.execute("PRAGMA journal_mode=WAL")
    writer.execute("PRAGMA wal_autocheckpoint=0")
    writer.execute("CREATE TABLE pair (n)")
    writer.executemany("INSERT INTO pair VALUES (?)", [(i,) for i in range(500)])
    assert Path(f"{database}-wal").stat().st_size > 0
    copy = tmp_path / "copy.db"
    engine.copy_database(database, copy)
    writer.close()
    assert count(copy) == 500


def test_copy_is_private_in_rollback_mode_and_leaves_no_wal_beside_it(tmp_path: Path) -> None:
    database = tmp_path / "live.db"
    fill_database(database, 1)
    copy = tmp_path / "copy.db"
    engine.copy_database(database, copy)
    assert copy.stat().st_mode & 0o777 == 0o600
    assert engine.read_header(copy)[18:20] == b"\x01\x01"
    engine.check(copy, full=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy.db", "live.db"]


def test_copy_refuses_to_overwrite(tmp_path: Path) -> None:
    database = tmp_path / "live.db"
    fill_database(database, 1)
    existing = tmp_path / "copy.db"
    existing.write_bytes(b"keep me")
    with pytest.raises(FileExistsError):
        engine.copy_database(database, existing)
    assert existing.read_bytes() == b"keep me"


def test_copy_of_a_missing_database_never_creates_it(tmp_path: Path) -> None:
    with pytest.raises(engine.EngineError, match="does not exist"):
        engine.copy_database(tmp_path / "missing.db", tmp_path / "copy.db")
    assert list(tmp_path.iterdir()) == []


def test_copy_of_a_file_that_is_not_sqlite(tmp_path: Path) -> None:
    text = tmp_path / "notes.db"
    text.write_text("just some notes, long enough to have a header of a hundred bytes " * 3)
    with pytest.raises(engine.NotADatabase):
        engine.copy_database(text, tmp_path / "copy.db")


def test_copy_gives_up_on_a_locked_database(tmp_path: Path) -> None:
    database = tmp_path / "live.db"
    fill_database(database, 1, journal_mode="delete")
    holder = sqlite3.connect(database, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        started = time.monotonic()
        with pytest.raises(engine.EngineError, match="locked"):
            engine.copy_database(database, tmp_path / "copy.db", timeout=0.3)
        assert time.monotonic() - started < 10
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_copy_reports_progress_and_flushes_in_chunks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    database = tmp_path / "live.db"
    fill_database(database, 48)
    monkeypatch.setattr(engine, "FLUSH_CHUNK", 1024 * 1024)
    monkeypatch.setattr(engine, "POLL_INTERVAL", 0.001)
    flushed: list[Path] = []
    real_fdatasync = engine._fdatasync_path

    def fdatasync(path: Path) -> None:
        flushed.append(path)
        real_fdatasync(path)

    monkeypatch.setattr(engine, "_fdatasync_path", fdatasync)
    # Commits still in the source's -wal (no checkpoint yet) are synced alongside the copy.
    writer = sqlite3.connect(database, isolation_level=None)
    writer.execute("PRAGMA wal_autocheckpoint=0")
    writer.execute("PRAGMA synchronous=NORMAL")
    for _ in range(3):
        writer.execute("INSERT INTO blob (data) VALUES (randomblob(1048576))")
    seen: list[tuple[int, int]] = []
    try:
        engine.copy_database(
            database, tmp_path / "copy.db", progress=lambda d, t: seen.append((d, t))
        )
    finally:
        writer.close()
    assert seen
    assert all(done <= total for done, total in seen)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert set(flushed) == {tmp_path / "copy.db", tmp_path / "live.db-wal"}
    assert count(tmp_path / "copy.db", "blob") == 48 * 16 + 3


def test_a_file_that_shrinks_during_its_copy_is_copied_to_its_new_end(tmp_path: Path) -> None:
    # A checkpoint can truncate a database file in WAL mode while it is being copied.
    source, destination = tmp_path / "source", tmp_path / "destination"
    source.write_bytes(os.urandom(10_000))
    with open(source, "rb") as fsrc, open(destination, "wb") as fdst:
        assert not file_copy._send(fsrc.fileno(), fdst.fileno(), 25_000)
    assert destination.read_bytes() == source.read_bytes()


@pytest.mark.parametrize("mode", ["wal", "delete"])
def test_bytes_past_the_end_of_the_database_are_not_copied(tmp_path: Path, mode: str) -> None:
    database = tmp_path / "live.db"
    fill_database(database, 1, journal_mode=mode)
    size = database.stat().st_size
    with open(database, "ab") as f:
        f.write(os.urandom(3 * 4096))
    copy = tmp_path / "copy.db"
    engine.copy_database(database, copy)
    assert copy.stat().st_size == size
    engine.check(copy, full=True)
    assert count(copy, "blob") == 16


def flip_byte(path: Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))


def test_check_finds_damage(tmp_path: Path) -> None:
    database = tmp_path / "db.db"
    fill_database(database, 1, journal_mode="delete")
    engine.check(database, full=True)
    page_size = 4096
    # The b-tree page header of page 2 (the table's root): its page type byte.
    flip_byte(database, page_size)
    with pytest.raises(engine.CheckFailed):
        engine.check(database)


def test_check_of_a_truncated_file(tmp_path: Path) -> None:
    database = tmp_path / "db.db"
    fill_database(database, 1, journal_mode="delete")
    with open(database, "r+b") as f:
        f.truncate(os.path.getsize(database) // 2)
    with pytest.raises(engine.CheckFailed):
        engine.check(database, full=True)


@pytest.mark.parametrize("content", [b"", b"SQLite format 3\x00", b"\x00" * 4096])
def test_check_of_something_else(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "x.db"
    path.write_bytes(content)
    with pytest.raises(engine.NotADatabase):
        engine.check(path)


def test_check_of_a_directory(tmp_path: Path) -> None:
    with pytest.raises(engine.NotADatabase, match="directory"):
        engine.check(tmp_path)


def test_backup_of_a_directory(tmp_path: Path) -> None:
    (tmp_path / "studio.db").mkdir()
    with pytest.raises(engine.NotADatabase, match="directory"):
        engine.copy_database(tmp_path / "studio.db", tmp_path / "copy.db")
    assert not (tmp_path / "copy.db").exists()


def test_restore_replaces_data_seen_by_an_open_connection(tmp_path: Path) -> None:
    live = tmp_path / "live.db"
    other = tmp_path / "other.db"
    for path, rows in ((live, 5), (other, 2)):
        connection = sqlite3.connect(path, isolation_level=None)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("CREATE TABLE pair (n)")
        connection.executemany("INSERT INTO pair VALUES (?)", [(i,) for i in range(rows)])
        connection.close()
    backup = tmp_path / "backup.db"
    engine.copy_database(other, backup)
    reader = sqlite3.connect(live, isolation_level=None)
    reader.execute("PRAGMA wal_autocheckpoint=0")
    reader.execute("INSERT INTO pair VALUES (99)")
    assert reader.execute("SELECT count(*) FROM pair").fetchone()[0] == 6
    engine_restore.restore_into(backup, live)
    assert reader.execute("SELECT count(*) FROM pair").fetchone()[0] == 2
    reader.close()
    # Nothing stale came back from the WAL once every connection is gone.
    assert count(live) == 2
    assert engine.journal_mode(live) == "wal"


def test_restore_onto_a_missing_database_creates_it(tmp_path: Path) -> None:
    source = tmp_path / "source.db"
    fill_database(source, 1)
    backup = tmp_path / "backup.db"
    engine.copy_database(source, backup)
    live = tmp_path / "new" / "live.db"
    live.parent.mkdir()
    engine_restore.restore_into(backup, live)
    assert count(live, "blob") == count(source, "blob")


def test_restore_with_another_page_size_into_wal_is_refused(tmp_path: Path) -> None:
    live = tmp_path / "live.db"
    fill_database(live, 1)
    before = live.read_bytes()
    odd = tmp_path / "odd.db"
    connection = sqlite3.connect(odd, isolation_level=None)
    connection.execute("PRAGMA page_size=8192")
    connection.execute("CREATE TABLE t (x)")
    connection.close()
    with pytest.raises(engine.EngineError, match="page size"):
        engine_restore.restore_into(odd, live)
    assert live.read_bytes() == before


def test_restore_gives_up_when_the_live_database_stays_locked(tmp_path: Path) -> None:
    live = tmp_path / "live.db"
    fill_database(live, 1, journal_mode="delete")
    backup = tmp_path / "backup.db"
    engine.copy_database(live, backup)
    holder = sqlite3.connect(live, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("INSERT INTO blob (data) VALUES (x'00')")
    try:
        with pytest.raises(engine.EngineError, match="locked"):
            engine_restore.restore_into(backup, live, timeout=0.3)
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_sha256_matches_hashlib(tmp_path: Path) -> None:
    import hashlib

    path = tmp_path / "data"
    path.write_bytes(os.urandom(3 * engine.HASH_BLOCK + 17))
    assert engine.sha256_of(path) == hashlib.sha256(path.read_bytes()).hexdigest()


def test_restore_into_rollback_mode_reports_progress(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    live = tmp_path / "live.db"
    fill_database(live, 1, journal_mode="delete")
    source = tmp_path / "source.db"
    fill_database(source, 24, journal_mode="delete")
    backup = tmp_path / "backup.db"
    engine.copy_database(source, backup)
    monkeypatch.setattr(engine, "POLL_INTERVAL", 0.001)
    seen: list[int] = []
    engine_restore.restore_into(backup, live, progress=lambda done, total: seen.append(done))
    assert seen
    assert count(live, "blob") == count(source, "blob")
    assert engine.journal_mode(live) == "delete"
    assert not Path(f"{live}-journal").exists()


def test_the_watcher_counts_a_file_not_yet_created_as_empty(tmp_path: Path) -> None:
    seen: list[tuple[int, int]] = []
    watcher = engine.Watcher(
        [tmp_path / "not-yet.db-journal"], 100, lambda d, t: seen.append((d, t))
    )
    with watcher.running():
        deadline = time.monotonic() + 10
        while not seen and time.monotonic() < deadline:
            time.sleep(0.01)
    assert seen[0] == (0, 100)


class Refused(Exception):
    pass


@pytest.mark.parametrize("mode", ["wal", "delete"])
@pytest.mark.parametrize("megabytes", [1, 24])
def test_restore_commits_only_after_before_commit_returns(
    tmp_path: Path, mode: str, megabytes: int
) -> None:
    # 24 MB is more than a few steps of RESTORE_STEP_BYTES: before_commit comes late in
    # the copy, and 1 MB takes two steps.
    live, source, backup = tmp_path / "live.db", tmp_path / "source.db", tmp_path / "backup.db"
    fill_database(live, 2, journal_mode=mode)
    fill_database(source, megabytes)
    engine.copy_database(source, backup)
    live_bytes = live.read_bytes()
    written_by_then: list[int] = []

    def refuse() -> None:
        sidecar = Path(f"{live}-wal" if mode == "wal" else f"{live}-journal")
        written_by_then.append(sidecar.stat().st_size if sidecar.exists() else 0)
        raise Refused

    with pytest.raises(Refused):
        engine_restore.restore_into(backup, live, before_commit=refuse)
    assert len(written_by_then) == 1
    assert written_by_then[0] > 0 if megabytes > 1 else True
    # A -wal that held the refused pages is truncated again.
    wal = Path(f"{live}-wal")
    assert not wal.exists() or wal.stat().st_size == 0
    assert live.read_bytes() == live_bytes
    assert count(live, "blob") == 2 * 16
    called: list[bool] = []
    engine_restore.restore_into(backup, live, before_commit=lambda: called.append(True))
    assert called == [True]
    assert count(live, "blob") == megabytes * 16


def test_a_background_check_reports_how_the_file_fared(tmp_path: Path) -> None:
    good, damaged = tmp_path / "good.db", tmp_path / "damaged.db"
    fill_database(good, 1, journal_mode="delete")
    damaged.write_bytes(good.read_bytes())
    flip_byte(damaged, 4096)  # page 2's b-tree page type
    with engine.BackgroundCheck(good, full=True) as passing:
        passing.wait()
        assert passing.failure() is None
    with engine.BackgroundCheck(damaged, full=True) as failing:
        failing.wait()
        assert isinstance(failing.failure(), engine.CheckFailed)


def test_a_background_check_can_be_cancelled_while_it_runs(tmp_path: Path) -> None:
    # 600,000 indexed rows: integrity_check takes about half a second here, ten times as
    # long as the cancel takes to interrupt it once the statement runs.
    database = tmp_path / "big.db"
    connection = sqlite3.connect(database, isolation_level=None)
    connection.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    connection.execute("CREATE INDEX t_v ON t (v)")
    connection.execute(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 600000) "
        "INSERT INTO t (v) SELECT hex(randomblob(8)) FROM n"
    )
    connection.close()
    with engine.BackgroundCheck(database, full=True) as running:
        deadline = time.monotonic() + 30
        while running._connection is None:
            assert time.monotonic() < deadline, "the check never began"
            time.sleep(0.001)
        running.cancel()
        assert not running._thread.is_alive()
        assert "interrupted" in str(running.failure())
        # A check that could not finish says nothing of the file: it is no damage.
        assert not isinstance(running.failure(), engine.CheckFailed)


def test_a_background_check_cancelled_before_it_begins_never_runs(tmp_path: Path) -> None:
    database = tmp_path / "db.db"
    fill_database(database, 1)
    check = engine.BackgroundCheck(database, full=True)
    check.cancel()
    with check:
        check.wait()
    assert "not checked: cancelled" in str(check.failure())
    assert check._connection is None


def test_a_background_check_that_cannot_even_start_does_not_pass(tmp_path: Path) -> None:
    with engine.BackgroundCheck(tmp_path / "gone.db", full=True) as check:
        check.wait()
    assert isinstance(check.failure(), engine.CheckFailed)
    assert "could not be checked" in str(check.failure())


def test_a_backup_keeps_this_process_locks_on_the_live_database(tmp_path: Path) -> None:
    # Closing any descriptor on a file drops every POSIX lock the process holds on it,
    # SQLite's included: a backup must not take away the locks of the site's connections.
    database, copy = tmp_path / "live.db", tmp_path / "copy.db"
    fill_database(database, 2, journal_mode="delete")
    holder = sqlite3.connect(database, isolation_level=None)
    try:
        holder.execute("BEGIN")
        holder.execute("SELECT count(*) FROM blob").fetchone()
        engine.copy_database(database, copy)
        assert engine.read_live_header(database)[18] == 1
        other = subprocess.run(
            [sys.executable, "-c", EXCLUSIVE, str(database)], capture_output=True, text=True
        )
        assert other.returncode != 0
        assert "database is locked" in other.stderr
    finally:
        holder.close()
    assert count(copy, "blob") == 2 * 16


def test_descriptors_of_deleted_databases_are_let_go(tmp_path: Path) -> None:
    first, second = tmp_path / "first.db", tmp_path / "second.db"
    fill_database(first, 1)
    fill_database(second, 1)
    kept = engine.live_descriptor(first)
    assert engine.live_descriptor(first) == kept
    inode = (first.stat().st_dev, first.stat().st_ino)
    assert sqlite_file._live_descriptors[inode] == kept
    first.unlink()
    engine.live_descriptor(second)
    assert inode not in sqlite_file._live_descriptors


EXCLUSIVE = (
    "import sqlite3, sys; "
    "sqlite3.connect(sys.argv[1], timeout=0, isolation_level=None).execute('BEGIN EXCLUSIVE')"
)
WRITE_ANOTHER_GENERATION = {
    # The -wal restarts (it was wholly checkpointed) and is cut to nothing.
    "restart": "PRAGMA journal_size_limit=0; INSERT INTO t (x) VALUES (3);",
    "truncate": "PRAGMA wal_checkpoint(TRUNCATE);",
}


@pytest.mark.parametrize("what", sorted(WRITE_ANOTHER_GENERATION))
def test_a_wal_restarted_during_its_copy_is_not_replayed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, what: str
) -> None:
    # Commit A sets x=1 and commit B x=2 in every row; a checkpoint then moves both into
    # the file, so the backup's snapshot needs nothing from the -wal, and a writer may
    # restart it while it is copied. Replaying the old frames copied before that would
    # bring A's pages back over B's.
    database, copy = tmp_path / "live.db", tmp_path / "copy.db"
    keeper = sqlite3.connect(database, isolation_level=None)
    keeper.execute("PRAGMA journal_mode=WAL")
    keeper.execute("PRAGMA wal_autocheckpoint=0")
    keeper.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, x INTEGER, pad TEXT)")
    keeper.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    keeper.executemany("INSERT INTO t (x, pad) VALUES (1, ?)", [("a" * 1000,) for _ in range(200)])
    wal = Path(f"{database}-wal")
    first_commit_ends = wal.stat().st_size
    keeper.execute("UPDATE t SET x = 2")
    keeper.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
    wal_inode = wal.stat().st_ino
    # The first call copies the header and commit A; the writer strikes before the rest.
    monkeypatch.setattr(file_copy, "COPY_CHUNK", first_commit_ends)
    real_send = file_copy._send_chunk
    struck: list[bool] = []

    def send(in_fd: int, out_fd: int, offset: int, count: int) -> int:
        sent = real_send(in_fd, out_fd, offset, count)
        if os.fstat(in_fd).st_ino == wal_inode and not struck:
            struck.append(True)
            subprocess.run(
                [sys.executable, "-c", WRITE, str(database), WRITE_ANOTHER_GENERATION[what]],
                check=True,
            )
        return sent

    monkeypatch.setattr(file_copy, "_send_chunk", send)
    try:
        engine.copy_database(database, copy)
    finally:
        keeper.close()
    assert struck
    engine.check(copy, full=True)
    assert engine.read_rows(copy, "SELECT min(x), max(x), count(*) FROM t") == [(2, 2, 200)]


WRITE = (
    "import sqlite3, sys; "
    "sqlite3.connect(sys.argv[1], isolation_level=None).executescript(sys.argv[2])"
)


def one_page_database(path: Path) -> Path:
    connection = sqlite3.connect(path)
    connection.execute("PRAGMA user_version=1")
    connection.close()
    return path


def test_a_restore_needs_two_pages_to_take_a_safety_copy_under_its_lock(tmp_path: Path) -> None:
    live = tmp_path / "live.db"
    fill_database(live, 1)
    backup = one_page_database(tmp_path / "one.db")
    before = live.read_bytes()
    with pytest.raises(engine.EngineError, match="holds no data"):
        engine_restore.restore_into(backup, live, while_locked=lambda: None)
    assert live.read_bytes() == before
    called: list[bool] = []
    assert (
        engine_restore.restore_into(backup, live, before_commit=lambda: called.append(True)) is None
    )
    assert called == [True]


def test_a_check_after_a_restore_that_finds_the_file_unreadable(tmp_path: Path) -> None:
    live = tmp_path / "live.db"
    fill_database(live, 1, journal_mode="delete")
    connection = engine.connect(live)
    try:
        with open(live, "r+b") as f:
            f.write(b"not a database at all" * 5)
        with pytest.raises(engine.CheckFailed, match="failed quick_check after the restore"):
            engine_restore.check_restored(connection, live, 1.0)
    finally:
        connection.close()


def test_a_check_after_a_restore_that_finds_damage(tmp_path: Path) -> None:
    live = tmp_path / "live.db"
    connection = sqlite3.connect(live, isolation_level=None)
    connection.execute("PRAGMA journal_mode=DELETE")
    connection.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    connection.executemany("INSERT INTO t (v) VALUES (?)", [(f"row {i}",) for i in range(50)])
    connection.close()
    # The cell pointers of the table's page point past its end.
    with open(live, "r+b") as f:
        f.seek(4096 + 8)
        f.write(b"\xff" * 64)
    connection = engine.connect(live)
    try:
        with pytest.raises(engine.CheckFailed, match="failed quick_check after the restore: "):
            engine_restore.check_restored(connection, live, 1.0)
    finally:
        connection.close()


def test_progress_ends_at_the_whole_even_for_a_copy_faster_than_a_look(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "small.db"
    fill_database(source, 1)
    monkeypatch.setattr(engine, "POLL_INTERVAL", 60.0)
    reports: list[tuple[int, int]] = []
    engine.copy_database(source, tmp_path / "copy.db", progress=lambda d, e: reports.append((d, e)))
    assert len(reports) == 1
    assert reports[0][0] == reports[0][1] > 0


# Where sendfile() cannot copy files (macOS, some filesystems) ------------------------


@pytest.mark.parametrize("missing", ["absent", "refused"])
@pytest.mark.parametrize("mode", ["wal", "delete"])
def test_copy_without_sendfile_is_the_same_snapshot(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    missing: str,
    mode: str,
) -> None:
    calls = []
    if missing == "absent":
        monkeypatch.delattr(os, "sendfile", raising=False)
    else:

        def refuse(*args: object) -> int:  # as macOS does: it copies to sockets only
            calls.append(args)
            raise OSError(errno.ENOTSOCK, "Socket operation on non-socket")

        monkeypatch.setattr(os, "sendfile", refuse, raising=False)
    monkeypatch.setattr(file_copy, "_sendfile_refused", False)
    caplog.set_level(logging.INFO, "django_studio_backups")
    copies_are_moments_of_a_writer(tmp_path, mode, megabytes=3, copies=3)
    if missing == "refused":
        assert len(calls) == 1  # asked once, then not again
        assert "sendfile() cannot copy files here" in caplog.text


def test_a_sendfile_failure_that_is_not_a_refusal_fails_the_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object) -> int:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "sendfile", broken, raising=False)
    monkeypatch.setattr(file_copy, "_sendfile_refused", False)
    database = tmp_path / "live.db"
    fill_database(database, 1)
    with pytest.raises(engine.EngineError, match="Input/output error"):
        engine.copy_database(database, tmp_path / "copy.db", timeout=10)
