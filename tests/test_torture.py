"""Crash torture: SIGKILL a backup or a restore at many random points; nothing is ever lost.

SQLite proves its own crash recovery the same way. Each test reuses one database of about
50 MB and picks its kill points inside the measured duration of one run of the operation.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import sqlite3
import time
from pathlib import Path

from pytest_django.fixtures import Settings as SettingsWrapper

from django_studio_backups import archive, engine, locking, services
from tests.conftest import StudioDB
from tests.workload import CuedPool, running_writer

KILLS = int(os.environ.get("STUDIO_TEST_TORTURE_KILLS", "50"))
MEGABYTES = 50
MAX_BACKUPS = 2


def fill_tagged(path: Path, tag: str, megabytes: int) -> None:
    connection = sqlite3.connect(path, isolation_level=None, timeout=10)
    connection.execute("CREATE TABLE IF NOT EXISTS tagged (tag TEXT, data BLOB)")
    connection.execute("BEGIN IMMEDIATE")
    connection.execute("DELETE FROM tagged")
    for _ in range(megabytes * 16):
        connection.execute("INSERT INTO tagged VALUES (?, randomblob(65536))", (tag,))
    connection.execute("COMMIT")
    connection.close()


def live_integrity(path: Path) -> list[str]:
    # A normal read-write connection, as the application would open it: it recovers a hot
    # journal or WAL left by the killed process before it reads anything.
    connection = sqlite3.connect(path, isolation_level=None, timeout=10)
    try:
        return [row[0] for row in connection.execute("PRAGMA integrity_check")]
    finally:
        connection.close()


def content_digest(path: Path, *, live: bool = True) -> str:
    """A digest of every row the tests put in the database, in order."""
    connection = (
        sqlite3.connect(path, isolation_level=None, timeout=10)
        if live
        else engine.open_snapshot_file(path)
    )
    digest = hashlib.sha256()
    try:
        for query in (
            "SELECT rowid, tag, data FROM tagged ORDER BY rowid",
            "SELECT id, name FROM studio_client ORDER BY id",
        ):
            for row in connection.execute(query):
                for value in row:
                    digest.update(value if isinstance(value, bytes) else str(value).encode())
                    digest.update(b"\x00")
    finally:
        connection.close()
    return digest.hexdigest()


def folder_extras(directory: Path) -> list[str]:
    """Anything in the backup folder that is not a backup, its manifest, the lock or the
    .gitignore."""
    allowed = {locking.LOCK_NAME, archive.GITIGNORE}
    for backup in services.backups():
        allowed |= {backup.name, backup.manifest_path.name}
    return sorted(p.name for p in directory.iterdir() if p.name not in allowed)


def assert_every_backup_is_sound() -> None:
    for backup in services.backups():
        # Published with its manifest, and still matching it.
        assert backup.sha256 is not None, f"{backup.name} has no manifest"
        assert services.verify(backup) == [], backup.name
        # The writer commits rows in pairs: a consistent snapshot holds an even number.
        ((count,),) = engine.read_rows(backup.path, "SELECT count(*) FROM pair")
        assert isinstance(count, int)
        assert count % 2 == 0, f"{backup.name} holds half a transaction"


def test_sigkill_during_backups_with_a_writer(
    studio_db: StudioDB, settings: SettingsWrapper, tmp_path: Path
) -> None:
    settings.STUDIO_BACKUPS = {**settings.STUDIO_BACKUPS, "MAX_BACKUPS": MAX_BACKUPS}
    fill_tagged(studio_db.path, "A", MEGABYTES)
    assert studio_db.path.stat().st_size >= MEGABYTES * 1_000_000
    lock = studio_db.backups / locking.LOCK_NAME
    victims = CuedPool(studio_db, tmp_path, "create_backup_now", MAX_BACKUPS=MAX_BACKUPS)
    rng = random.Random(20260304)
    kills = leftovers_seen = attempts = 0
    with running_writer(studio_db.path, tmp_path), contextlib.closing(victims):
        call = victims.take()
        started = call.go()
        assert call.result().endswith(".db")
        duration = time.monotonic() - started
        while kills < KILLS:
            attempts += 1
            assert attempts < 4 * KILLS, f"only {kills} of {attempts} kill points hit a backup"
            delay = rng.uniform(0, duration)
            call = victims.take()
            started = call.go()
            time.sleep(max(0.0, started + delay - time.monotonic()))
            kills += call.kill()

            assert not locking.is_locked(lock), f"the lock is held after a kill at {delay:.3f} s"
            assert_every_backup_is_sound()
            leftovers_seen += bool(folder_extras(studio_db.backups))
            services.backup_now()
            assert folder_extras(studio_db.backups) == [], f"after a kill at {delay:.3f} s"
            assert len(services.backups()) <= MAX_BACKUPS
    print(f"backup: {kills} kills in {attempts} attempts, {leftovers_seen} left a temporary file")
    # Kills that left a temporary copy behind prove that the kill points fell inside the copy.
    assert leftovers_seen >= KILLS // 5, leftovers_seen
    assert len(services.backups()) == MAX_BACKUPS
    assert_every_backup_is_sound()


def test_sigkill_during_restores(studio_db: StudioDB, tmp_path: Path) -> None:
    fill_tagged(studio_db.path, "B", MEGABYTES - 2)
    studio_db.add_clients("Carla")
    backup_b = services.backup_now()
    fill_tagged(studio_db.path, "A", MEGABYTES)
    with contextlib.closing(studio_db.connect()) as connection:
        connection.execute("DELETE FROM studio_client WHERE name = 'Carla'")
    connection.close()
    backup_a = services.backup_now()
    assert studio_db.path.stat().st_size >= MEGABYTES * 1_000_000
    digests = {
        content_digest(backup_a.path, live=False): backup_a.name,
        content_digest(backup_b.path, live=False): backup_b.name,
    }
    assert len(digests) == 2
    assert digests[content_digest(studio_db.path)] == backup_a.name
    # An empty -wal to start from, so that its growth shows when a restore writes.
    with contextlib.closing(studio_db.connect()) as connection:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    connection.close()

    def other(name: str) -> str:
        return backup_b.name if name == backup_a.name else backup_a.name

    victims = CuedPool(studio_db, tmp_path, "restore_backup")
    with contextlib.closing(victims):
        # One whole restore in a process of its own, timed: when its copy into the live
        # database starts (the -wal file grows) and ends (the checkpoint empties the -wal).
        call = victims.take(backup_b.name)
        wal = Path(f"{studio_db.path}-wal")
        copy_started = copy_ended = None
        started = call.go()
        while call.process.poll() is None:
            size = wal.stat().st_size if wal.exists() else 0
            now = time.monotonic() - started
            if copy_started is None and size > 1_000_000:
                copy_started = now
            if copy_started is not None and copy_ended is None and size == 0:
                copy_ended = now
            time.sleep(0.002)
        assert call.result() == "True"
        assert copy_started is not None
        assert copy_ended is not None
        # Past the checkpoint a kill can only find the restored data; keep a little of that.
        duration = copy_ended + 0.2
        window = (max(0.0, copy_started - 0.05), duration)
        live = digests[content_digest(studio_db.path)]
        assert live == backup_b.name

        rng = random.Random(20260305)
        kills = attempts = 0
        outcomes = {"old": 0, "restored": 0}
        while kills < KILLS:
            attempts += 1
            assert attempts < 4 * KILLS, f"only {kills} of {attempts} kill points hit a restore"
            # Half the kill points anywhere in the run, half while the live file is written.
            delay = rng.uniform(0, duration) if attempts % 2 else rng.uniform(*window)
            target = other(live)
            call = victims.take(target)
            started = call.go()
            time.sleep(max(0.0, started + delay - time.monotonic()))
            kills += call.kill()

            assert live_integrity(studio_db.path) == ["ok"], f"after a kill at {delay:.3f} s"
            after = content_digest(studio_db.path)
            assert after in digests, f"old and restored data mixed after a kill at {delay:.3f} s"
            live = digests[after]
            outcomes["restored" if live == target else "old"] += 1
            # The only backups a restore makes are safety backups; they must be sound too.
            for backup in services.backups():
                if backup.kind == "safety":
                    assert services.verify(backup, full=True) == [], backup.name
                    services.delete_backup(backup.name)
    print(f"restore: {kills} kills in {attempts} attempts, outcomes {outcomes}, {window}")
    assert min(outcomes.values()) >= KILLS // 25, outcomes
    assert services.restore_backup(backup_b.name)
    assert digests[content_digest(studio_db.path)] == backup_b.name
    assert folder_extras(studio_db.backups) == []
