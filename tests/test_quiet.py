"""A good guest on developer machines: schedule warnings only where a schedule is meant to
run, the journal-mode advice only in ``check --deploy``, and a backup folder git ignores."""

from __future__ import annotations

import contextlib
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
import time_machine
from django.core import checks as django_checks
from pytest_django.fixtures import Settings as SettingsWrapper

from django_studio_backups import archive, checks, cron, services
from tests.conftest import StudioDB


def schedule_warnings() -> list[str | None]:
    return [m.id for m in checks.check_last_backup()]


def fail_a_daily_backup(db: StudioDB) -> None:
    db.path.write_bytes(b"this is not a SQLite database" * 10)
    cron.daily_backup()


def test_no_schedule_warnings_on_a_developer_machine(
    studio_db: StudioDB, settings: SettingsWrapper
) -> None:
    settings.DEBUG = True
    services.backup_now()
    with time_machine.travel(timedelta(days=30)):
        assert schedule_warnings() == []
        settings.DEBUG = False
        assert schedule_warnings() == ["studio_backups.W021"]


def test_no_failed_first_backup_warning_on_a_developer_machine(
    studio_db: StudioDB, settings: SettingsWrapper
) -> None:
    settings.DEBUG = True
    fail_a_daily_backup(studio_db)
    assert schedule_warnings() == []
    settings.DEBUG = False
    assert schedule_warnings() == ["studio_backups.W022"]


def test_a_configured_crontab_job_means_a_schedule_even_with_debug(
    studio_db: StudioDB, settings: SettingsWrapper
) -> None:
    settings.DEBUG = True
    settings.CRONJOBS = [("0 3 * * *", cron.JOB, cron.SKIP_CHECKS)]
    services.backup_now()
    with time_machine.travel(timedelta(days=3, hours=1)):
        assert schedule_warnings() == ["studio_backups.W021"]


def test_pre_migrate_backups_are_not_the_last_backup_for_the_warnings(
    studio_db: StudioDB,
) -> None:
    services.backup_now(kind="pre-migrate")
    with time_machine.travel(timedelta(days=30)):
        # Only a pre-migrate backup, and no failure: nothing to warn about.
        assert schedule_warnings() == []
    services.backup_now(kind="daily")
    with time_machine.travel(timedelta(days=3, hours=1)):
        services.backup_now(kind="pre-migrate")
        [warning] = checks.check_last_backup()
        assert services.last_backup_at() is not None
    assert warning.id == "studio_backups.W021"
    assert warning.msg.startswith("The last scheduled or manual backup is 3 days old")


def test_a_failure_after_only_pre_migrate_backups_warns(studio_db: StudioDB) -> None:
    services.backup_now(kind="pre-migrate")
    with time_machine.travel(timedelta(days=1)):
        fail_a_daily_backup(studio_db)
        [warning] = checks.check_last_backup()
    assert warning.id == "studio_backups.W022"
    assert warning.msg == "No scheduled or manual backup has been made yet."


def run_checks(*, deploy: bool) -> list[str | None]:
    return [m.id for m in django_checks.run_checks(include_deployment_checks=deploy)]


def test_the_journal_mode_advice_is_given_once_and_only_for_deployment(
    studio_db: StudioDB,
) -> None:
    with contextlib.closing(studio_db.connect()) as connection:
        connection.execute("PRAGMA journal_mode=DELETE")
    assert "studio_backups.W010" not in run_checks(deploy=False)
    assert run_checks(deploy=True).count("studio_backups.W010") == 1


def test_a_backup_folder_the_app_creates_is_ignored_by_git(
    studio_db: StudioDB, tmp_path: Path
) -> None:
    assert not studio_db.backups.exists()
    backup = services.backup_now()
    assert (studio_db.backups / ".gitignore").read_text() == "*\n"
    assert [b.name for b in services.backups()] == [backup.name]
    assert services.verify(backup.name, full=True) == []
    repository = tmp_path / "data"
    subprocess.run(["git", "init", "-q", str(repository)], check=True)
    ignored = subprocess.run(
        ["git", "-C", str(repository), "check-ignore", "-q", str(backup.path)], check=False
    )
    assert ignored.returncode == 0


def test_a_folder_someone_else_made_is_left_as_it_is(studio_db: StudioDB) -> None:
    studio_db.backups.mkdir()
    services.backup_now()
    assert not (studio_db.backups / ".gitignore").exists()


def test_a_folder_made_by_another_process_meanwhile_is_left_to_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "backups"
    folder.mkdir()
    # Another process makes the folder between the look and the mkdir.
    is_dir = Path.is_dir
    looks: list[Path] = []

    def not_there_at_first(self: Path) -> bool:
        if self == folder and not looks:
            looks.append(self)
            return False
        return is_dir(self)

    monkeypatch.setattr(Path, "is_dir", not_there_at_first)
    archive.ensure_directory(folder)
    monkeypatch.undo()
    assert looks == [folder]
    assert list(folder.iterdir()) == []
    # A file where the folder should be is still an error.
    folder.rmdir()
    folder.touch()
    with pytest.raises(FileExistsError):
        archive.ensure_directory(folder)


def test_every_folder_the_app_creates_is_ignored_by_git(tmp_path: Path) -> None:
    # Another alias's backups go to backups/<alias>: made first, they create backups/ too,
    # and the configured database's backups later land in that folder.
    repository = tmp_path / "project"
    subprocess.run(["git", "init", "-q", str(repository)], check=True)
    archive.ensure_directory(repository / "backups" / "other")
    archive.ensure_directory(repository / "backups")
    (repository / "backups" / "backup_20261201_093042.db").write_bytes(b"data")
    untracked = subprocess.run(
        ["git", "-C", str(repository), "status", "--porcelain", "--untracked-files=all"],
        check=True,
        capture_output=True,
        text=True,
    )
    assert untracked.stdout == ""
    assert (repository / "backups" / ".gitignore").read_text() == "*\n"
