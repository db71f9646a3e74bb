"""SIGKILL in the middle of a backup or a restore loses nothing."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from django_studio_backups import archive, engine, locking, services
from tests.conftest import REPO, StudioDB, command_env

KILLS = int(os.environ.get("STUDIO_TEST_KILLS", "6"))


def start_service(
    db: StudioDB, function: str, argument: str | None = None
) -> subprocess.Popen[bytes]:
    args = [sys.executable, "-m", "tests.processes", "service", function]
    if argument is not None:
        args.append(argument)
    return subprocess.Popen(args, cwd=REPO, env=command_env(db), stdout=subprocess.DEVNULL)


def timed(db: StudioDB, function: str, argument: str | None = None) -> float:
    started = time.monotonic()
    process = start_service(db, function, argument)
    assert process.wait(timeout=120) == 0
    return time.monotonic() - started


def fill_tagged(path: Path, tag: str, megabytes: int) -> None:
    connection = sqlite3.connect(path, isolation_level=None, timeout=10)
    connection.execute("CREATE TABLE IF NOT EXISTS tagged (tag TEXT, data BLOB)")
    connection.execute("BEGIN IMMEDIATE")
    connection.execute("DELETE FROM tagged")
    for _ in range(megabytes * 16):
        connection.execute("INSERT INTO tagged VALUES (?, randomblob(65536))", (tag,))
    connection.execute("COMMIT")
    connection.close()


def tags(path: Path) -> tuple[int, str]:
    connection = sqlite3.connect(path, timeout=10)
    try:
        count, tag = connection.execute(
            "SELECT count(*), group_concat(DISTINCT tag) FROM tagged"
        ).fetchone()
    finally:
        connection.close()
    return int(count), str(tag)


def test_kill_during_backup(studio_db: StudioDB) -> None:
    fill_tagged(studio_db.path, "A", 40)
    duration = timed(studio_db, "create_backup_now")
    rng = random.Random(2026)
    for _ in range(KILLS):
        process = start_service(studio_db, "create_backup_now")
        time.sleep(rng.uniform(0.05, duration))
        process.send_signal(signal.SIGKILL)
        process.wait()
        for backup in services.backups():
            engine.check(backup.path)
            assert services.verify(backup) == []
        assert not locking.is_locked(studio_db.backups / locking.LOCK_NAME)
    path = services.create_backup_now()
    assert path is not None
    assert [p for p in studio_db.backups.iterdir() if p.name.startswith(archive.TEMP_PREFIX)] == []
    assert tags(path) == (640, "A")


def test_kill_during_restore(studio_db: StudioDB) -> None:
    fill_tagged(studio_db.path, "B", 24)
    backup = services.create_backup_now()
    assert backup is not None
    fill_tagged(studio_db.path, "A", 40)
    duration = timed(studio_db, "restore_backup", backup.name)
    assert tags(studio_db.path) == (384, "B")
    fill_tagged(studio_db.path, "A", 40)
    rng = random.Random(2027)
    for _ in range(KILLS):
        process = start_service(studio_db, "restore_backup", backup.name)
        time.sleep(rng.uniform(0.05, duration))
        process.send_signal(signal.SIGKILL)
        process.wait()
        # Not engine.check: it opens files as immutable and ignores the -wal, which after a
        # kill during the final checkpoint still holds committed pages of the restore.
        connection = sqlite3.connect(studio_db.path)
        assert connection.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        connection.close()
        state = tags(studio_db.path)
        assert state in {(640, "A"), (384, "B")}
        if state == (384, "B"):
            fill_tagged(studio_db.path, "A", 40)
    assert services.restore_backup(backup.name)
    assert tags(studio_db.path) == (384, "B")
