"""The daily job: its line in a real crontab, run as cron runs it, and what it leaves behind.

The subprocess tests use the example project (``example_project/manage.py``) on a database
of their own, given through ``STUDIO_DB_PATH``.
"""

from __future__ import annotations

import io
import json
import logging
import os
import pwd
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import time_machine
from django.conf import settings as django_settings
from django.core import mail
from django.core.handlers.wsgi import WSGIHandler
from django.core.management import call_command
from django.core.signals import request_started
from django.test import Client, RequestFactory
from pytest_django.fixtures import Settings as SettingsWrapper

from django_studio_backups import (
    archive,
    checks,
    cron,
    locking,
    services,
    signals,
    startup,
    state,
)
from tests.conftest import StudioDB, command_env, mounted_tmpfs
from tests.notify_servers import ADMIN_EMAIL, Monitor, SMTPServer

REPO = Path(__file__).resolve().parent.parent
MANAGE = REPO / "example_project" / "manage.py"
REAL_CRONTAB = "/usr/bin/crontab"
# cron's own environment for a job (see crontab(5)); nothing of the test's is passed on.
CRON_PATH = "/usr/bin:/bin"
LINE = re.compile(r"^(?P<time>(?:\S+\s+){4}\S+)\s+(?P<command>.+?) # (?P<comment>.*)$")

WRAPPER = f"""#!/bin/sh
# Notes how django-crontab calls crontab, then lets the real one do the work.
printf '%s\\n' "$*" >> "$0.calls"
exec {REAL_CRONTAB} "$@"
"""


@dataclass
class Project:
    """The example project on a database of its own."""

    database: Path
    backups: Path
    state_file: Path
    log: Path

    def env(self, **extra: str) -> dict[str, str]:
        return {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.example_settings",
            "STUDIO_DB_PATH": str(self.database),
            **extra,
        }

    def manage(self, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(MANAGE), *args],
            env=self.env(**extra),
            capture_output=True,
            text=True,
            timeout=120,
        )

    def backup_files(self) -> list[archive.BackupFile]:
        return archive.list_backup_files(self.backups)

    def state(self) -> dict[str, Any]:
        return state.read(self.state_file)


@pytest.fixture(scope="module")
def migrated_example_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    database = tmp_path_factory.mktemp("example") / "studio.db"
    project = Project(database, database.parent / "backups", database.parent / "x", Path())
    result = project.manage("migrate", "--no-input", "-v0")
    assert result.returncode == 0, result.stderr
    return database


@pytest.fixture
def project(migrated_example_db: Path, tmp_path: Path) -> Project:
    data = tmp_path / "data"
    data.mkdir()
    database = data / "studio.db"
    shutil.copyfile(migrated_example_db, database)
    return Project(database, data / "backups", data / "settings.json", data / "cron.log")


@pytest.fixture
def machine_crontab() -> Iterator[None]:
    """The crontab of the user running the tests, put back exactly as it was."""
    saved = subprocess.run([REAL_CRONTAB, "-l"], capture_output=True, text=True)
    if saved.returncode != 0 and "no crontab" not in saved.stderr:
        pytest.fail(f"Cannot read this user's crontab: {saved.stderr}")
    try:
        yield
    finally:
        if saved.returncode == 0:
            subprocess.run([REAL_CRONTAB, "-"], input=saved.stdout, text=True, check=True)
        else:
            subprocess.run([REAL_CRONTAB, "-r"], capture_output=True, check=False)
        after = subprocess.run([REAL_CRONTAB, "-l"], capture_output=True, text=True)
        assert (after.returncode, after.stdout) == (saved.returncode, saved.stdout)


@dataclass
class InstalledJob:
    time: str
    command: str
    comment: str
    wrapper_calls: list[str]


@pytest.fixture
def installed_job(project: Project, tmp_path: Path, machine_crontab: None) -> InstalledJob:
    wrapper = tmp_path / "crontab"
    wrapper.write_text(WRAPPER)
    wrapper.chmod(0o755)
    result = project.manage("crontab", "add", STUDIO_TEST_CRONTAB=str(wrapper))
    assert result.returncode == 0, result.stderr
    listed = subprocess.run([str(wrapper), "-l"], capture_output=True, text=True, check=True)
    comment = f"django-studio-backups example project in {MANAGE.parent}"
    lines = [line for line in listed.stdout.splitlines() if line.endswith(f"# {comment}")]
    assert len(lines) == 1, listed.stdout
    match = LINE.match(lines[0])
    assert match is not None, lines[0]
    calls = Path(f"{wrapper}.calls").read_text().splitlines()
    return InstalledJob(match["time"], match["command"], match["comment"], calls)


def run_as_cron(command: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    home = pwd.getpwuid(os.getuid()).pw_dir
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(exist_ok=True)
    return subprocess.run(
        [
            "env",
            "-i",
            f"PATH={CRON_PATH}",
            f"HOME={home}",
            "SHELL=/bin/sh",
            "/bin/sh",
            "-c",
            command,
        ],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_crontab_add_installs_the_daily_job(installed_job: InstalledJob, project: Project) -> None:
    assert installed_job.time == "0 3 * * *"
    # Read and written through CRONTAB_EXECUTABLE, which the real crontab accepted.
    assert installed_job.wrapper_calls[0] == "-l"
    assert any(call.startswith("/") for call in installed_job.wrapper_calls[1:])
    command = installed_job.command
    assert command.startswith(f"STUDIO_DB_PATH={project.database} {sys.executable} {MANAGE}")
    assert re.search(r" crontab run [0-9a-f]{32} ", command)
    assert command.endswith(f">> {project.log} 2>&1")


def test_cron_run_makes_todays_backup_once(
    installed_job: InstalledJob, project: Project, tmp_path: Path
) -> None:
    first = run_as_cron(installed_job.command, tmp_path)

    assert first.returncode == 0, first.stdout + first.stderr
    assert (first.stdout, first.stderr) == ("", "")  # all output went to the log file
    [backup] = project.backup_files()
    assert backup.kind == "daily"
    assert project.state()[state.LAST_BACKUP_AT] == backup.manifest["created_at"]
    assert f"Backed up {project.database}" in project.log.read_text()

    second = run_as_cron(installed_job.command, tmp_path)

    assert second.returncode == 0, second.stdout + second.stderr
    assert [b.path for b in project.backup_files()] == [backup.path]
    assert "already exists for" in project.log.read_text()


def test_failed_cron_run_is_recorded_and_keeps_last_backup_at(
    installed_job: InstalledJob, project: Project, tmp_path: Path
) -> None:
    made = run_as_cron(installed_job.command, tmp_path)
    assert made.returncode == 0, made.stderr
    [earlier] = project.backup_files()
    # That backup was yesterday's, as far as today's run can tell.
    yesterday = state.isoformat(datetime.now().astimezone() - timedelta(days=1))
    project.state_file.write_text(json.dumps({state.LAST_BACKUP_AT: yesterday}))

    # A full disk: a one-page tmpfs has no room for the backup.
    with mounted_tmpfs(project.backups, "size=4k,mode=0700"):
        failed = run_as_cron(installed_job.command, tmp_path)
        leftovers = sorted(p.name for p in project.backups.iterdir())

    # django-crontab exits 0 whatever the job does; the failure shows in the state and log.
    assert failed.returncode == 0
    recorded = project.state()
    assert recorded[state.LAST_BACKUP_AT] == yesterday
    failed_at = datetime.fromisoformat(recorded[state.LAST_FAILURE_AT])
    assert abs(datetime.now().astimezone() - failed_at) < timedelta(minutes=2)
    assert "full" in recorded[state.LAST_FAILURE_REASON]
    assert recorded[state.LAST_FAILURE_REASON] in project.log.read_text()
    # Nothing half-written was left on the full disk, and nothing earlier was lost.
    assert [name for name in leftovers if not name.startswith(".")] == []
    assert not [name for name in leftovers if name.startswith(archive.TEMP_PREFIX)]
    assert [b.path for b in project.backup_files()] == [earlier.path]


def test_a_cron_run_is_not_stopped_by_system_check_errors(
    installed_job: InstalledJob, project: Project, tmp_path: Path
) -> None:
    assert " --skip-checks " in installed_job.command
    # A backup folder that cannot be written: `manage.py check` reports E006, an error.
    with mounted_tmpfs(project.backups, "ro,size=64k"):
        checked = project.manage("check")
        ran = run_as_cron(installed_job.command, tmp_path)
    assert checked.returncode == 1
    assert "studio_backups.E006" in checked.stderr
    # The job still ran, and recorded why it made no backup.
    assert ran.returncode == 0
    recorded = project.state()
    assert "Read-only file system" in recorded[state.LAST_FAILURE_REASON]
    assert recorded[state.LAST_FAILURE_REASON] in project.log.read_text()
    assert "SystemCheckError" not in project.log.read_text()


def test_changing_the_schedule_leaves_one_job_installed(
    installed_job: InstalledJob, project: Project, tmp_path: Path
) -> None:
    wrapper = tmp_path / "crontab"
    changed = project.manage(
        "crontab",
        "add",
        "--verbosity",
        "0",
        STUDIO_TEST_CRONTAB=str(wrapper),
        STUDIO_TEST_CRON_SCHEDULE="45 4 * * *",
    )
    assert changed.returncode == 0, changed.stderr
    listed = subprocess.run([str(wrapper), "-l"], capture_output=True, text=True, check=True)
    lines = [line for line in listed.stdout.splitlines() if line.endswith(installed_job.comment)]
    assert len(lines) == 1, listed.stdout
    assert lines[0].startswith("45 4 * * * ")


def test_the_crontab_line_tells_the_owner_of_every_run(
    installed_job: InstalledJob,
    project: Project,
    tmp_path: Path,
    smtp_server: SMTPServer,
    monitor: Monitor,
) -> None:
    # The project reads where to mail and ping from its environment, and passes that on to
    # the crontab line (CRONTAB_COMMAND_PREFIX), as cron gives jobs almost none.
    wrapper = tmp_path / "crontab"
    told = {
        "STUDIO_HEARTBEAT_URL": monitor.url,
        "STUDIO_ADMIN_EMAIL": ADMIN_EMAIL,
        "STUDIO_EMAIL_HOST": "127.0.0.1",
        "STUDIO_EMAIL_PORT": str(smtp_server.port),
    }
    added = project.manage(
        "crontab", "add", "--verbosity", "0", STUDIO_TEST_CRONTAB=str(wrapper), **told
    )
    assert added.returncode == 0, added.stderr
    listed = subprocess.run([str(wrapper), "-l"], capture_output=True, text=True, check=True)
    [line] = [x for x in listed.stdout.splitlines() if x.endswith(installed_job.comment)]
    match = LINE.match(line)
    assert match is not None, line
    command = match["command"]
    assert f"STUDIO_HEARTBEAT_URL={monitor.url} " in command

    # A failure: the backup folder is read-only. Mail, the monitor and the log all have it.
    with mounted_tmpfs(project.backups, "ro,size=64k"):
        failed = run_as_cron(command, tmp_path)
    assert failed.returncode == 0  # django-crontab's, whatever the job does
    reason = project.state()[state.LAST_FAILURE_REASON]
    assert "Read-only file system" in reason
    assert reason in project.log.read_text()
    [message] = smtp_server.messages
    assert message["Subject"].endswith(f"Backup failed on {socket.gethostname()}")
    assert reason in message.get_content()
    assert [(p.method, p.path, p.body) for p in monitor.pings] == [
        ("POST", "/ping/studio-backups/fail", reason)
    ]

    # The next run makes the backup, and the monitor hears that all is well again.
    made = run_as_cron(command, tmp_path)
    assert made.returncode == 0
    assert len(project.backup_files()) == 1
    assert [(p.method, p.path) for p in monitor.pings[1:]] == [("GET", "/ping/studio-backups")]
    assert len(smtp_server.messages) == 1


def deploy_warnings(project: Project, wrapper: Path, **extra: str) -> str:
    checked = project.manage("check", "--deploy", STUDIO_TEST_CRONTAB=str(wrapper), **extra)
    return checked.stdout + checked.stderr


def test_check_deploy_compares_the_installed_crontab_with_cronjobs(
    installed_job: InstalledJob, project: Project, tmp_path: Path
) -> None:
    wrapper = tmp_path / "crontab"
    assert "studio_backups.W023" not in deploy_warnings(project, wrapper)
    # The schedule changed, and nobody ran `crontab add`: the installed line is stale.
    stale = deploy_warnings(project, wrapper, STUDIO_TEST_CRON_SCHEDULE="45 4 * * *")
    assert "studio_backups.W023" in stale
    assert "earlier version of the daily backup job" in stale
    assert "crontab add --verbosity 0" in stale
    removed = project.manage("crontab", "remove", STUDIO_TEST_CRONTAB=str(wrapper))
    assert removed.returncode == 0, removed.stderr
    missing = deploy_warnings(project, wrapper)
    assert "studio_backups.W023" in missing
    assert "is not in this machine's crontab" in missing


def test_nothing_to_compare_without_a_crontab_program(settings: SettingsWrapper) -> None:
    # Set through the fixture first, so that the job start-up adds is taken away again.
    settings.CRONJOBS = []
    install_apps(settings, "django_crontab")
    assert cron.is_scheduled()
    settings.CRONTAB_EXECUTABLE = "/nonexistent/crontab"
    assert cron.installed() is None
    settings.CRONJOBS = []
    assert cron.installed() is None


def test_the_daily_job_records_settings_that_stop_it(
    studio_db: StudioDB, settings: SettingsWrapper, tmp_path: Path
) -> None:
    state_file = tmp_path / "state.json"
    settings.STUDIO_BACKUPS = {
        "DATABASE": "studio",
        "MAX_BACKUPS": 0,
        "STATE_FILE": str(state_file),
    }
    assert cron.daily_backup() is None
    reason = state.read(state_file)[state.LAST_FAILURE_REASON]
    assert "MAX_BACKUPS" in reason
    settings.STUDIO_BACKUPS = {"DATABASE": "studio", "MAX_BACKUPS": 0}
    assert cron.daily_backup() is None
    assert "MAX_BACKUPS" in state.read(studio_db.state_file)[state.LAST_FAILURE_REASON]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def get(url: str) -> float:
    started = time.monotonic()
    with urllib.request.urlopen(url, timeout=30) as response:
        response.read()
    return time.monotonic() - started


def first_answer(url: str, timeout: float = 30.0) -> float:
    """How long the first request that the starting server answers took."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return get(url)
        except urllib.error.URLError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def wait_for(condition: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.05)


def test_backup_on_startup_runs_in_the_background_of_the_first_request(
    project: Project,
) -> None:
    for command in (["migrate", "--no-input"], ["check"]):
        result = project.manage(*command, STUDIO_TEST_BACKUP_ON_STARTUP="1")
        assert result.returncode == 0, result.stderr
    assert project.backup_files() == []

    archive.ensure_directory(project.backups)
    port = free_port()
    url = f"http://127.0.0.1:{port}/admin/login/"
    log = project.log.open("w")
    server = subprocess.Popen(
        [sys.executable, str(MANAGE), "runserver", f"127.0.0.1:{port}", "--noreload"],
        env=project.env(STUDIO_TEST_BACKUP_ON_STARTUP="1"),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        # The backup folder's lock, held here, keeps the start-up backup waiting.
        with locking.exclusive(project.backups / locking.LOCK_NAME, 0):
            first = first_answer(url)
            # Answered while the backup it started still waits for the lock; a backup made
            # in the request would have held it up to LOCK_TIMEOUT (120 s).
            assert first < 10.0
            time.sleep(0.3)
            assert project.backup_files() == []
        wait_for(lambda: len(project.backup_files()) == 1)
        get(url)
        time.sleep(0.5)
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
    [backup] = project.backup_files()
    assert backup.kind == "daily"
    output = project.log.read_text()
    assert output.count("Backed up") == 1
    assert "already exists" not in output


# The job and its scheduling, in this process -------------------------------------------


def test_daily_backup_makes_one_backup_a_day(studio_db: StudioDB) -> None:
    path = cron.daily_backup()

    assert path is not None
    assert [b.path for b in services.backups()] == [path]
    assert services.backups()[0].kind == "daily"
    assert cron.daily_backup() is None
    assert len(services.backups()) == 1


def test_daily_backup_that_fails_is_logged_recorded_and_signalled(
    studio_db: StudioDB, failures: list[dict[str, Any]], caplog: pytest.LogCaptureFixture
) -> None:
    studio_db.path.write_bytes(b"this is not a SQLite database" * 10)

    assert cron.daily_backup() is None

    failure = services.last_failure()
    assert failure is not None
    assert "not a SQLite database" in failure.reason
    assert services.last_backup_at() is None
    assert failures == [{"kind": "daily", "reason": failure.reason, "using": "studio"}]
    assert ("django_studio_backups", logging.ERROR, failure.reason) in caplog.record_tuples


def test_a_failing_receiver_does_not_fail_the_daily_backup(
    studio_db: StudioDB, failures: list[dict[str, Any]], caplog: pytest.LogCaptureFixture
) -> None:
    def mail_the_owner(sender: object, **kwargs: Any) -> None:
        raise ConnectionRefusedError("the mail server is down")

    signals.backup_created.connect(mail_the_owner, dispatch_uid="test_cron.mail")
    try:
        path = cron.daily_backup()
    finally:
        signals.backup_created.disconnect(dispatch_uid="test_cron.mail")
    assert path is not None
    assert [b.path for b in services.backups()] == [path]
    assert state.LAST_FAILURE_REASON not in state.read(studio_db.state_file)
    assert failures == []
    logged = [r for r in caplog.records if r.message.startswith("A receiver")]
    assert logged
    assert all(r.exc_info is not None for r in logged)


def test_daily_backup_records_unexpected_errors(
    studio_db: StudioDB,
    failures: list[dict[str, Any]],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(**kwargs: Any) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(services, "backup_if_needed", broken)
    assert cron.daily_backup() is None
    reason = "The daily backup failed unexpectedly: RuntimeError('a bug')"
    assert state.read(studio_db.state_file)[state.LAST_FAILURE_REASON] == reason
    assert [f["reason"] for f in failures] == [reason]
    [logged] = [r for r in caplog.records if r.message == "The daily backup failed unexpectedly"]
    assert logged.exc_info is not None  # with its traceback


def test_daily_backup_without_usable_settings(
    studio_db: StudioDB,
    settings: SettingsWrapper,
    failures: list[dict[str, Any]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings.STUDIO_BACKUPS = {"DATABASE": "nowhere"}

    assert cron.daily_backup() is None

    [failure] = failures
    assert failure["using"] == "nowhere"
    assert "'nowhere', which is not in DATABASES" in failure["reason"]
    assert f"The daily backup cannot run: {failure['reason']}" in caplog.messages


def install_apps(settings: SettingsWrapper, *extra: str) -> None:
    # Changing INSTALLED_APPS repopulates the app registry, which runs every ready() again.
    settings.INSTALLED_APPS = [*settings.INSTALLED_APPS, *extra]


def cronjobs() -> object:
    return getattr(django_settings, "CRONJOBS", None)


def scheduling_warnings() -> list[str]:
    return [m.id for m in checks.check_cron_job() if m.id]


def test_the_job_is_added_at_start_up(settings: SettingsWrapper) -> None:
    settings.CRONJOBS = [("*/5 * * * *", "studio.cron.reminders")]
    install_apps(settings, "django_crontab")

    assert cronjobs() == [
        ("*/5 * * * *", "studio.cron.reminders"),
        ("0 3 * * *", "django_studio_backups.cron.daily_backup", "--skip-checks"),
    ]
    assert scheduling_warnings() == []


def test_the_job_is_added_at_the_configured_time(settings: SettingsWrapper) -> None:
    settings.STUDIO_BACKUPS = {"CRON_SCHEDULE": "30 23 * * mon-sat"}
    install_apps(settings, "django_crontab")

    assert cronjobs() == [("30 23 * * mon-sat", cron.JOB, cron.SKIP_CHECKS)]


def test_a_job_the_project_lists_is_kept(settings: SettingsWrapper) -> None:
    settings.CRONJOBS = [["15 1 * * *", cron.JOB, ">> /var/log/backups.log"]]
    install_apps(settings, "django_crontab")

    assert cronjobs() == [["15 1 * * *", cron.JOB, ">> /var/log/backups.log"]]
    assert scheduling_warnings() == []


@pytest.mark.parametrize("schedule", [None, "every day", "@daily"])
def test_no_job_warns(settings: SettingsWrapper, schedule: str | None) -> None:
    settings.STUDIO_BACKUPS = {"CRON_SCHEDULE": schedule}
    install_apps(settings, "django_crontab")

    assert cronjobs() is None
    assert scheduling_warnings() == ["studio_backups.W020"]


def test_no_job_without_django_crontab(settings: SettingsWrapper) -> None:
    install_apps(settings)

    assert cronjobs() is None
    assert scheduling_warnings() == []


@pytest.mark.parametrize(
    "schedule", ["0 3 * * *", "*/15 * * * *", "0 3 1-7,15 jan,jul mon", "0\t3 * * *"]
)
def test_good_schedules(studio_db: StudioDB, settings: SettingsWrapper, schedule: str) -> None:
    settings.STUDIO_BACKUPS = {"DATABASE": "studio", "CRON_SCHEDULE": schedule}
    assert checks.check_settings() == []


@pytest.mark.parametrize(
    "schedule", ["@daily", "0 3 * *", "0 3 * * * *", " 0 3 * * *", "0 3 * * 1 # x", "", 3]
)
def test_bad_schedules(studio_db: StudioDB, settings: SettingsWrapper, schedule: object) -> None:
    settings.STUDIO_BACKUPS = {"DATABASE": "studio", "CRON_SCHEDULE": schedule}
    [error] = checks.check_settings()
    assert error.id == "studio_backups.E020"
    # Only the cron job is affected: a backup can still be made.
    assert services.create_backup_now() is not None


def test_bad_backup_on_startup(studio_db: StudioDB, settings: SettingsWrapper) -> None:
    settings.STUDIO_BACKUPS = {"DATABASE": "studio", "BACKUP_ON_STARTUP": "yes"}
    assert [m.id for m in checks.check_settings()] == ["studio_backups.E021"]
    assert services.create_backup_now() is not None


# The stale-backup check ------------------------------------------------------------------


def backup_warnings() -> list[tuple[str | None, str, str | None]]:
    return [(m.id, m.msg, m.hint) for m in checks.check_last_backup()]


def test_a_new_project_gets_no_warning(studio_db: StudioDB) -> None:
    assert backup_warnings() == []
    call_command("check", stdout=io.StringIO())


def test_a_recent_backup_gets_no_warning(studio_db: StudioDB) -> None:
    services.backup_now()
    with time_machine.travel(timedelta(days=2) - timedelta(minutes=1)):
        assert backup_warnings() == []


def test_a_stale_backup_warns(studio_db: StudioDB) -> None:
    services.backup_now()
    made = services.get_last_backup_display()
    with time_machine.travel(timedelta(days=3, hours=1)):
        [(id, message, hint)] = backup_warnings()
    assert id == "studio_backups.W021"
    assert message == f"The last scheduled or manual backup is 3 days old (made {made})."
    assert hint is not None
    assert "Check that the daily job runs" in hint


def test_a_stale_backup_warns_with_the_last_failure(studio_db: StudioDB) -> None:
    services.backup_now()
    with time_machine.travel(timedelta(days=3)):
        studio_db.path.write_bytes(b"this is not a SQLite database" * 10)
        cron.daily_backup()
        [(id, _, hint)] = backup_warnings()
        failure = services.last_failure()
    assert id == "studio_backups.W021"
    assert failure is not None
    assert hint == f"The last attempt failed at {failure.at:%Y-%m-%d %H:%M}: {failure.reason}"


def test_no_backup_ever_and_a_failure_warns(studio_db: StudioDB) -> None:
    studio_db.path.write_bytes(b"this is not a SQLite database" * 10)
    cron.daily_backup()
    [(id, message, hint)] = backup_warnings()
    assert id == "studio_backups.W022"
    assert message == "No scheduled or manual backup has been made yet."
    assert hint is not None
    assert "not a SQLite database" in hint


def test_no_stale_warning_without_usable_settings(
    studio_db: StudioDB, settings: SettingsWrapper, tmp_path: Path
) -> None:
    settings.STUDIO_BACKUPS = {"DATABASE": "nowhere"}
    assert backup_warnings() == []
    not_a_folder = tmp_path / "file"
    not_a_folder.touch()
    settings.STUDIO_BACKUPS = {"DATABASE": "studio", "DIRECTORY": str(not_a_folder)}
    assert backup_warnings() == []


# BACKUP_ON_STARTUP, in this process ------------------------------------------------------


@pytest.fixture
def armed(studio_db: StudioDB, settings: SettingsWrapper) -> Iterator[StudioDB]:
    settings.STUDIO_BACKUPS = {**settings.STUDIO_BACKUPS, "BACKUP_ON_STARTUP": True}
    startup.arm()
    yield studio_db
    request_started.disconnect(dispatch_uid=startup.DISPATCH_UID)


def still_armed() -> bool:
    if not request_started.disconnect(dispatch_uid=startup.DISPATCH_UID):
        return False
    startup.arm()
    return True


def serve_one_request() -> float:
    """A request through Django's WSGI handler, as gunicorn or runserver make; its duration."""
    started = time.monotonic()
    environ = RequestFactory().get("/admin/login/").environ
    response = WSGIHandler()(environ, lambda status, headers: None)
    b"".join(response)
    response.close()
    return time.monotonic() - started


def startup_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "studio-backups-startup"]


def test_not_armed_by_default(studio_db: StudioDB) -> None:
    startup.arm()
    assert not still_armed()


def test_test_client_requests_do_not_count(armed: StudioDB, client: Client) -> None:
    client.get("/admin/login/")
    assert startup_threads() == []
    assert services.backups() == []
    assert still_armed()


# The handler's request_started closes stale connections, a database access.
@pytest.mark.django_db
def test_live_servers_of_a_test_run_do_not_count(armed: StudioDB) -> None:
    serve_one_request()
    assert startup_threads() == []
    assert services.backups() == []
    assert still_armed()


# The handler's request_started closes stale connections, a database access.
@pytest.mark.django_db
def test_the_first_request_to_a_server_starts_the_backup(
    armed: StudioDB, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Outside a test run, django.core.mail has no outbox.
    monkeypatch.delattr(mail, "outbox")
    archive.ensure_directory(armed.backups)
    with locking.exclusive(armed.backups / locking.LOCK_NAME, 0):
        # Answered while the backup it started waits for the lock held here; a backup made
        # in the request would have held it up to LOCK_TIMEOUT (120 s).
        assert serve_one_request() < 10.0
        [thread] = startup_threads()
        assert thread.daemon
        assert services.backups() == []
    thread.join(timeout=30)
    [backup] = services.backups()
    assert backup.kind == "daily"
    serve_one_request()
    assert startup_threads() == []
    assert not still_armed()


def test_a_failed_daily_job_reaches_stderr_without_logging_settings(
    studio_db: StudioDB, tmp_path: Path
) -> None:
    # tests.settings has no LOGGING, as a stock project does not.
    with mounted_tmpfs(tmp_path / "ro", "ro,size=64k") as readonly:
        ran = subprocess.run(
            [
                sys.executable,
                "-c",
                "import django; django.setup(); "
                "from django_studio_backups import cron; cron.daily_backup()",
            ],
            env=command_env(studio_db, DIRECTORY=str(readonly)),
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert ran.returncode == 0
    assert "Read-only file system" in ran.stderr
