from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.core.exceptions import ImproperlyConfigured
from django.db import connections
from pytest_django.fixtures import Settings as SettingsWrapper

from django_studio_backups import archive, engine, locking, services, signals, state
from django_studio_backups.exceptions import BackupFailed, BackupNotFound, RestoreFailed
from tests.conftest import StudioDB, fill_database, mounted_tmpfs, undeletable

HERMOSILLO = ZoneInfo("America/Hermosillo")


def names(db: StudioDB) -> list[str]:
    return [b["name"] for b in services.list_backups()]


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith(archive.TEMP_PREFIX))


# Creating backups ----------------------------------------------------------------------


def test_backup_is_published_beside_the_database_with_a_manifest(studio_db: StudioDB) -> None:
    path = services.create_backup_now()
    assert path is not None
    assert path.parent == studio_db.backups
    assert archive.is_backup_name(path.name)
    assert studio_db.backups.stat().st_mode & 0o777 == 0o700
    assert path.stat().st_mode & 0o777 == 0o600
    assert studio_db.clients(path) == ["Ana", "Beto"]
    manifest_file = archive.manifest_path_for(path)
    assert manifest_file.stat().st_mode & 0o777 == 0o600
    manifest = json.loads(manifest_file.read_text())
    assert manifest["kind"] == "manual"
    assert manifest["size"] == path.stat().st_size
    assert manifest["sha256"] == engine.sha256_of(path)
    assert manifest["sqlite_version"] == sqlite3.sqlite_version
    assert manifest["source"] == {"alias": "studio", "path": str(studio_db.path)}
    assert ["studio", "0001_initial"] in manifest["migrations"]
    assert ["auth", "0001_initial"] in manifest["migrations"]
    assert datetime.fromisoformat(manifest["created_at"]).utcoffset() == timedelta(hours=-7)
    assert leftovers(studio_db.backups) == []


def test_list_backups_gives_the_seed_keys_newest_first(studio_db: StudioDB) -> None:
    with time_machine.travel(datetime(2026, 3, 4, 15, 30, 45, tzinfo=HERMOSILLO), tick=False):
        first = services.create_backup_now()
    second = services.create_backup_now()
    assert first is not None
    assert second is not None
    os.utime(first, (1_700_000_000, 1_700_000_000))
    listed = services.list_backups()
    assert [b["path"] for b in listed] == [second, first]
    oldest = listed[1]
    assert oldest["name"] == "backup_20260304_153045.db"
    assert oldest["size"] == first.stat().st_size
    assert oldest["display"] == "04/03/2026 15:30"
    assert oldest["created_at"] == datetime(2026, 3, 4, 15, 30, 45, tzinfo=HERMOSILLO)
    assert oldest["kind"] == "manual"
    # Checked with quick_check; only integrity_check, the check a restore runs, verifies.
    assert oldest["verified"] is False
    assert oldest["check"] == "quick_check"
    assert oldest["sha256"] == engine.sha256_of(first)


def test_backups_in_the_same_second_get_distinct_names(
    studio_db: StudioDB, settings: SettingsWrapper
) -> None:
    settings.STUDIO_BACKUPS = {**settings.STUDIO_BACKUPS, "MAX_BACKUPS": 3}
    with time_machine.travel(datetime(2026, 3, 4, 15, 30, 45, tzinfo=HERMOSILLO), tick=False):
        made = [services.create_backup_now() for _ in range(4)]
    assert [p.name for p in made if p] == [
        "backup_20260304_153045.db",
        "backup_20260304_153045_2.db",
        "backup_20260304_153045_3.db",
        "backup_20260304_153045_4.db",
    ]
    assert names(studio_db) == [
        "backup_20260304_153045_4.db",
        "backup_20260304_153045_3.db",
        "backup_20260304_153045_2.db",
    ]
    # With equal modification times too, the sequence number orders them.
    for path in studio_db.backups.glob("backup_*.db"):
        os.utime(path, (1_700_000_000, 1_700_000_000))
    assert names(studio_db) == [
        "backup_20260304_153045_4.db",
        "backup_20260304_153045_3.db",
        "backup_20260304_153045_2.db",
    ]


def test_retention_keeps_the_newest_and_nothing_else_is_touched(
    studio_db: StudioDB, settings: SettingsWrapper
) -> None:
    settings.STUDIO_BACKUPS = {**settings.STUDIO_BACKUPS, "MAX_BACKUPS": 2}
    studio_db.backups.mkdir(mode=0o700)
    strangers = [
        "notes.txt",
        "backup_latest.db",
        "backup_20200101_000000.db.bak",
        "Backup_20200101_000000.db",
        "backup_20200101_000000_0.db",
    ]
    for name in strangers:
        (studio_db.backups / name).write_text("not ours")
    made = []
    for day in range(1, 6):
        with time_machine.travel(datetime(2026, 3, day, 12, tzinfo=HERMOSILLO), tick=False):
            path = services.create_backup_now()
        assert path is not None
        os.utime(path, (1_700_000_000 + day, 1_700_000_000 + day))
        made.append(path)
    assert names(studio_db) == ["backup_20260305_120000.db", "backup_20260304_120000.db"]
    present = sorted(p.name for p in studio_db.backups.iterdir() if not p.name.startswith("."))
    assert present == sorted(
        [
            *strangers,
            "backup_20260305_120000.db",
            "backup_20260305_120000.db.json",
            "backup_20260304_120000.db",
            "backup_20260304_120000.db.json",
        ]
    )


def test_retention_never_deletes_the_backup_just_made(
    studio_db: StudioDB, settings: SettingsWrapper
) -> None:
    settings.STUDIO_BACKUPS = {**settings.STUDIO_BACKUPS, "MAX_BACKUPS": 1}
    first = services.create_backup_now()
    assert first is not None
    # An older file with a future modification time sorts first: it still goes.
    os.utime(first, (4_000_000_000, 4_000_000_000))
    second = services.create_backup_now()
    assert second is not None
    assert [b["path"] for b in services.list_backups()] == [second]


def test_retention_keeps_the_file_being_restored(
    studio_db: StudioDB, settings: SettingsWrapper
) -> None:
    settings.STUDIO_BACKUPS = {**settings.STUDIO_BACKUPS, "MAX_BACKUPS": 1}
    backup = services.create_backup_now()
    assert backup is not None
    studio_db.add_clients("Carla")
    report = services.restore(backup.name)
    assert report.safety_backup is not None
    assert {b["path"] for b in services.list_backups()} == {backup, report.safety_backup.path}
    assert studio_db.clients(report.safety_backup.path) == ["Ana", "Beto", "Carla"]


# The daily backup and the state file ---------------------------------------------------


def test_backup_if_needed_makes_one_a_day(studio_db: StudioDB) -> None:
    with time_machine.travel(datetime(2026, 3, 4, 9, tzinfo=HERMOSILLO), tick=False):
        first = services.create_backup_if_needed()
        assert first is not None
        assert services.create_backup_if_needed() is None
    assert services.list_backups()[0]["kind"] == "daily"
    saved = json.loads(studio_db.state_file.read_text())
    assert saved["last_backup_at"] == "2026-03-04T09:00:00-07:00"


@pytest.mark.parametrize(
    ("first", "second", "expected_new"),
    [
        # 23:30 and 00:10 in Hermosillo: a new local day, though UTC (06:30, 07:10) is not.
        (datetime(2026, 3, 4, 23, 30), datetime(2026, 3, 5, 0, 10), True),
        # 16:00 and 18:00 in Hermosillo: the same local day, though UTC rolled over at 17:00.
        (datetime(2026, 3, 4, 16, 0), datetime(2026, 3, 4, 18, 0), False),
    ],
)
def test_the_day_rolls_over_at_midnight_in_the_configured_zone(
    studio_db: StudioDB, first: datetime, second: datetime, expected_new: bool
) -> None:
    with time_machine.travel(first.replace(tzinfo=HERMOSILLO), tick=False):
        assert services.create_backup_if_needed() is not None
    with time_machine.travel(second.replace(tzinfo=HERMOSILLO), tick=False):
        made = services.create_backup_if_needed()
    assert (made is not None) is expected_new


def test_state_file_keeps_the_applications_keys(studio_db: StudioDB) -> None:
    own = {"studio_name": "Tinta Norte", "printer": {"port": 9100}, "tax": 0.16}
    studio_db.state_file.write_text(json.dumps(own))
    studio_db.state_file.chmod(0o640)
    with time_machine.travel(datetime(2026, 3, 4, 15, 30, 45, tzinfo=HERMOSILLO), tick=False):
        assert services.create_backup_now() is not None
    saved = json.loads(studio_db.state_file.read_text())
    assert saved == {**own, "last_backup_at": "2026-03-04T15:30:45-07:00"}
    assert studio_db.state_file.stat().st_mode & 0o777 == 0o640
    assert services.get_last_backup_display() == "04/03/2026 15:30"
    assert [p.name for p in studio_db.state_file.parent.iterdir() if p.name.startswith(".")] == []


def test_an_unreadable_state_file_is_never_thrown_away(
    studio_db: StudioDB, caplog: pytest.LogCaptureFixture
) -> None:
    studio_db.state_file.write_text('{"studio_name": "Tinta Norte", oops')
    before = studio_db.state_file.read_bytes()
    with time_machine.travel(datetime(2026, 3, 4, 9, tzinfo=HERMOSILLO), tick=False):
        assert services.create_backup_if_needed() is not None
        # The newest backup's time stands in for last_backup_at: no second daily backup.
        assert services.create_backup_if_needed() is None
    assert studio_db.state_file.read_bytes() == before
    assert "Not updating the state file" in caplog.text
    assert "using the time of the newest backup" in caplog.text


@pytest.mark.parametrize(
    "content",
    [
        "[1, 2]",
        '{"last_backup_at": "yesterday"}',
        '{"last_backup_at": "2026-03-04T09:00:00"}',
        b"\xff\xfe",
    ],
)
def test_unusable_state_falls_back_to_the_newest_backup(
    studio_db: StudioDB, content: str | bytes, caplog: pytest.LogCaptureFixture
) -> None:
    assert services.get_last_backup_display() == "—"
    with time_machine.travel(datetime(2026, 3, 4, 9, tzinfo=HERMOSILLO), tick=False):
        assert services.create_backup_now() is not None
    if isinstance(content, bytes):
        studio_db.state_file.write_bytes(content)
    else:
        studio_db.state_file.write_text(content)
    newest = services.list_backups()[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="django_studio_backups"):
        assert services.get_last_backup_display() == newest["display"]
    assert caplog.records


def test_missing_state_file_falls_back_to_the_newest_backup(
    studio_db: StudioDB, caplog: pytest.LogCaptureFixture
) -> None:
    assert services.create_backup_now() is not None
    studio_db.state_file.unlink()
    assert services.last_backup_at() == services.backups()[0].created_at
    assert "No usable last_backup_at" in caplog.text


def test_state_file_that_cannot_be_written(
    studio_db: StudioDB, settings: SettingsWrapper, tmp_path: Path
) -> None:
    with mounted_tmpfs(tmp_path / "ro", "ro,size=64k") as readonly:
        settings.STUDIO_BACKUPS = {
            **settings.STUDIO_BACKUPS,
            "STATE_FILE": str(readonly / "settings.json"),
        }
        # The backup itself is fine; only recording its time fails, and that is logged.
        assert services.create_backup_now() is not None
        assert not (readonly / "settings.json").exists()


def test_state_lock_timeout_is_reported(
    studio_db: StudioDB, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(state, "LOCK_TIMEOUT", 0.1)
    with locking.exclusive(studio_db.state_file.parent, 1):
        assert not state.update(studio_db.state_file, key="value")
    assert not studio_db.state_file.exists()


# Failures ------------------------------------------------------------------------------


def received(signal: Any) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = []

    def receiver(**kwargs: Any) -> None:
        calls.append(kwargs)

    signal.connect(receiver, weak=False)
    return calls


@pytest.fixture
def failures() -> Any:
    calls = received(signals.backup_failed)
    yield calls
    signals.backup_failed.receivers.clear()
    signals.backup_failed.sender_receivers_cache.clear()


def test_unwritable_backup_directory(
    studio_db: StudioDB, settings: SettingsWrapper, tmp_path: Path, failures: list[dict[str, Any]]
) -> None:
    with time_machine.travel(datetime(2026, 3, 3, 9, tzinfo=HERMOSILLO), tick=False):
        assert services.create_backup_now() is not None
    with mounted_tmpfs(tmp_path / "ro", "ro,size=64k") as readonly:
        settings.STUDIO_BACKUPS = {**settings.STUDIO_BACKUPS, "DIRECTORY": str(readonly)}
        with time_machine.travel(datetime(2026, 3, 4, 9, tzinfo=HERMOSILLO), tick=False):
            assert services.create_backup_now() is None
            assert services.create_backup_if_needed() is None
        saved = json.loads(studio_db.state_file.read_text())
        assert saved["last_backup_at"] == "2026-03-03T09:00:00-07:00"
        assert saved["last_backup_failed_at"] == "2026-03-04T09:00:00-07:00"
        assert "Read-only file system" in saved["last_backup_error"]
        failure = services.last_failure()
        assert failure is not None
        assert "Read-only" in failure.reason
    assert [call["kind"] for call in failures] == ["manual", "daily"]
    assert all("Read-only" in call["reason"] for call in failures)


def test_a_full_disk_leaves_nothing_behind(
    studio_db: StudioDB, settings: SettingsWrapper, tmp_path: Path
) -> None:
    fill_database(studio_db.path, 2)
    live_before = engine.sha256_of(studio_db.path)
    with mounted_tmpfs(tmp_path / "small", "size=512k") as small:
        settings.STUDIO_BACKUPS = {**settings.STUDIO_BACKUPS, "DIRECTORY": str(small)}
        assert services.create_backup_now() is None
        assert list(small.iterdir()) == [small / ".lock"]
        assert not studio_db.state_file.read_text().count("last_backup_at")
        failure = services.last_failure()
        assert failure is not None
        assert "full" in failure.reason
    assert engine.sha256_of(studio_db.path) == live_before


def test_a_second_backup_waits_for_the_lock_then_gives_up(
    studio_db: StudioDB, settings: SettingsWrapper
) -> None:
    settings.STUDIO_BACKUPS = {**settings.STUDIO_BACKUPS, "LOCK_TIMEOUT": 0.2}
    studio_db.backups.mkdir()
    with locking.exclusive(studio_db.backups / locking.LOCK_NAME, 1):
        with pytest.raises(BackupFailed, match="another backup or restore"):
            services.backup_now()
        assert not services.restore_backup("backup_20260304_153045.db")
    assert not locking.is_locked(studio_db.backups / locking.LOCK_NAME)
    assert services.create_backup_now() is not None


def test_leftovers_of_an_interrupted_run_are_removed(studio_db: StudioDB) -> None:
    studio_db.backups.mkdir()
    (studio_db.backups / ".tmp-123-abcd.db").write_bytes(b"half a copy")
    (studio_db.backups / ".tmp-123-abcd.db.json").write_text("{")
    assert services.create_backup_now() is not None
    assert leftovers(studio_db.backups) == []


def test_a_leftover_that_cannot_be_removed_is_reported(studio_db: StudioDB) -> None:
    studio_db.backups.mkdir()
    leftover = studio_db.backups / ".tmp-123-abcd.db"
    leftover.write_bytes(b"half a copy")
    with undeletable(leftover), pytest.raises(BackupFailed, match="Cannot use the backup folder"):
        services.backup_now()


def test_a_missing_database_fails_cleanly(studio_db: StudioDB) -> None:
    studio_db.path.unlink()
    Path(f"{studio_db.path}-wal").unlink(missing_ok=True)
    Path(f"{studio_db.path}-shm").unlink(missing_ok=True)
    assert services.create_backup_now() is None
    assert not studio_db.path.exists()
    assert services.list_backups() == []


def test_misconfiguration_is_an_error_at_use(settings: SettingsWrapper) -> None:
    settings.STUDIO_BACKUPS = {"DATABASE": "nope"}
    with pytest.raises(ImproperlyConfigured, match="'nope'"):
        services.create_backup_now()


# Restoring -----------------------------------------------------------------------------


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
    real_restore = engine.restore_into

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

    monkeypatch.setattr(engine, "restore_into", restore_then_damage)
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


# Verifying ----------------------------------------------------------------------------


def test_verify_finds_changed_and_damaged_backups(studio_db: StudioDB) -> None:
    good = services.backup_now()
    assert services.verify(good) == []
    assert not services.find_backup(good.name).verified
    assert services.verify(good, full=True) == []
    assert services.find_backup(good.name).verified
    # A quick re-check of a file whose SHA-256 still matches keeps its full verification.
    assert services.verify(good.name) == []
    assert services.find_backup(good.name).check == "integrity_check"
    grown = services.backup_now()
    with open(grown.path, "ab") as f:
        f.write(b"\x00" * 10)
    assert "manifest says" in services.verify(grown.name)[0]
    changed = services.backup_now()
    data = bytearray(changed.path.read_bytes())
    data[-100] ^= 0x01
    changed.path.write_bytes(bytes(data))
    assert "SHA-256" in services.verify(changed.name)[0]
    by_name = {b.name: b for b in services.backups()}
    assert by_name[good.name].verified
    assert not by_name[grown.name].verified
    assert not by_name[changed.name].verified
    assert by_name[changed.name].manifest["verification"]["problems"]


def test_verify_without_a_manifest_relies_on_sqlite(studio_db: StudioDB) -> None:
    backup = services.backup_now()
    backup.manifest_path.unlink()
    assert services.verify(backup.name, full=True) == []
    assert not backup.manifest_path.exists()
    backup.path.write_bytes(b"garbage" * 100)
    assert "not a SQLite database" in services.verify(backup.name)[0]


def test_verify_a_backup_that_disappeared(studio_db: StudioDB) -> None:
    backup = services.backup_now()
    backup.path.unlink()
    assert "Could not read" in services.verify(backup)[0]


# Other databases ----------------------------------------------------------------------


@pytest.mark.django_db
def test_another_alias_keeps_its_backups_beside_its_own_file(
    studio_db: StudioDB, settings: SettingsWrapper
) -> None:
    settings.STUDIO_BACKUPS = {**settings.STUDIO_BACKUPS, "DIRECTORY": str(studio_db.backups)}
    path = services.create_backup_now(using="default")
    assert path is not None
    default_folder = Path(connections["default"].settings_dict["NAME"]).parent
    assert path.parent == default_folder / "backups" / "default"
    assert (path.parent / "settings.json").exists()
    assert services.list_backups(using="default")[0]["path"] == path
    assert services.get_last_backup_display(using="default") != "—"
    assert names(studio_db) == []


def test_a_success_ends_the_warning_about_a_failure(studio_db: StudioDB) -> None:
    studio_db.state_file.write_text(
        json.dumps(
            {
                "theme": "dark",
                "last_backup_failed_at": "2026-03-04T09:00:00-07:00",
                "last_backup_error": "disk full",
            }
        )
    )
    failure = services.last_failure()
    assert failure == services.Failure(
        at=datetime(2026, 3, 4, 9, tzinfo=HERMOSILLO), reason="disk full"
    )
    # Written by something else: a success recorded after the failure.
    saved = json.loads(studio_db.state_file.read_text())
    studio_db.state_file.write_text(
        json.dumps({**saved, "last_backup_at": "2026-03-04T10:00:00-07:00"})
    )
    assert services.last_failure() is None
    assert services.create_backup_now() is not None
    assert json.loads(studio_db.state_file.read_text()).keys() == {"theme", "last_backup_at"}


def test_a_failed_final_check_with_nothing_to_put_back(
    studio_db: StudioDB, monkeypatch: pytest.MonkeyPatch
) -> None:
    backup = services.create_backup_now()
    assert backup is not None
    for suffix in ("", "-wal", "-shm"):
        Path(f"{studio_db.path}{suffix}").unlink(missing_ok=True)

    def restore_then_fail(source: Path, live: Path, **kwargs: Any) -> None:
        raise engine.CheckFailed("studio.db failed quick_check after the restore")

    monkeypatch.setattr(engine, "restore_into", restore_then_fail)
    with pytest.raises(RestoreFailed, match="quick_check"):
        services.restore(backup.name)
    # There was no database before, so there is no safety backup to put back.
    assert [b.name for b in services.backups()] == [backup.name]


def test_a_backup_of_a_database_without_django_migrations(studio_db: StudioDB) -> None:
    with contextlib.closing(studio_db.connect()) as connection:
        connection.execute("DROP TABLE django_migrations")
    backup = services.backup_now()
    assert backup.migrations == []
    with pytest.raises(RestoreFailed, match="not a Django one"):
        services.restore(backup.name)


def test_an_old_backup_that_cannot_be_deleted_is_reported(
    studio_db: StudioDB, settings: SettingsWrapper, caplog: pytest.LogCaptureFixture
) -> None:
    settings.STUDIO_BACKUPS = {**settings.STUDIO_BACKUPS, "MAX_BACKUPS": 1}
    old = services.backup_now()
    with undeletable(old.path):
        new = services.backup_now()
        assert [b.name for b in services.backups()] == [new.name, old.name]
    assert f"Could not delete the old backup: Could not delete {old.name}" in caplog.text


def test_a_path_through_a_symlink_loop_is_refused(studio_db: StudioDB) -> None:
    backup = services.backup_now()
    loop = studio_db.backups / "loop"
    loop.symlink_to(loop)
    with pytest.raises(BackupNotFound, match="not in the backup folder"):
        services.find_backup(str(loop / "x" / backup.name))


def test_a_failed_restore_costs_no_backup(studio_db: StudioDB, settings: SettingsWrapper) -> None:
    settings.STUDIO_BACKUPS = {**settings.STUDIO_BACKUPS, "MAX_BACKUPS": 2, "LOCK_TIMEOUT": 0.5}
    with contextlib.closing(studio_db.connect()) as connection:
        connection.execute("PRAGMA journal_mode=DELETE")
    connection.close()
    first = services.backup_now()
    second = services.backup_now()
    studio_db.add_clients("Carla")
    writer = studio_db.connect()
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("INSERT INTO studio_client (name) VALUES ('Dora')")
    try:
        # The safety backup can read past the writer; the restore cannot get the database.
        with pytest.raises(RestoreFailed, match="was not restored"):
            services.restore(first.name)
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    assert [b.name for b in services.backups()] == [second.name, first.name]
    assert studio_db.clients() == ["Ana", "Beto", "Carla"]


def test_no_restore_inside_a_transaction(studio_db: StudioDB, django_db_blocker: Any) -> None:
    from django.db import transaction

    backup = services.backup_now()
    studio_db.add_clients("Carla")
    with (
        django_db_blocker.unblock(),
        transaction.atomic(using="studio"),
        pytest.raises(RestoreFailed, match="inside a transaction"),
    ):
        services.restore(backup.name)
    assert studio_db.clients() == ["Ana", "Beto", "Carla"]
    assert [b.name for b in services.backups()] == [backup.name]


def test_restore_over_an_empty_database_file(studio_db: StudioDB) -> None:
    backup = services.backup_now()
    for suffix in ("-wal", "-shm"):
        Path(f"{studio_db.path}{suffix}").unlink(missing_ok=True)
    studio_db.path.write_bytes(b"")
    report = services.restore(backup.name)
    assert report.safety_backup is None
    assert studio_db.clients() == ["Ana", "Beto"]


def test_a_damaged_manifest_blocks_the_restore(studio_db: StudioDB) -> None:
    backup = services.backup_now()
    studio_db.add_clients("Carla")
    backup.manifest_path.write_text('{"kind": "manual", "sha256": ')
    with pytest.raises(RestoreFailed, match="manifest is damaged"):
        services.restore(backup.name)
    assert studio_db.clients() == ["Ana", "Beto", "Carla"]


def test_a_failing_receiver_changes_no_outcome(
    studio_db: StudioDB, caplog: pytest.LogCaptureFixture
) -> None:
    def mail_the_owner(sender: object, **kwargs: Any) -> None:
        raise ConnectionRefusedError("the mail server is down")

    signals.backup_created.connect(mail_the_owner, dispatch_uid="test_services.mail")
    try:
        path = services.create_backup_now()
    finally:
        signals.backup_created.disconnect(dispatch_uid="test_services.mail")
    assert path is not None
    assert "A receiver of a django_studio_backups signal failed" in caplog.text


def test_restore_onto_a_lost_database_in_a_read_only_folder(
    studio_db: StudioDB, settings: SettingsWrapper, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from django.conf import settings as django_settings

    settings.STUDIO_BACKUPS = {**settings.STUDIO_BACKUPS, "DIRECTORY": str(studio_db.backups)}
    backup = services.backup_now()
    with mounted_tmpfs(tmp_path / "ro", "ro,size=64k") as readonly:
        monkeypatch.setitem(django_settings.DATABASES["studio"], "NAME", readonly / "studio.db")
        with pytest.raises(RestoreFailed, match="was not restored"):
            services.restore(backup.name)
        assert list(readonly.iterdir()) == []
    assert [b.name for b in services.backups()] == [backup.name]


@pytest.mark.parametrize("journal_mode", ["wal", "delete"])
def test_a_backup_that_fails_integrity_check_alone_is_refused_without_a_trace(
    studio_db: StudioDB, journal_mode: str
) -> None:
    # Sound pages, so the quick checks pass, but an index that disagrees with its table:
    # only integrity_check, which runs alongside the safety backup (and in WAL mode the
    # copy into the live database), can refuse it, and it does so before the commit.
    with contextlib.closing(studio_db.connect()) as connection:
        connection.execute(f"PRAGMA journal_mode={journal_mode}")
    first = services.backup_now()
    damaged = studio_db.backups / "backup_20200101_000000.db"
    damaged.write_bytes(first.path.read_bytes())
    connection = sqlite3.connect(damaged)
    connection.execute("CREATE INDEX migration_name ON django_migrations (name)")
    connection.close()
    data = damaged.read_bytes()
    at = data.index(b"0001_initial")
    damaged.write_bytes(data[:at] + b"0001_INITIAL" + data[at + len(b"0001_INITIAL") :])
    engine.check(damaged)
    with pytest.raises(engine.CheckFailed):
        engine.check(damaged, full=True)
    studio_db.add_clients("Carla")
    saved = studio_db.state_file.read_text()
    live_before = studio_db.path.read_bytes()
    created: list[object] = []

    def count_created(sender: object, backup: object, **kwargs: object) -> None:
        created.append(backup)

    signals.backup_created.connect(count_created, dispatch_uid="test_services.count")
    try:
        with pytest.raises(RestoreFailed, match=r"cannot be restored: .* failed integrity_check"):
            services.restore(damaged.name)
    finally:
        signals.backup_created.disconnect(dispatch_uid="test_services.count")
    assert studio_db.path.read_bytes() == live_before
    assert studio_db.clients() == ["Ana", "Beto", "Carla"]
    assert sorted(names(studio_db)) == sorted([first.name, damaged.name])
    assert studio_db.state_file.read_text() == saved
    assert created == []


@pytest.mark.parametrize("journal_mode", ["wal", "delete"])
def test_in_rollback_journal_mode_the_check_ends_before_the_copy_begins(
    studio_db: StudioDB, journal_mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The copy's lock would keep the site's readers out while integrity_check finishes.
    # 600,000 indexed rows make the check last about ten times as long as the rest.
    with contextlib.closing(studio_db.connect()) as connection:
        connection.execute(f"PRAGMA journal_mode={journal_mode}")
        connection.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        connection.execute("CREATE INDEX t_v ON t (v)")
        connection.execute(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 600000) "
            "INSERT INTO t (v) SELECT hex(randomblob(8)) FROM n"
        )
    backup = services.backup_now()
    checks: list[engine.BackgroundCheck] = []
    check_still_running: list[bool] = []
    real_check, real_restore_into = engine.BackgroundCheck, engine.restore_into

    def background_check(path: Path, *, full: bool = False) -> engine.BackgroundCheck:
        checks.append(real_check(path, full=full))
        return checks[-1]

    def restore_into(backup_path: Path, live: Path, **kwargs: Any) -> None:
        check_still_running.append(checks[-1].failure() is None and not checks[-1]._passed)
        real_restore_into(backup_path, live, **kwargs)

    monkeypatch.setattr(engine, "BackgroundCheck", background_check)
    monkeypatch.setattr(engine, "restore_into", restore_into)
    studio_db.add_clients("Carla")
    services.restore(backup.name)
    assert studio_db.clients() == ["Ana", "Beto"]
    assert checks[-1]._passed
    if journal_mode == "delete":
        assert check_still_running == [False]
