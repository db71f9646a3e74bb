from __future__ import annotations

import contextlib
import json
import os
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from io import StringIO
from pathlib import Path

import django
import pytest
from django.apps import apps
from django.conf import settings as django_settings
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connections
from django.db.migrations.recorder import MigrationRecorder
from django.db.models.signals import pre_migrate
from pytest_django.fixtures import Settings as SettingsWrapper

from django_studio_backups import premigrate, services
from django_studio_backups.archive import BackupFile
from tests.conftest import StudioDB
from tests.notify_servers import Monitor, SMTPServer

REPO = Path(__file__).resolve().parent.parent
SECOND = ("migrating_app", "0002_design_colour")


@pytest.fixture
def migrating(
    studio_db: StudioDB,
    settings: SettingsWrapper,
    django_db_blocker: pytest.FixtureRequest,
) -> Iterator[StudioDB]:
    """The studio database with tests.migrating_app installed and migrated to 0001 only."""
    settings.INSTALLED_APPS = [*django_settings.INSTALLED_APPS, "tests.migrating_app"]
    with django_db_blocker.unblock():  # type: ignore[attr-defined]
        migrate("migrating_app", "0001", skip_backup=True, verbosity=0)
        add_designs(studio_db.path, "rose", "anchor")
        yield studio_db
        connections["studio"].close()


def migrate(*args: str, **options: object) -> str:
    out = StringIO()
    call_command("migrate", *args, database="studio", stdout=out, **options)
    return out.getvalue()


def add_designs(path: Path, *names: str) -> None:
    with sqlite3.connect(path) as connection:
        connection.executemany(
            "INSERT INTO migrating_app_design (name) VALUES (?)", [(n,) for n in names]
        )
    connection.close()


def design_columns(path: Path) -> list[str]:
    connection = sqlite3.connect(path)
    try:
        return [row[1] for row in connection.execute("PRAGMA table_info(migrating_app_design)")]
    finally:
        connection.close()


def designs(path: Path) -> list[str]:
    connection = sqlite3.connect(path)
    try:
        return [row[0] for row in connection.execute("SELECT name FROM migrating_app_design")]
    finally:
        connection.close()


def applied(path: Path) -> set[tuple[str, str]]:
    connection = sqlite3.connect(path)
    try:
        return set(connection.execute("SELECT app, name FROM django_migrations"))
    finally:
        connection.close()


def recorded_migrations() -> list[MigrationRecorder.Migration]:
    return list(MigrationRecorder(connections["studio"]).migration_qs)


def copy_database(source: Path, target: Path) -> None:
    # Through SQLite: the rows added in WAL mode may still be in the -wal file.
    src, dst = sqlite3.connect(source), sqlite3.connect(target)
    try:
        src.backup(dst)
    finally:
        src.close()
        dst.close()


def pre_migrate_backups() -> list[BackupFile]:
    return [b for b in services.backups() if b.kind == "pre-migrate"]


def test_one_backup_per_run_however_many_apps_migrate(migrating: StudioDB) -> None:
    migrate("sessions", "zero", skip_backup=True, verbosity=0)
    before = applied(migrating.path)

    output = migrate()

    [backup] = pre_migrate_backups()
    assert f"Backed up the database before migrating: {backup.name}" in output
    assert {(s["app"], s["name"], s["direction"]) for s in backup.manifest["migrate_plan"]} == {
        ("sessions", "0001_initial", "apply"),
        (*SECOND, "apply"),
    }
    # The backup holds the database as it was before the run.
    assert {tuple(m) for m in backup.manifest["migrations"]} == before
    assert SECOND in applied(migrating.path)
    assert design_columns(migrating.path) == ["id", "name", "colour"]


def test_nothing_to_apply_makes_no_backup(migrating: StudioDB) -> None:
    migrate()
    assert len(pre_migrate_backups()) == 1

    output = migrate()

    assert "No migrations to apply." in output
    assert len(pre_migrate_backups()) == 1


def test_unapplying_is_a_change_too(migrating: StudioDB) -> None:
    migrate(verbosity=0)

    output = migrate("migrating_app", "0001", verbosity=0)

    assert output == ""
    newest = pre_migrate_backups()[0]
    assert newest.manifest["migrate_plan"] == [
        {"app": "migrating_app", "name": "0002_design_colour", "direction": "unapply"}
    ]
    assert design_columns(migrating.path) == ["id", "name"]


def test_restoring_the_backup_undoes_the_migration(migrating: StudioDB) -> None:
    migrate()
    [backup] = pre_migrate_backups()
    assert designs(migrating.path) == ["ROSE", "ANCHOR"]
    migrating.add_clients("Carla")

    report = services.restore(backup.name)

    assert design_columns(migrating.path) == ["id", "name"]
    assert designs(migrating.path) == ["rose", "anchor"]
    assert migrating.clients() == ["Ana", "Beto"]
    assert SECOND not in applied(migrating.path)
    assert SECOND in report.missing_migrations
    # The way forward again: migrating after the restore works as the first time did.
    migrate(verbosity=0)
    assert designs(migrating.path) == ["ROSE", "ANCHOR"]


@contextlib.contextmanager
def full_disk(directory: Path) -> Iterator[Path]:
    """A real 64 KiB filesystem: smaller than the studio database, so a backup cannot fit."""
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("Mounting a tmpfs needs root, and CI runs as root")
        pytest.skip("Mounting a tmpfs needs root")
    directory.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(directory)], check=True)
    try:
        yield directory
    finally:
        subprocess.run(["umount", str(directory)], check=True)


@pytest.fixture
def full_backup_folder(
    migrating: StudioDB, tmp_path: Path, settings: SettingsWrapper
) -> Iterator[Path]:
    assert migrating.path.stat().st_size > 64 * 1024
    with full_disk(tmp_path / "full") as directory:
        settings.STUDIO_BACKUPS = {**settings.STUDIO_BACKUPS, "DIRECTORY": str(directory)}
        yield directory


def test_a_failed_backup_stops_the_migration(migrating: StudioDB, full_backup_folder: Path) -> None:
    before = applied(migrating.path)

    with pytest.raises(CommandError) as excinfo:
        migrate()

    message = str(excinfo.value)
    assert message.startswith("Nothing was migrated: the backup before migrating failed.")
    assert "disk is full" in message
    assert "--skip-backup" in message
    assert design_columns(migrating.path) == ["id", "name"]
    assert applied(migrating.path) == before
    assert designs(migrating.path) == ["rose", "anchor"]
    # The failed attempt left nothing behind and is recorded like any failed backup.
    assert not [name for name in os.listdir(full_backup_folder) if name.startswith(".tmp-")]
    failure = services.last_failure()
    assert failure is not None
    assert "disk is full" in failure.reason


def test_skip_backup_lets_the_operator_go_on(migrating: StudioDB, full_backup_folder: Path) -> None:
    output = migrate(skip_backup=True)

    assert "Migrating without a backup first (--skip-backup)." in output
    assert SECOND in applied(migrating.path)
    assert services.backups() == []


@pytest.mark.parametrize("verbosity", [0, 1])
def test_without_file_locks_migrate_runs_without_a_backup(
    migrating: StudioDB, monkeypatch: pytest.MonkeyPatch, verbosity: int
) -> None:
    from django_studio_backups import locking

    monkeypatch.setattr(locking, "LOCKS_AVAILABLE", False)  # as a Python without fcntl
    output = migrate(verbosity=verbosity)

    said = "Migrating without a backup first: this Python can lock no file."
    assert (said in output) == (verbosity > 0)
    assert SECOND in applied(migrating.path)
    assert services.backups() == []


def test_the_setting_turns_the_backup_off(
    migrating: StudioDB, full_backup_folder: Path, settings: SettingsWrapper
) -> None:
    settings.STUDIO_BACKUPS = {**settings.STUDIO_BACKUPS, "BACKUP_BEFORE_MIGRATE": False}

    output = migrate()

    assert "without a backup" not in output
    assert SECOND in applied(migrating.path)
    assert services.backups() == []


def test_bad_settings_stop_the_migration(migrating: StudioDB, settings: SettingsWrapper) -> None:
    settings.STUDIO_BACKUPS = {**settings.STUDIO_BACKUPS, "MAX_BACKUPS": 0}

    with pytest.raises(CommandError, match=r"(?s)Nothing was migrated.*MAX_BACKUPS"):
        migrate()

    assert SECOND not in applied(migrating.path)


def test_another_database_is_not_backed_up(
    migrating: StudioDB, settings: SettingsWrapper, tmp_path: Path
) -> None:
    settings.STUDIO_BACKUPS = {"DATABASE": "default", "DIRECTORY": str(tmp_path / "default")}

    migrate()

    assert SECOND in applied(migrating.path)
    assert not (tmp_path / "default").exists()
    assert not migrating.backups.exists()


def test_the_test_database_is_not_backed_up(
    migrating: StudioDB, settings: SettingsWrapper, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A kept test database with a migration to apply: what `manage.py test --keepdb` and
    # `pytest --reuse-db` migrate, through the same create_test_db() as a fresh one.
    test_db = tmp_path / "test-studio.db"
    copy_database(migrating.path, test_db)
    monkeypatch.setitem(django_settings.DATABASES["studio"]["TEST"], "NAME", str(test_db))
    settings.STUDIO_BACKUPS = {**settings.STUDIO_BACKUPS, "DIRECTORY": str(tmp_path / "b")}
    creation = connections["studio"].creation

    # Django 6.0 deprecates the serialize argument (and no longer serializes by default).
    no_serialize: dict[str, bool] = {} if django.VERSION >= (6, 0) else {"serialize": False}
    name = creation.create_test_db(verbosity=0, autoclobber=True, keepdb=True, **no_serialize)
    try:
        assert name == str(test_db)
        assert SECOND in applied(test_db)
    finally:
        creation.destroy_test_db(str(migrating.path), verbosity=0, keepdb=True)

    assert not (tmp_path / "b").exists()
    assert SECOND not in applied(migrating.path)


def test_an_in_memory_database_is_not_backed_up(migrating: StudioDB) -> None:
    # The test runner's default for SQLite when no TEST name is set.
    database = django_settings.DATABASES["studio"]
    connections["studio"].close()
    database["NAME"] = ":memory:"
    try:
        migrate(verbosity=0)
        assert SECOND in {(row.app, row.name) for row in recorded_migrations()}
    finally:
        database["NAME"] = migrating.path
        # Django keeps an in-memory database open through close() unless NAME is a file.
        connections["studio"].close()

    assert not migrating.backups.exists()


@pytest.mark.parametrize("start", ["no file", "empty file", "WAL mode set"])
def test_a_new_database_is_not_backed_up(
    migrating: StudioDB, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, start: str
) -> None:
    # The first migrate of a project: there is no data to lose.
    connections["studio"].close()
    new = tmp_path / "new" / "studio.db"
    new.parent.mkdir()
    if start == "empty file":
        new.touch()
    elif start == "WAL mode set":
        sqlite3.connect(new).execute("PRAGMA journal_mode=WAL").connection.close()
        assert new.stat().st_size > 0
    monkeypatch.setitem(django_settings.DATABASES["studio"], "NAME", new)

    migrate(verbosity=0)

    assert SECOND in applied(new)
    assert not (new.parent / "backups").exists()


def test_a_pre_migrate_signal_without_a_plan_is_ignored(migrating: StudioDB) -> None:
    # Third-party code may send pre_migrate itself; only migrate's own signal has a plan.
    app_config = apps.get_app_config("studio")
    pre_migrate.send(
        sender=app_config, app_config=app_config, verbosity=1, interactive=False, using="studio"
    )

    assert services.backups() == []


def test_skipped_is_scoped(migrating: StudioDB) -> None:
    with premigrate.skipped():
        migrate(verbosity=0)
    assert services.backups() == []

    migrate("migrating_app", "0001", verbosity=0)

    assert len(pre_migrate_backups()) == 1


def run_manage(db: StudioDB, *args: str, **env_vars: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.migrating_settings",
        "MIGRATING_TEST_DB": str(db.path),
        "MIGRATING_TEST_BACKUPS": json.dumps(django_settings.STUDIO_BACKUPS),
        "PYTHONPATH": str(REPO),
        **env_vars,
    }
    return subprocess.run(
        [sys.executable, "-m", "django", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_manage_py_migrate(
    migrating: StudioDB,
    full_backup_folder: Path,
    settings: SettingsWrapper,
    smtp_server: SMTPServer,
    monitor: Monitor,
) -> None:
    # The real command line: our migrate command is the one that runs, and its failure is a
    # one-line CommandError with exit status 1.
    connections["studio"].close()
    settings.STUDIO_BACKUPS = {**settings.STUDIO_BACKUPS, "HEARTBEAT_URL": monitor.url}
    failed = run_manage(migrating, "migrate", "--database", "studio", **smtp_server.env())

    assert failed.returncode == 1, failed.stderr
    assert "CommandError: Nothing was migrated" in failed.stderr
    assert "Traceback" not in failed.stderr
    assert SECOND not in applied(migrating.path)
    # The owner hears of it: by mail, and through the monitor.
    reason = services.last_failure()
    assert reason is not None
    assert "No space left on device" in reason.reason
    assert failed.stderr.count(reason.reason) == 1  # as the command's error only
    [message] = smtp_server.messages
    assert message["Subject"].endswith("Backup failed on " + socket.gethostname())
    assert "The backup before migrate of" in message.get_content()
    assert reason.reason in message.get_content()
    [ping] = monitor.pings
    assert (ping.method, ping.path, ping.body) == (
        "POST",
        "/ping/studio-backups/fail",
        reason.reason,
    )

    done = run_manage(migrating, "migrate", "--database", "studio", "--skip-backup")

    assert done.returncode == 0, done.stderr
    assert "Migrating without a backup first (--skip-backup)." in done.stdout
    assert SECOND in applied(migrating.path)


def test_manage_py_test_makes_no_backup_of_its_database(
    migrating: StudioDB, settings: SettingsWrapper, tmp_path: Path
) -> None:
    # `manage.py test --keepdb` migrates a kept, non-empty test database with a migration to
    # apply: everything a backup would need, except that it is the test database.
    test_db = tmp_path / "test-studio.db"
    copy_database(migrating.path, test_db)
    settings.STUDIO_BACKUPS = {**settings.STUDIO_BACKUPS, "DIRECTORY": str(tmp_path / "b")}
    connections["studio"].close()

    run = run_manage(
        migrating,
        "test",
        "tests.migrating_app",
        "--keepdb",
        MIGRATING_TEST_TEST_DB=str(test_db),
    )

    assert run.returncode == 0, run.stderr
    assert "Ran 1 test" in run.stderr
    assert SECOND in applied(test_db)
    assert not (tmp_path / "b").exists()
    assert SECOND not in applied(migrating.path)


def test_showing_the_plan_makes_no_backup(migrating: StudioDB) -> None:
    output = migrate(plan=True)

    assert "migrating_app.0002_design_colour" in output
    assert services.backups() == []
    assert SECOND not in applied(migrating.path)
