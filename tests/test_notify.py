"""A person hears of every failure: on stderr, by mail to ADMINS, and through the heartbeat
monitor, each tried against a real server on 127.0.0.1 (aiosmtpd, an HTTP monitor)."""

from __future__ import annotations

import errno
import json
import socket
import sqlite3
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from django.core import mail
from django.utils import timezone
from pytest_django.fixtures import Settings as SettingsWrapper

from django_studio_backups import (
    background,
    cron,
    engine,
    exceptions,
    locking,
    notify,
    services,
    state,
)
from django_studio_backups.exceptions import BackupFailed

from .conftest import StudioDB, run_manage
from .notify_servers import ADMIN_EMAIL, Monitor, SMTPServer, silent_server, trickling_server
from .offsite_helpers import folder_storage

HOST = socket.gethostname()


def manage(
    db: StudioDB,
    *args: str,
    smtp: SMTPServer,
    monitor: Monitor | str,
    storages: dict[str, object] | None = None,
    **backups: object,
) -> subprocess.CompletedProcess[str]:
    """A command that mails through ``smtp`` and pings ``monitor`` (or that URL)."""
    url = monitor.url if isinstance(monitor, Monitor) else monitor
    env = smtp.env()
    if storages:
        env["STUDIO_TEST_STORAGES"] = json.dumps(storages)
    options: dict[str, Any] = {**backups, "HEARTBEAT_URL": url}
    return run_manage(db, *args, env=env, **options)


def blocked_folder(tmp_path: Path) -> Path:
    """A backup folder that cannot exist: its parent is a file."""
    blocker = tmp_path / "unplugged"
    blocker.write_text("not a folder")
    return blocker / "backups"


def assert_told(
    reason: str,
    subject: str,
    ran: subprocess.CompletedProcess[str],
    smtp: SMTPServer,
    monitor: Monitor,
) -> None:
    """The failure reached stderr, the ADMINS' mailbox and the monitor, with its reason."""
    assert reason in ran.stderr
    assert "Traceback" not in ran.stderr
    # The process waited for its notifications before it ended.
    [message] = smtp.messages
    assert message["Subject"].endswith(f"{subject} on {HOST}")
    assert message["To"] == ADMIN_EMAIL
    assert reason in message.get_content()
    [ping] = monitor.pings
    assert (ping.method, ping.path) == ("POST", "/ping/studio-backups/fail")
    assert ping.body == reason


def test_a_failed_daily_backup(
    studio_db: StudioDB, tmp_path: Path, smtp_server: SMTPServer, monitor: Monitor
) -> None:
    folder = blocked_folder(tmp_path)
    ran = manage(
        studio_db, "backup_if_needed", smtp=smtp_server, monitor=monitor, DIRECTORY=str(folder)
    )
    assert ran.returncode == 1
    reason = state.read(studio_db.state_file)[state.LAST_FAILURE_REASON]
    assert "Not a directory" in reason
    assert_told(reason, "Backup failed", ran, smtp_server, monitor)
    assert "The daily backup of" in smtp_server.messages[0].get_content()


def test_a_failed_manual_backup(
    studio_db: StudioDB, tmp_path: Path, smtp_server: SMTPServer, monitor: Monitor
) -> None:
    folder = blocked_folder(tmp_path)
    ran = manage(studio_db, "backup_now", smtp=smtp_server, monitor=monitor, DIRECTORY=str(folder))
    assert ran.returncode == 1
    recorded = state.read(studio_db.state_file)
    reason = recorded[state.LAST_FAILURE_REASON]
    assert_told(reason, "Backup failed", ran, smtp_server, monitor)
    # A file where the folder should be: a folder problem, for the admin's advice.
    assert recorded[state.LAST_FAILURE_PROBLEM] == "folder"
    # Printed once: as the command's error, not again as a log line.
    assert ran.stderr.count(reason) == 1


# The daily job's too: its backup is made, but it does not tell the monitor all is well.
@pytest.mark.parametrize("command", ["backup_now", "backup_if_needed"])
def test_a_failed_off_site_copy(
    studio_db: StudioDB, tmp_path: Path, smtp_server: SMTPServer, monitor: Monitor, command: str
) -> None:
    storage = folder_storage(blocked_folder(tmp_path) / "drive")
    ran = manage(
        studio_db,
        command,
        smtp=smtp_server,
        monitor=monitor,
        storages={"drive": storage},
        OFFSITE={"STORAGE": "drive"},
    )
    # The local backup stands; the copy's failure is told.
    assert ran.returncode == 0, ran.stderr
    [backup] = services.backups()
    reason = state.read(studio_db.state_file)[state.OFFSITE_ERROR]
    assert_told(reason, "Off-site copy failed", ran, smtp_server, monitor)
    assert services.offsite_status().of(backup.name) == "failed"


def test_a_failed_restore(studio_db: StudioDB, smtp_server: SMTPServer, monitor: Monitor) -> None:
    backup = services.backup_now()
    # A manifest whose checksum the file does not match: the file changed after the backup.
    manifest = json.loads(backup.manifest_path.read_text())
    manifest["sha256"] = "0" * 64
    backup.manifest_path.write_text(json.dumps(manifest))
    ran = manage(
        studio_db, "restore_backup", backup.name, "--no-input", smtp=smtp_server, monitor=monitor
    )
    assert ran.returncode == 1
    [line] = [x for x in ran.stderr.splitlines() if x.startswith("CommandError: ")]
    reason = line.removeprefix("CommandError: ")
    assert reason == (
        f"{backup.name} cannot be restored: it does not match the SHA-256 in its manifest, "
        "so it changed after it was made"
    )
    assert_told(reason, "Restore failed", ran, smtp_server, monitor)


def test_a_daily_backup_that_succeeds_pings_the_monitor(
    studio_db: StudioDB, smtp_server: SMTPServer, monitor: Monitor
) -> None:
    made = manage(studio_db, "backup_if_needed", smtp=smtp_server, monitor=monitor)
    assert made.returncode == 0, made.stderr
    # The day's backup exists: the job run again made none, and says all is well again.
    again = manage(studio_db, "backup_if_needed", smtp=smtp_server, monitor=monitor)
    assert again.returncode == 0, again.stderr
    assert [(p.method, p.path) for p in monitor.pings] == [("GET", "/ping/studio-backups")] * 2
    assert smtp_server.messages == []


def test_a_manual_backup_does_not_ping(
    studio_db: StudioDB, smtp_server: SMTPServer, monitor: Monitor
) -> None:
    # Only the daily job says "today's backup is made": a monitor then notices a day
    # without it, even one with backups by hand.
    made = manage(studio_db, "backup_now", smtp=smtp_server, monitor=monitor)
    assert made.returncode == 0, made.stderr
    assert monitor.pings == []


def test_a_monitor_that_never_answers_delays_nothing_much(
    studio_db: StudioDB, smtp_server: SMTPServer
) -> None:
    with silent_server() as port:
        started = time.monotonic()
        ran = manage(
            studio_db,
            "backup_if_needed",
            smtp=smtp_server,
            monitor=f"http://127.0.0.1:{port}/ping",
        )
        took = time.monotonic() - started
    assert ran.returncode == 0, ran.stderr
    assert len(services.backups()) == 1
    # The process ends once the request times out, and says so.
    assert took < notify.HEARTBEAT_TIMEOUT + 15
    assert "Could not reach the heartbeat monitor at http://127.0.0.1/…" in ran.stderr


def test_a_monitor_that_trickles_cannot_keep_the_process_alive(
    studio_db: StudioDB, smtp_server: SMTPServer
) -> None:
    # A byte every two seconds: no socket timeout ever fires.
    with trickling_server() as port:
        started = time.monotonic()
        ran = manage(
            studio_db, "backup_if_needed", smtp=smtp_server, monitor=f"http://127.0.0.1:{port}/"
        )
        took = time.monotonic() - started
    assert ran.returncode == 0, ran.stderr
    assert took < background.EXIT_WAIT + 15
    assert "Gave up waiting for notifications after 30 s" in ran.stderr


def test_a_dead_mail_server_fails_nothing(studio_db: StudioDB, tmp_path: Path) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        closed_port = str(unused.getsockname()[1])
    ran = run_manage(
        studio_db,
        "backup_now",
        env={"STUDIO_TEST_SMTP_PORT": closed_port},
        DIRECTORY=str(blocked_folder(tmp_path)),
    )
    assert ran.returncode == 1
    assert "Could not mail the ADMINS about the failure: ConnectionRefusedError" in ran.stderr


# In the test process: Django's locmem mail backend --------------------------------------


def test_every_failure_is_mailed_to_the_admins(
    studio_db: StudioDB, settings: SettingsWrapper, tmp_path: Path
) -> None:
    settings.ADMINS = [("Studio owner", ADMIN_EMAIL)]
    settings.STUDIO_BACKUPS = {
        **settings.STUDIO_BACKUPS,
        "DIRECTORY": str(blocked_folder(tmp_path)),
    }
    with pytest.raises(BackupFailed) as failed:
        services.backup_now(kind="pre-migrate")
    assert background.wait(30)
    [message] = mail.outbox
    assert message.subject == f"{settings.EMAIL_SUBJECT_PREFIX}Backup failed on {HOST}"
    assert str(failed.value) in message.body
    assert f"The backup before migrate of {studio_db.path} failed on {HOST}" in message.body


def test_no_mail_without_admins_or_when_turned_off(
    studio_db: StudioDB, settings: SettingsWrapper, tmp_path: Path
) -> None:
    settings.ADMINS = []
    settings.STUDIO_BACKUPS = {
        **settings.STUDIO_BACKUPS,
        "DIRECTORY": str(blocked_folder(tmp_path)),
    }
    with pytest.raises(BackupFailed):
        services.backup_now()
    settings.ADMINS = [("Studio owner", ADMIN_EMAIL)]
    settings.STUDIO_BACKUPS = {**settings.STUDIO_BACKUPS, "NOTIFY_ADMINS": False}
    with pytest.raises(BackupFailed):
        services.backup_now()
    assert background.wait(30)
    assert mail.outbox == []


def test_the_fail_url_keeps_the_query() -> None:
    assert notify.fail_url("https://hc-ping.com/abc") == "https://hc-ping.com/abc/fail"
    assert notify.fail_url("https://hc-ping.com/abc/") == "https://hc-ping.com/abc/fail"
    assert notify.fail_url("https://m.test/push?x=1") == "https://m.test/push/fail?x=1"


def test_sync_offsite_tells_every_failed_copy_once(
    studio_db: StudioDB, tmp_path: Path, smtp_server: SMTPServer, monitor: Monitor
) -> None:
    changed = [services.backup_now(), services.backup_now()]
    for backup in changed:
        with backup.path.open("r+b") as f:
            f.seek(200)
            f.write(b"\xff")
    ran = manage(
        studio_db,
        "sync_offsite",
        smtp=smtp_server,
        monitor=monitor,
        storages={"drive": folder_storage(tmp_path / "drive")},
        OFFSITE={"STORAGE": "drive"},
    )
    assert ran.returncode == 1
    reasons = [f"{b.name} does not match the SHA-256 in its manifest" for b in changed]
    for reason in reasons:
        assert ran.stderr.count(reason) == 1, ran.stderr
    # One mail and one ping, naming both.
    [message] = smtp_server.messages
    [ping] = monitor.pings
    for reason in reasons:
        assert reason in message.get_content()
        assert reason in ping.body


def test_a_backup_damaged_after_it_was_made_is_told_and_made_again(
    studio_db: StudioDB, settings: SettingsWrapper
) -> None:
    settings.ADMINS = [("Studio owner", ADMIN_EMAIL)]
    # Today's backup, made by hand (quick check only), then damaged on the disk.
    manual = services.backup_now()
    with manual.path.open("r+b") as f:
        f.seek(4096)
        f.write(b"\xff" * 64)
    daily = services.backup_if_needed()
    assert daily is not None
    assert daily.kind == "daily"
    assert daily.verified
    assert background.wait(30)
    [message] = mail.outbox
    assert f"{manual.name} was damaged after it was made" in message.body
    # The day has a good backup now: the failure is not the last word.
    assert services.last_failure() is None


def test_only_the_daily_job_reports_success(
    studio_db: StudioDB,
    settings: SettingsWrapper,
    monitor: Monitor,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings.STUDIO_BACKUPS = {**settings.STUDIO_BACKUPS, "HEARTBEAT_URL": monitor.url}
    # Under Django's test environment (mail.outbox), nothing reaches the monitor.
    assert cron.daily_backup() is not None
    assert background.wait(30)
    assert monitor.pings == []
    # Outside it, as on a server: a backup at start-up says nothing; the daily job does.
    monkeypatch.delattr(mail, "outbox")
    assert cron.daily_backup(daily_job=False) is None
    assert background.wait(30)
    assert monitor.pings == []
    assert cron.daily_backup() is None
    assert background.wait(30)
    assert [(p.method, p.path) for p in monitor.pings] == [("GET", "/ping/studio-backups")]


# The parts -----------------------------------------------------------------------------


def test_background_work_that_raises_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    def broken() -> None:
        raise RuntimeError("a bug")

    background.start("broken work", broken, wait_at_exit=True)
    assert background.wait(10)
    assert "broken work failed" in caplog.text
    assert "RuntimeError: a bug" in caplog.text


def test_the_exit_waits_for_notifications_only_so_long(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = threading.Event()
    background.start("a slow upload", release.wait, 30, wait_at_exit=False)
    background.start("a slow mail", release.wait, 30, wait_at_exit=True)
    monkeypatch.setattr(background, "EXIT_WAIT", 0.2)
    started = time.monotonic()
    background._at_exit()
    assert time.monotonic() - started < 5
    assert "Gave up waiting for notifications after 0.2 s" in caplog.text
    assert not background.wait(0.1)
    release.set()
    assert background.wait(10)


def test_a_project_email_timeout_is_kept(studio_db: StudioDB, settings: SettingsWrapper) -> None:
    settings.ADMINS = [("Studio owner", ADMIN_EMAIL)]
    settings.EMAIL_TIMEOUT = 5
    notify.failure("manual", "the reason", database=None)
    assert background.wait(10)
    [message] = mail.outbox
    assert message.body.startswith(f"A backup made by hand failed on {HOST} at ")


@pytest.mark.parametrize(
    ("error", "problem"),
    [
        (sqlite3.OperationalError("database is locked"), "busy"),
        (sqlite3.DatabaseError("database or disk is full"), "space"),
        (sqlite3.DatabaseError("database disk image is malformed"), "damaged"),
        (sqlite3.DatabaseError("file is not a database"), "damaged"),
        (OSError(errno.ENOSPC, "No space left on device"), "space"),
        (OSError(errno.EROFS, "Read-only file system"), "folder"),
        (OSError(errno.EIO, "Input/output error"), "other"),
        (locking.LockTimeout("held"), "busy"),
        (None, "other"),
    ],
)
def test_the_kind_of_trouble(error: BaseException | None, problem: str) -> None:
    assert exceptions.problem_of(error) == problem


def test_what_the_system_said_wins_over_what_a_wrapper_says() -> None:
    # A check that failed because the database was busy is no sign of damage.
    wrapper = engine.CheckFailed("backup_x.db failed quick_check")
    wrapper.__cause__ = sqlite3.OperationalError("database is locked")
    assert exceptions.problem_of(wrapper) == "busy"
    assert exceptions.problem_of(engine.CheckFailed("no rows")) == "damaged"
    assert BackupFailed("failed", problem="damaged").problem == "damaged"
    # A chain that loops ends.
    looping = ValueError("a")
    looping.__context__ = ValueError("b")
    looping.__context__.__context__ = looping
    assert exceptions.problem_of(looping) == "other"


@pytest.fixture
def on_a_server(
    settings: SettingsWrapper, monitor: Monitor, monkeypatch: pytest.MonkeyPatch
) -> Monitor:
    """The monitor, reported to as on a server: outside Django's test environment."""
    settings.STUDIO_BACKUPS = {**settings.STUDIO_BACKUPS, "HEARTBEAT_URL": monitor.url}
    monkeypatch.delattr(mail, "outbox")
    return monitor


def test_a_backup_found_bad_by_verify_is_replaced_by_the_daily_job(
    studio_db: StudioDB, on_a_server: Monitor
) -> None:
    monitor = on_a_server
    manual = services.backup_now()
    with manual.path.open("r+b") as f:
        f.seek(4096)
        f.write(b"\xff" * 64)
    assert services.verify(manual.name, full=True) != []  # someone pressed Verify
    daily = services.backup_if_needed(daily_job=True)
    assert daily is not None
    assert daily.verified
    assert background.wait(30)
    assert [(p.method, p.path) for p in monitor.pings] == [("GET", "/ping/studio-backups")]


def test_no_all_is_well_while_the_live_database_is_damaged(
    studio_db: StudioDB, on_a_server: Monitor
) -> None:
    monitor = on_a_server
    assert services.backup_if_needed(daily_job=True) is not None
    state.update(
        studio_db.state_file,
        **{state.LIVE_DAMAGED_AT: state.isoformat(timezone.now()), state.LIVE_DAMAGED_REASON: "x"},
    )
    assert services.backup_if_needed(daily_job=True) is None
    assert background.wait(30)
    assert [(p.method, p.path) for p in monitor.pings] == [("GET", "/ping/studio-backups")]


def test_a_failure_then_a_success_reach_the_monitor_in_that_order(
    studio_db: StudioDB, on_a_server: Monitor
) -> None:
    monitor = on_a_server
    for _ in range(5):
        notify.failure("daily", "first", database=None)
        notify.daily_succeeded()
    assert background.wait(30)
    assert [p.method for p in monitor.pings] == ["POST", "GET"] * 5


def test_notifications_while_the_process_ends_are_sent_at_once(
    studio_db: StudioDB,
    settings: SettingsWrapper,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Python 3.12 refuses new threads at interpreter shutdown.
    def refused(self: threading.Thread) -> None:
        raise RuntimeError("can't create new thread at interpreter shutdown")

    settings.ADMINS = [("Studio owner", ADMIN_EMAIL)]
    monkeypatch.setattr(threading.Thread, "start", refused)
    notify.failure("manual", "the reason", database=None)
    assert len(mail.outbox) == 1  # sent before failure() returned
    background.start("an upload", lambda: None, wait_at_exit=False)
    assert "Not starting an upload: the process is ending" in caplog.text
