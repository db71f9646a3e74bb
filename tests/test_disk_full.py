"""A full disk at every stage of a backup and of a restore, on a real size-limited tmpfs."""

from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from pytest_django.fixtures import Settings as SettingsWrapper

from django_studio_backups import archive, engine, services, state
from django_studio_backups.exceptions import RestoreFailed
from tests.conftest import StudioDB, fill_database, mounted_tmpfs

PAGE = 4096


def free_bytes(directory: Path) -> int:
    stat = os.statvfs(directory)
    return stat.f_bavail * stat.f_frsize


def leave_free(directory: Path, free: int) -> Path:
    """Fill ``directory``'s filesystem until exactly ``free`` bytes (a whole page count) remain."""
    filler = directory / "filler"
    filler.unlink(missing_ok=True)
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        os.posix_fallocate(fd, 0, free_bytes(directory) - free)
    finally:
        os.close(fd)
    assert free_bytes(directory) == free
    return filler


def last_backup_at(db: StudioDB) -> object:
    return state.read(db.state_file).get(state.LAST_BACKUP_AT)


def test_backups_with_the_disk_full_at_every_stage(
    studio_db: StudioDB, settings: SettingsWrapper, tmp_path: Path
) -> None:
    fill_database(studio_db.path, 2)
    live_before = engine.sha256_of(studio_db.path)
    with mounted_tmpfs(tmp_path / "small", "size=8m") as small:
        settings.STUDIO_BACKUPS = {**settings.STUDIO_BACKUPS, "DIRECTORY": str(small)}
        first = services.create_backup_now()
        assert first is not None
        size = first.stat().st_size
        published = {first.name, archive.manifest_path_for(first).name, ".lock"}
        # From nothing free, through "the copy fits, but not the -shm that taking it out of
        # WAL mode needs", to enough.
        levels = [0, PAGE, size // 2 // PAGE * PAGE, size - PAGE]
        levels += [size + pages * PAGE for pages in range(12)]
        outcomes = []
        for free in levels:
            filler = leave_free(small, free)
            recorded = last_backup_at(studio_db)
            path = services.create_backup_now()
            filler.unlink()
            outcomes.append(path is not None)
            if path is None:
                assert {p.name for p in small.iterdir()} == published, f"{free} bytes free"
                assert last_backup_at(studio_db) == recorded
                failure = services.last_failure()
                assert failure is not None
                assert "full" in failure.reason
            else:
                assert services.verify(path.name, full=True) == []
                services.delete_backup(path.name)
            assert services.verify(first.name) == []
        print("backup", list(zip(levels, outcomes, strict=True)))
        assert outcomes == sorted(outcomes), "more free space made a backup fail"
        assert outcomes[-1]
        assert not outcomes[levels.index(size)], "no backup failed after its copy fitted"
    assert engine.sha256_of(studio_db.path) == live_before


def content(path: Path) -> list[tuple[object, ...]]:
    connection = sqlite3.connect(path, timeout=5)
    try:
        assert connection.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        return connection.execute(
            "SELECT 'client', name FROM studio_client UNION ALL SELECT 'blob', count(*) FROM blob"
        ).fetchall()
    finally:
        connection.close()


@pytest.mark.parametrize("journal_mode", ["wal", "delete"])
def test_restores_with_the_disk_full_at_every_stage(
    studio_db: StudioDB,
    settings: SettingsWrapper,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    journal_mode: str,
) -> None:
    # A backup about ten times the size of the live database: restoring it grows the -wal
    # (or the database file and its journal) far beyond what the live database takes now.
    fill_database(studio_db.path, 2, journal_mode=journal_mode)
    backup = services.create_backup_now()
    assert backup is not None
    wanted = content(backup)
    connection = studio_db.connect()
    connection.execute("DELETE FROM blob")
    connection.execute("INSERT INTO studio_client (name) VALUES ('Carla')")
    connection.execute("VACUUM")
    connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    connection.close()
    settings.STUDIO_BACKUPS = {
        **settings.STUDIO_BACKUPS,
        "DIRECTORY": str(studio_db.backups),
        "STATE_FILE": str(studio_db.state_file),
    }
    with mounted_tmpfs(tmp_path / "small", "size=8m") as small:
        live = small / "studio.db"
        shutil.copyfile(studio_db.path, live)
        original = live.read_bytes()
        before = content(live)
        assert before != wanted
        monkeypatch.setitem(django_settings.DATABASES["studio"], "NAME", live)
        growth = backup.stat().st_size
        levels = [*range(0, 3 * growth, growth // 5 // PAGE * PAGE), 3 * growth]
        outcomes = []
        for free in levels:
            for leftover in small.iterdir():
                if leftover != live:
                    leftover.unlink()
            live.write_bytes(original)
            filler = leave_free(small, free)
            error = None
            try:
                services.restore(backup.name)
            except RestoreFailed as exc:
                error = str(exc)
            filler.unlink()
            if error is None:
                outcomes.append("restored")
                assert content(live) == wanted, f"{free} bytes free"
            else:
                outcomes.append("failed")
                assert "full" in error, error
                # The file itself, not only what SQLite shows through a journal or a -wal.
                assert live.read_bytes() == original, f"{free} bytes free"
                assert content(live) == before, f"{free} bytes free"
            for listed in services.backups():
                if listed.kind == "safety":
                    services.delete_backup(listed.name)
        print(journal_mode, list(zip(levels, outcomes, strict=True)))
        assert outcomes[0] == "failed"
        assert outcomes[-1] == "restored"
        assert outcomes == sorted(outcomes), "more free space made a restore fail"
    if journal_mode == "wal":
        # One level let the restore commit in the -wal but not move it into the file: that
        # is a restore done (asserted above), with a warning.
        assert "could not checkpoint its -wal yet" in caplog.text
