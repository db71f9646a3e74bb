"""Backups made on demand: where they go, their names and manifests, retention, and every way
a backup can fail."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import time_machine
from django.core.exceptions import ImproperlyConfigured
from django.db import connections
from pytest_django.fixtures import Settings as SettingsWrapper

from django_studio_backups import archive, engine, engine_restore, locking, services, signals
from django_studio_backups.exceptions import BackupFailed, BackupNotFound, RestoreFailed
from tests.backup_helpers import HERMOSILLO, leftovers, names
from tests.conftest import StudioDB, fill_database, mounted_tmpfs, undeletable


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
    # Newest first by the time each was made, whatever the files' times say.
    os.utime(second, (1_700_000_000, 1_700_000_000))
    os.utime(first, (1_800_000_000, 1_800_000_000))
    listed = services.list_backups()
    assert [b["path"] for b in listed] == [second, first]
    oldest = listed[1]
    assert oldest["name"] == "backup_20260304_153045.db"
    assert oldest["size"] == first.stat().st_size
    assert oldest["display"] == "04/03/2026 15:30"
    assert oldest["created_at"] == datetime(2026, 3, 4, 15, 30, 45, tzinfo=HERMOSILLO)
    assert oldest["kind"] == "manual"
    # Checked with quick_check, but changed since (its time did): unchecked again.
    assert oldest["verified"] is False
    assert oldest["check"] is None
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
    # Made while the clock was years ahead: it sorts first, and it still goes.
    with time_machine.travel(datetime(2030, 1, 1, tzinfo=HERMOSILLO), tick=False):
        first = services.create_backup_now()
    assert first is not None
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


# Failures ------------------------------------------------------------------------------
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
        with pytest.raises(BackupFailed, match="another backup, restore or off-site copy"):
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

    monkeypatch.setattr(engine_restore, "restore_into", restore_then_fail)
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
    real_check, real_restore_into = engine.BackgroundCheck, engine_restore.restore_into

    def background_check(path: Path, *, full: bool = False) -> engine.BackgroundCheck:
        checks.append(real_check(path, full=full))
        return checks[-1]

    def restore_into(backup_path: Path, live: Path, **kwargs: Any) -> None:
        check_still_running.append(checks[-1].failure() is None and not checks[-1]._passed)
        real_restore_into(backup_path, live, **kwargs)

    monkeypatch.setattr(engine, "BackgroundCheck", background_check)
    monkeypatch.setattr(engine_restore, "restore_into", restore_into)
    studio_db.add_clients("Carla")
    services.restore(backup.name)
    assert studio_db.clients() == ["Ana", "Beto"]
    assert checks[-1]._passed
    if journal_mode == "delete":
        assert check_still_running == [False]


def test_no_failure_no_guess_at_the_last_backup(
    studio_db: StudioDB, caplog: pytest.LogCaptureFixture
) -> None:
    services.backup_now()
    studio_db.state_file.unlink()
    with caplog.at_level(logging.WARNING, "django_studio_backups"):
        assert services.last_failure() is None
    assert caplog.records == []
