"""Restoring a backup onto the live database: what is refused, the safety backup, put-backs."""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from django.db import connections
from pytest_django.fixtures import Settings as SettingsWrapper

from django_studio_backups import archive, engine, engine_restore, services, signals
from django_studio_backups.exceptions import BackupNotFound, RestoreFailed
from tests.backup_helpers import names, received
from tests.conftest import StudioDB, fill_database, mounted_tmpfs


@pytest.fixture
def restored() -> Any:
    calls = received(signals.backup_restored)
    yield calls
    signals.backup_restored.receivers.clear()
    signals.backup_restored.sender_receivers_cache.clear()


def test_restore_brings_the_data_back_and_can_be_undone(
    studio_db: StudioDB, restored: list[dict[str, Any]]
) -> None:
    backup = services.create_backup_now()
    assert backup is not None
    studio_db.add_clients("Carla")
    assert services.restore_backup(backup)
    assert studio_db.clients() == ["Ana", "Beto"]
    safety = restored[0]["safety_backup"]
    assert restored[0]["backup"].path == backup
    assert safety.kind == "safety"
    assert safety.name in names(studio_db)
    assert services.restore_backup(safety.name)
    assert studio_db.clients() == ["Ana", "Beto", "Carla"]


def test_restore_is_seen_by_djangos_open_connection(
    studio_db: StudioDB, django_db_blocker: Any
) -> None:
    from tests.studio.models import Client

    backup = services.create_backup_now()
    assert backup is not None
    studio_db.add_clients("Carla")
    with django_db_blocker.unblock():
        assert Client.objects.using("studio").count() == 3
        assert connections["studio"].connection is not None
        assert services.restore_backup(backup)
        assert list(Client.objects.using("studio").values_list("name", flat=True)) == [
            "Ana",
            "Beto",
        ]


def test_restore_onto_a_lost_database(studio_db: StudioDB) -> None:
    backup = services.create_backup_now()
    assert backup is not None
    for suffix in ("", "-wal", "-shm"):
        Path(f"{studio_db.path}{suffix}").unlink(missing_ok=True)
    report = services.restore(backup.name)
    assert report.safety_backup is None
    assert studio_db.clients() == ["Ana", "Beto"]


def corrupt_copy(backup: Path, how: str) -> bytes:
    data = bytearray(backup.read_bytes())
    if how == "truncated":
        return bytes(data[: len(data) // 2])
    if how == "flipped":
        data[4096] ^= 0xFF
        return bytes(data)
    if how == "text":
        return b"name,phone\nAna,662 000 0000\n" * 10
    if how == "random":
        return os.urandom(8192)
    raise AssertionError(how)


@pytest.mark.parametrize("keep_manifest", [True, False])
@pytest.mark.parametrize("how", ["truncated", "flipped", "text", "random"])
def test_restore_refuses_damaged_files_and_changes_nothing(
    studio_db: StudioDB, how: str, keep_manifest: bool
) -> None:
    backup = services.create_backup_now()
    assert backup is not None
    studio_db.add_clients("Carla")
    backup.write_bytes(corrupt_copy(backup, how))
    if not keep_manifest:
        archive.manifest_path_for(backup).unlink()
    live_before = studio_db.path.read_bytes()
    listed_before = names(studio_db)
    with pytest.raises(RestoreFailed, match="cannot be restored"):
        services.restore(backup.name)
    assert studio_db.path.read_bytes() == live_before
    assert studio_db.clients() == ["Ana", "Beto", "Carla"]
    assert names(studio_db) == listed_before


def test_restore_refuses_a_sqlite_file_of_another_application(studio_db: StudioDB) -> None:
    studio_db.backups.mkdir()
    foreign = studio_db.backups / "backup_20260304_153045.db"
    connection = sqlite3.connect(foreign)
    connection.execute("CREATE TABLE songs (title TEXT)")
    connection.commit()
    connection.close()
    with pytest.raises(RestoreFailed, match="not a Django one"):
        services.restore(foreign)
    assert studio_db.clients() == ["Ana", "Beto"]


@pytest.mark.parametrize(
    "name",
    [
        "../studio.db",
        "/etc/passwd",
        "backups/../studio.db",
        "backup_20260304_153045.db\x00.txt",
        "",
        "backup_missing.db",
        "backup_20990101_000000.db",
    ],
)
def test_restore_accepts_only_listed_backups(studio_db: StudioDB, name: str) -> None:
    assert services.create_backup_now() is not None
    with pytest.raises(BackupNotFound):
        services.find_backup(name)
    assert not services.restore_backup(name)


def test_restore_refuses_a_symlink_out_of_the_folder(studio_db: StudioDB, tmp_path: Path) -> None:
    backup = services.create_backup_now()
    assert backup is not None
    outside = tmp_path / "elsewhere.db"
    outside.write_bytes(backup.read_bytes())
    link = studio_db.backups / "backup_20200101_000000.db"
    link.symlink_to(outside)
    assert not services.restore_backup(link.name)
    assert not services.restore_backup(str(link))
    assert link.name not in names(studio_db)


def test_restore_by_path_inside_the_folder(studio_db: StudioDB) -> None:
    backup = services.create_backup_now()
    assert backup is not None
    studio_db.add_clients("Carla")
    assert services.restore_backup(str(studio_db.backups / ".." / "backups" / backup.name))
    assert studio_db.clients() == ["Ana", "Beto"]


def test_no_restore_without_a_safety_backup(
    studio_db: StudioDB, settings: SettingsWrapper, tmp_path: Path
) -> None:
    backup = services.create_backup_now()
    assert backup is not None
    studio_db.add_clients("Carla")
    fill_database(studio_db.path, 2)
    with mounted_tmpfs(tmp_path / "small", "size=1m") as small:
        (small / backup.name).write_bytes(backup.read_bytes())
        (small / (backup.name + ".json")).write_bytes(
            archive.manifest_path_for(backup).read_bytes()
        )
        settings.STUDIO_BACKUPS = {**settings.STUDIO_BACKUPS, "DIRECTORY": str(small)}
        with pytest.raises(RestoreFailed, match="safety backup"):
            services.restore(backup.name)
    assert studio_db.clients() == ["Ana", "Beto", "Carla"]


def test_a_restore_that_fails_its_final_check_is_put_back(
    studio_db: StudioDB, monkeypatch: pytest.MonkeyPatch
) -> None:
    backup = services.create_backup_now()
    assert backup is not None
    studio_db.add_clients("Carla")
    real_restore = engine_restore.restore_into

    def restore_then_damage(source: Path, live: Path, **kwargs: Any) -> None:
        real_restore(source, live, **kwargs)
        if source == backup:
            # What a bad disk would do: the restored file comes back damaged.
            with sqlite3.connect(live) as connection:
                connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            connection.close()
            with open(live, "r+b") as f:
                f.seek(4096)
                f.write(b"\xff" * 16)
            raise engine.CheckFailed("studio.db failed quick_check after the restore")

    monkeypatch.setattr(engine_restore, "restore_into", restore_then_damage)
    with pytest.raises(RestoreFailed, match="quick_check"):
        services.restore(backup.name)
    engine.check(studio_db.path, full=True)
    assert studio_db.clients() == ["Ana", "Beto", "Carla"]


def test_restore_page_size_mismatch_is_refused(studio_db: StudioDB) -> None:
    studio_db.backups.mkdir()
    odd = studio_db.backups / "backup_20260304_153045.db"
    connection = sqlite3.connect(odd)
    connection.execute("PRAGMA page_size=16384")
    connection.execute("CREATE TABLE django_migrations (id INTEGER PRIMARY KEY, app, name)")
    connection.commit()
    connection.close()
    before = studio_db.clients()
    with pytest.raises(RestoreFailed, match="page size"):
        services.restore(odd.name)
    assert studio_db.clients() == before
    # Refused before the safety backup: nothing new in the folder.
    assert [b.name for b in services.backups()] == [odd.name]


def test_migration_difference(studio_db: StudioDB) -> None:
    with contextlib.closing(studio_db.connect()) as connection:
        connection.execute("DELETE FROM django_migrations WHERE app = 'studio'")
        connection.execute(
            "INSERT INTO django_migrations (app, name, applied) "
            "VALUES ('studio', '0099_future', '2026-01-01')"
        )
    backup = services.backup_now()
    missing, unknown = services.migration_difference(backup)
    assert missing == [("studio", "0001_initial")]
    assert unknown == [("studio", "0099_future")]
    report = services.restore(backup.name)
    assert report.missing_migrations == missing
    assert report.unknown_migrations == unknown
    assert backup.migrations is not None
    assert ("studio", "0099_future") in backup.migrations


def test_a_restore_of_a_backup_that_is_not_there_is_logged(
    studio_db: StudioDB, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, "django_studio_backups"), pytest.raises(BackupNotFound):
        services.restore("backup_20990101_000000.db")
    assert "There is no backup called 'backup_20990101_000000.db'" in caplog.text
