"""Retention keeps what people rely on: each backup's own time, kinds with their own limits,
calendar retention, damaged and foreign files that push nothing out (issue 15's scenarios)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import time_machine
from django.core import mail
from pytest_django.fixtures import Settings as SettingsWrapper

from django_studio_backups import background, services

from .backup_helpers import HERMOSILLO
from .conftest import StudioDB, undeletable


@contextmanager
def on(day: date, hour: int = 3, minute: int = 0) -> Iterator[None]:
    with time_machine.travel(
        datetime(day.year, day.month, day.day, hour, minute, tzinfo=HERMOSILLO), tick=False
    ):
        yield


def limits(settings: SettingsWrapper, **values: object) -> None:
    settings.STUDIO_BACKUPS = {**settings.STUDIO_BACKUPS, **values}


def names() -> list[str]:
    return [b.name for b in services.backups()]


def test_a_backups_own_time_orders_it_and_junk_pushes_nothing_out(
    studio_db: StudioDB, settings: SettingsWrapper, tmp_path: Path
) -> None:
    limits(settings, MAX_BACKUPS=5)
    day = date(2026, 12, 1)
    with on(day, 3):
        real = services.backup_if_needed()
    assert real is not None
    # Copies put back from a USB drive (no manifests; their files are new), a 17-byte file,
    # and a backup damaged on the disk.
    drive = tmp_path / "drive"
    drive.mkdir()
    with on(day - timedelta(days=20), 3):
        old = services.backup_now()
    shutil.copy(old.path, drive / "backup_20261110_030000.db")
    old.path.unlink()
    old.manifest_path.unlink()
    shutil.copy(drive / "backup_20261110_030000.db", studio_db.backups)
    shutil.copy(
        drive / "backup_20261110_030000.db", studio_db.backups / "backup_20261111_030000.db"
    )
    (studio_db.backups / "backup_20261130_120000.db").write_bytes(b"seventeen bytes!!")
    with on(day - timedelta(days=1), 20):
        rotten = services.backup_now()
    with rotten.path.open("r+b") as f:
        f.seek(4096)
        f.write(b"\xff" * 64)

    # Newest first by each backup's own time, whatever the files' times say.
    assert names() == [
        real.name,
        rotten.name,
        "backup_20261130_120000.db",
        "backup_20261111_030000.db",
        "backup_20261110_030000.db",
    ]
    # Six backups by hand later that day.
    made = []
    for minute in range(6):
        with on(day, 10, minute):
            made.append(services.backup_now().name)
    # The daily backup, the newest that passed the full check, stays and counts among the 5;
    # the four newest by hand with it. The junk, the rotten one and the copies without
    # manifests stay for someone to look at, and counted for nothing.
    assert set(names()) == {
        real.name,
        *made[2:],
        rotten.name,
        "backup_20261130_120000.db",
        "backup_20261111_030000.db",
        "backup_20261110_030000.db",
    }


def test_safety_and_pre_migrate_backups_have_limits_of_their_own(
    studio_db: StudioDB, settings: SettingsWrapper
) -> None:
    limits(settings, MAX_BACKUPS=5)
    dailies = []
    for n in range(5):
        with on(date(2026, 3, 1) + timedelta(days=n)):
            backup = services.backup_if_needed()
            assert backup is not None
            dailies.append(backup.name)
    # Four trial restores and four migrations: each makes a backup of its own kind.
    safety, pre_migrate = [], []
    for n in range(4):
        with on(date(2026, 3, 5), 12, n):
            report = services.restore(dailies[n])
            assert report.safety_backup is not None
            safety.append(report.safety_backup.name)
            pre_migrate.append(services.backup_now(kind="pre-migrate").name)
    kept = set(names())
    # Every daily backup is still there, the ones just restored too.
    assert set(dailies) <= kept
    # The newest three of each other kind (the default limits).
    assert kept == {*dailies, *safety[1:], *pre_migrate[1:]}


def test_calendar_retention_keeps_days_weeks_and_months(
    studio_db: StudioDB, settings: SettingsWrapper
) -> None:
    limits(settings, MAX_BACKUPS=3, KEEP={"DAILY": 7, "WEEKLY": 4, "MONTHLY": 12})
    first = date(2026, 1, 1)
    for n in range(90):  # every day from 1 January to 31 March 2026
        with on(first + timedelta(days=n)):
            assert services.backup_if_needed() is not None
    kept = sorted(b.created_at.date().isoformat() for b in services.backups())
    assert kept == [
        "2026-01-31",  # the newest of January
        "2026-02-28",  # of February
        "2026-03-15",  # the newest of ISO week 11 (a Sunday)
        "2026-03-22",  # of week 12
        # the last seven days; 29 March also ends week 13, 31 March is in week 14 and
        # is the newest of March
        "2026-03-25",
        "2026-03-26",
        "2026-03-27",
        "2026-03-28",
        "2026-03-29",
        "2026-03-30",
        "2026-03-31",
    ]


def test_without_keep_max_backups_keeps_its_meaning(
    studio_db: StudioDB, settings: SettingsWrapper
) -> None:
    limits(settings, MAX_BACKUPS=4)
    for n in range(10):
        with on(date(2026, 1, 1) + timedelta(days=n)):
            services.backup_if_needed()
    assert [b.created_at.day for b in services.backups()] == [10, 9, 8, 7]


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("KEEP", {"HOURLY": 3}),
        ("KEEP", {"DAILY": -1}),
        ("KEEP", 7),
        ("MAX_SAFETY_BACKUPS", 0),
        ("MAX_PRE_MIGRATE_BACKUPS", "3"),
    ],
)
def test_retention_settings_are_checked(
    studio_db: StudioDB, settings: SettingsWrapper, key: str, value: object
) -> None:
    from django_studio_backups.checks import check_settings

    limits(settings, **{key: value})
    ids = [m.id for m in check_settings()]
    assert ids == ["studio_backups.E010" if key == "KEEP" else "studio_backups.E011"]


def test_off_site_retention_has_the_same_rules_and_its_own_numbers(
    studio_db: StudioDB, settings: SettingsWrapper, tmp_path: Path
) -> None:
    from .offsite_helpers import folder_storage, use_offsite

    use_offsite(
        settings, "drive", folder_storage(tmp_path / "drive"), MAX_BACKUPS=2, KEEP={"MONTHLY": 3}
    )
    limits(settings, MAX_BACKUPS=40)
    for n in range(90):
        with on(date(2026, 1, 1) + timedelta(days=n)):
            assert services.backup_if_needed() is not None
    # A trial restore's safety backup, copied off-site too, pushes no daily copy out.
    with on(date(2026, 3, 31), 12):
        assert services.restore(services.backups()[0].name).safety_backup is not None
    copies = {(c.kind, c.created_at.date().isoformat()) for c in services.offsite_copies()}
    assert copies == {
        ("daily", "2026-01-31"),
        ("daily", "2026-02-28"),
        ("daily", "2026-03-30"),
        ("daily", "2026-03-31"),
        ("safety", "2026-03-31"),
    }
    assert len(services.backups()) == 41


def test_the_daily_job_checks_the_oldest_checks_again(
    studio_db: StudioDB, settings: SettingsWrapper
) -> None:
    settings.ADMINS = [("Studio owner", "owner@studio.test")]
    days = [date(2026, 3, 1) + timedelta(days=n) for n in range(4)]
    made = []
    for day in days[:3]:
        with on(day):
            made.append(services.backup_if_needed())
    # The oldest rots on the disk, in place (its file time kept): only a check finds it.
    rotten = made[0]
    assert rotten is not None
    stat = rotten.path.stat()
    with rotten.path.open("r+b") as f:
        f.seek(4096)
        f.write(b"\xff" * 64)
    os.utime(rotten.path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert services.find_backup(rotten.name).verified  # as far as anyone can tell
    with on(days[3]):
        assert services.backup_if_needed(daily_job=True) is not None
    assert background.wait(30)
    found = services.find_backup(rotten.name)
    assert found.failed_check
    [message] = mail.outbox
    assert f"{rotten.name} was found damaged when checked again" in message.body


def test_the_loss_summary_compares_each_model(studio_db: StudioDB) -> None:
    backup = services.backup_now()
    with contextlib.closing(studio_db.connect()) as connection:
        connection.execute("DELETE FROM auth_permission WHERE id <= 4")
        connection.commit()
    studio_db.add_clients("Carla", "Dani")
    changes = {
        str(c.model._meta.verbose_name_plural): (c.now, c.in_backup)
        for c in services.row_changes(backup)
    }
    now, in_backup = changes.pop("permissions")
    assert now is not None
    assert in_backup == now + 4  # come back
    assert changes == {"clients": (4, 2)}  # lost


# What a review of the first version found ------------------------------------------------


def test_another_projects_database_is_not_adopted(
    studio_db: StudioDB, settings: SettingsWrapper
) -> None:
    limits(settings, MAX_BACKUPS=2)
    dailies = []
    for n in range(2):
        with on(date(2026, 3, 1) + timedelta(days=n)):
            dailies.append(services.backup_if_needed())
    shop = studio_db.backups / "backup_20260310_030000.db"
    with contextlib.closing(sqlite3.connect(shop)) as connection:
        connection.execute(
            "CREATE TABLE django_migrations (id INTEGER PRIMARY KEY, app TEXT, name TEXT, "
            "applied TEXT)"
        )
        connection.execute(
            "INSERT INTO django_migrations (app, name, applied) VALUES ('shop', '0001_initial', '')"
        )
        connection.commit()
    problems = services.verify(shop.name)
    assert "the database of another project" in problems[0]
    assert services.find_backup(shop.name).failed_check
    with on(date(2026, 3, 11)):
        manual = services.backup_now()
    # Neither counted nor the newest verified: the real backups stay as retention keeps
    # them (the newest verified daily, and the one by hand).
    assert dailies[1] is not None
    assert set(names()) == {shop.name, manual.name, dailies[1].name}


def test_a_file_dated_in_the_future_does_not_make_a_backup_at_every_run(
    studio_db: StudioDB,
) -> None:
    studio_db.backups.mkdir()
    (studio_db.backups / "backup_20991231_000000.db").write_bytes(b"seventeen bytes!!")
    with on(date(2026, 3, 1)):
        made = [services.backup_if_needed() for _ in range(3)]
    assert made[0] is not None
    assert made[1:] == [None, None]


def test_a_restore_into_an_empty_database_deletes_nothing(
    studio_db: StudioDB, settings: SettingsWrapper
) -> None:
    for n in range(4):
        with on(date(2026, 3, 1) + timedelta(days=n)):
            services.backup_if_needed()
    limits(settings, MAX_BACKUPS=2)  # lowered since
    before = names()
    studio_db.path.write_bytes(b"")  # the disk was replaced: an empty file
    report = services.restore(before[-1])
    assert report.safety_backup is None
    assert names() == before


def test_copies_of_a_damaged_database_do_not_pile_up(studio_db: StudioDB) -> None:
    made = []
    for n in range(6):
        with on(date(2026, 3, 1) + timedelta(days=n)):
            backup = services.backup_now()
        services.verify(backup.name)  # fine
        manifest = json.loads(backup.manifest_path.read_text())
        manifest["verification"] = {"ok": False, "problems": ["damaged"], "at": "x"}
        backup.manifest_path.write_text(json.dumps(manifest))
        made.append(backup.name)
    with on(date(2026, 3, 7)):
        good = services.backup_now()
    assert names() == [good.name, *made[::-1][:3]]


def test_row_counts_stop_in_time_on_a_large_database(
    studio_db: StudioDB, monkeypatch: pytest.MonkeyPatch
) -> None:
    from django_studio_backups import restoring

    backup = services.backup_now()
    studio_db.add_clients("Carla")
    monkeypatch.setattr(restoring, "COUNT_WITHIN", -1.0)  # no time at all
    changes = services.row_changes(backup)
    assert changes
    assert all(c.now is None or c.in_backup is None for c in changes)


def test_a_backup_changed_in_place_from_before_mtimes_were_recorded_is_not_verified(
    studio_db: StudioDB,
) -> None:
    backup = services.backup_if_needed()
    assert backup is not None
    manifest = json.loads(backup.manifest_path.read_text())
    del manifest["verification"]["mtime_ns"]  # a manifest of version 0.1
    backup.manifest_path.write_text(json.dumps(manifest))
    assert services.find_backup(backup.name).verified
    later = backup.path.stat().st_mtime + 60
    os.utime(backup.path, (later, later))  # written to a minute after its check
    assert not services.find_backup(backup.name).verified


# The edges ----------------------------------------------------------------------------


def test_a_sqlite_file_that_is_not_a_django_database_is_not_adopted(studio_db: StudioDB) -> None:
    studio_db.backups.mkdir()
    other = studio_db.backups / "backup_20260304_153045.db"
    with contextlib.closing(sqlite3.connect(other)) as connection:
        connection.execute("CREATE TABLE notes (text TEXT)")
        connection.commit()
    assert "not a Django one" in services.verify(other.name)[0]
    assert services.find_backup(other.name).failed_check


def test_a_manifest_that_cannot_be_written_is_reported(studio_db: StudioDB) -> None:
    backup = services.backup_now()
    backup.manifest_path.unlink()
    with undeletable(studio_db.backups):
        problems = services.verify(backup.name)
    assert problems[0].startswith(f"Could not give {backup.name} a manifest: ")
    assert not backup.manifest_path.exists()


def test_the_checks_again_wait_for_no_one(
    studio_db: StudioDB, settings: SettingsWrapper, caplog: pytest.LogCaptureFixture
) -> None:
    from django_studio_backups import conf, locking, verifying

    services.backup_now()
    limits(settings, LOCK_TIMEOUT=0.1)
    with locking.exclusive(studio_db.backups / locking.LOCK_NAME, 1):
        assert verifying.reverify_oldest(conf.get_config(), 2, None) is True
    assert "Did not check old backups again" in caplog.text


def test_a_backup_never_checked_is_checked_again_first(studio_db: StudioDB) -> None:
    from django_studio_backups import conf, verifying

    checked, unchecked = services.backup_if_needed(), services.backup_now()
    assert checked is not None
    manifest = json.loads(unchecked.manifest_path.read_text())
    del manifest["verification"]
    unchecked.manifest_path.write_text(json.dumps(manifest))
    assert verifying.reverify_oldest(conf.get_config(), 1, None) is True
    assert services.find_backup(unchecked.name).verified


def test_what_the_listing_knows_of_unusual_manifests(tmp_path: Path) -> None:
    from django_studio_backups import archive

    zone = HERMOSILLO
    path = tmp_path / "backup_20261399_000000.db"  # the pattern's digits, not a date
    path.write_bytes(b"")
    [listed] = archive.list_backup_files(tmp_path, zone)
    assert listed.created_at == listed.modified_at
    assert archive.time_of_name("notes.db", zone) is None
    # A check from before mtimes were recorded, whose time cannot be read.
    checked = archive.BackupFile(
        path, 0, listed.modified_at, {"size": 0, "verification": {"ok": True, "at": "soon"}}
    )
    assert checked.check is None
    # A file without a manifest gets none from a check.
    archive.record_check(listed, ok=False, check="quick_check", at="", problems=[])
    assert not archive.manifest_path_for(path).exists()


def test_the_loss_summary_of_a_backup_that_cannot_be_read(studio_db: StudioDB) -> None:
    from django_studio_backups.exceptions import RestoreFailed

    backup = services.backup_now()
    backup.path.write_bytes(b"SQLite format 3\x00" + b"\x00" * 100)
    with pytest.raises(RestoreFailed, match="Cannot compare"):
        services.row_changes(backup)


def test_the_admin_and_the_command_say_what_was_not_counted(
    studio_db: StudioDB, admin_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from django.urls import reverse

    from django_studio_backups import restoring

    backup = services.backup_now()
    page = admin_client.get(
        reverse("admin:django_studio_backups_backup_restore", args=[backup.name])
    ).content.decode()
    assert "Every table holds as many rows now as in the backup" in page
    with contextlib.closing(studio_db.connect()) as connection:
        connection.execute("DELETE FROM auth_permission WHERE id <= 2")
        connection.commit()
    page = admin_client.get(
        reverse("admin:django_studio_backups_backup_restore", args=[backup.name])
    ).content.decode()
    assert "Permissions: " in page
    assert "(2 will come back)" in page
    monkeypatch.setattr(restoring, "COUNT_WITHIN", -1.0)
    page = admin_client.get(
        reverse("admin:django_studio_backups_backup_restore", args=[backup.name])
    ).content.decode()
    assert "not counted (the database is large or busy)" in page


def test_a_backup_without_any_check_says_so(studio_db: StudioDB, admin_client: Any) -> None:
    from django.urls import reverse

    backup = services.backup_now()
    manifest = json.loads(backup.manifest_path.read_text())
    del manifest["verification"]
    backup.manifest_path.write_text(json.dumps(manifest))
    page = admin_client.get(reverse("admin:django_studio_backups_backup_changelist"))
    assert 'title="Not checked."' in page.content.decode()


@pytest.mark.parametrize("answer", ["n\n"])
def test_restore_backup_lists_what_it_cannot_count(
    studio_db: StudioDB, monkeypatch: pytest.MonkeyPatch, answer: str
) -> None:
    from io import StringIO

    from django.core.management import call_command

    from django_studio_backups import restoring

    backup = services.backup_now()
    monkeypatch.setattr("builtins.input", lambda prompt: answer.strip())
    out = StringIO()
    call_command("restore_backup", backup.name, stdout=out)
    assert "  Every table holds as many rows now as in the backup." in out.getvalue()
    assert out.getvalue().rstrip().endswith("Cancelled.")
    monkeypatch.setattr(restoring, "COUNT_WITHIN", -1.0)
    out = StringIO()
    call_command("restore_backup", backup.name, stdout=out)
    assert "not counted (the database is large or busy)" in out.getvalue()


def test_a_busy_live_database_is_not_counted_past_the_deadline(
    studio_db: StudioDB, monkeypatch: pytest.MonkeyPatch
) -> None:
    from django_studio_backups import restoring

    backup = services.backup_now()
    monkeypatch.setattr(restoring, "COUNT_WITHIN", 0.5)
    # A writer holds the live database in rollback-journal mode: no one may read it.
    with contextlib.closing(sqlite3.connect(studio_db.path, isolation_level=None)) as writer:
        writer.execute("PRAGMA journal_mode=DELETE")
        writer.execute("BEGIN EXCLUSIVE")
        started = time.monotonic()
        changes = services.row_changes(backup)
        took = time.monotonic() - started
        writer.execute("ROLLBACK")
    assert changes
    assert all(c.now is None for c in changes)
    assert took < 3


def test_a_file_that_vanishes_is_not_adopted(studio_db: StudioDB) -> None:
    backup = services.backup_now()
    backup.manifest_path.unlink()
    listed = services.find_backup(backup.name)
    backup.path.unlink()
    problems = services.verify(listed)
    assert problems[-1].startswith(f"Could not give {backup.name} a manifest: ")
    assert not backup.manifest_path.exists()
