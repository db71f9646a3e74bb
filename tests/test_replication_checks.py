"""A person hears of replication that stopped or fell behind: system checks, the daily job,
the watcher in `manage.py replicate`, and list_backups; settings mistakes are checks."""

from __future__ import annotations

import contextlib
import io
import re
import time
from pathlib import Path
from typing import Any

import pytest
from django.core import mail
from django.core.management import call_command
from pytest_django.fixtures import Settings as SettingsWrapper

from django_studio_backups import checks, conf, replication, services
from django_studio_backups.replication_conf import get_replication_config
from tests.conftest import StudioDB, mounted_tmpfs
from tests.notify_servers import SMTPServer
from tests.replication_helpers import add_one_by_one, replicating


def ids(found: list[Any]) -> list[str | None]:
    return [m.id for m in found]


@pytest.mark.parametrize(
    ("value", "check_id", "message"),
    [
        ("file:///r", "studio_backups.E060", "must be a dict or None"),
        ({"URL": "file:///r", "SYNC": 1}, "studio_backups.E060", "Unknown .* keys: SYNC"),
        ({}, "studio_backups.E061", "must be a replica URL, not None"),
        ({"URL": "ftp://h/r"}, "studio_backups.E061", "scheme is not one of Litestream's"),
        ({"URL": "file://relative/r"}, "studio_backups.E061", "needs an absolute path"),
        ({"URL": "s3:///path"}, "studio_backups.E061", "names no bucket or host"),
        ({"URL": "file:///r", "OPTIONS": {"url": "x"}}, "studio_backups.E062", "OPTIONS"),
        ({"URL": "file:///r", "OPTIONS": {"endpoint": ["x"]}}, "studio_backups.E062", "OPTIONS"),
        ({"URL": "file:///r", "SYNC_INTERVAL": 0}, "studio_backups.E062", "'SYNC_INTERVAL'"),
        ({"URL": "file:///r", "LAG_WARNING": "1m"}, "studio_backups.E062", "'LAG_WARNING'"),
        ({"URL": "file:///r", "BINARY": 3}, "studio_backups.E062", "'BINARY'"),
    ],
)
def test_setting_mistakes_are_system_checks(
    studio_db: StudioDB, settings: SettingsWrapper, value: object, check_id: str, message: str
) -> None:
    settings.STUDIO_BACKUPS = {**settings.STUDIO_BACKUPS, "REPLICATION": value}
    found = [m for m in checks.check_settings() if m.id and m.id.startswith("studio_backups.E06")]
    assert ids(found) == [check_id]
    assert re.search(message, found[0].msg), found[0].msg
    # They stop replication, never a backup.
    assert services.backup_now().path.exists()
    if check_id != "studio_backups.E060" or isinstance(value, dict):
        with pytest.raises(Exception, match=re.escape(found[0].msg)):
            get_replication_config()


def test_good_settings_make_litestreams_configuration(
    studio_db: StudioDB, settings: SettingsWrapper, tmp_path: Path
) -> None:
    settings.STUDIO_BACKUPS = {
        **settings.STUDIO_BACKUPS,
        "REPLICATION": {
            "URL": "s3://bucket/studio",
            "OPTIONS": {"endpoint": "http://127.0.0.1:9000", "force-path-style": True},
            "RETENTION_HOURS": 48,
        },
    }
    assert checks.check_settings() == []
    replica = get_replication_config()
    assert replica is not None
    text = replication.config_text(conf.get_config(), replica)
    assert '"url": "s3://bucket/studio"' in text
    assert '"force-path-style": true' in text
    assert '"sync-interval": "1s"' in text
    assert '"l0-retention": "259200s"' in text  # RETENTION_HOURS + SNAPSHOT_HOURS
    # Another database is not replicated.
    assert get_replication_config("default") is None


def test_without_litestream_the_check_is_an_error(
    studio_db: StudioDB, settings: SettingsWrapper, tmp_path: Path
) -> None:
    settings.STUDIO_BACKUPS = {
        **settings.STUDIO_BACKUPS,
        "REPLICATION": {"URL": f"file://{tmp_path}/r", "BINARY": str(tmp_path / "none")},
    }
    [error] = checks.check_replication()
    assert error.id == "studio_backups.E063"
    assert "is not an executable file" in error.msg


def test_a_replicate_that_is_not_running_warns_where_a_schedule_runs(
    studio_db: StudioDB, settings: SettingsWrapper, tmp_path: Path
) -> None:
    settings.STUDIO_BACKUPS = {
        **settings.STUDIO_BACKUPS,
        "REPLICATION": {"URL": f"file://{tmp_path}/r"},
    }
    [warning] = checks.check_replication()
    assert warning.id == "studio_backups.W060"
    settings.DEBUG = True
    assert checks.check_replication() == []
    # The deploy check leaves a replicate that is not running to W060.
    assert checks.check_replication_lag() == []


def test_the_daily_job_reports_a_replicate_that_stopped(
    studio_db: StudioDB, settings: SettingsWrapper, tmp_path: Path, failures: list[Any]
) -> None:
    settings.ADMINS = [("Studio", "admin@studio.test")]
    settings.STUDIO_BACKUPS = {
        **settings.STUDIO_BACKUPS,
        "REPLICATION": {"URL": f"file://{tmp_path}/r"},
    }
    services.backup_if_needed(daily_job=True)
    deadline = time.monotonic() + 10
    while not mail.outbox:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    [message] = mail.outbox
    assert message.subject.endswith(f"Replication failed on {message.subject.split()[-1]}")
    assert "`manage.py replicate` is not running" in message.body
    assert [f["kind"] for f in failures] == ["replication"]


def test_bad_replication_settings_reach_a_person_from_the_daily_job(
    studio_db: StudioDB, settings: SettingsWrapper, failures: list[Any]
) -> None:
    settings.STUDIO_BACKUPS = {**settings.STUDIO_BACKUPS, "REPLICATION": {"URL": "ftp://x/y"}}
    # The backup is made all the same.
    assert services.backup_if_needed(daily_job=True) is not None
    [failure] = failures
    assert failure["kind"] == "replication"
    assert failure["reason"].startswith("Replication cannot run: STUDIO_BACKUPS['REPLICATION']")


def test_list_backups_shows_the_window_and_the_lag(
    studio_db: StudioDB, settings: SettingsWrapper, tmp_path: Path, failures: list[Any]
) -> None:
    replica = {"URL": f"file://{tmp_path / 'replica'}", "SYNC_INTERVAL": 0.5}
    settings.STUDIO_BACKUPS = {**settings.STUDIO_BACKUPS, "REPLICATION": replica}
    out, err = io.StringIO(), io.StringIO()
    call_command("list_backups", stdout=out, stderr=err)
    assert "Point-in-time: the replica holds nothing yet." in out.getvalue()
    assert "`manage.py replicate` is not running" in err.getvalue()
    with replicating(studio_db, settings, replica, {}):
        out = io.StringIO()
        call_command("list_backups", stdout=out)
        text = out.getvalue()
        assert "Point-in-time: any moment from " in text
        assert "seconds ago can be restored (restore_backup --at TIME)." in text
        assert "Replication: running, up to date." in text
        assert checks.check_replication() == []
        assert checks.check_replication_lag() == []
        # The daily job finds nothing to report either.
        services.backup_if_needed(daily_job=True)
        assert failures == []


def test_a_replica_that_falls_behind_is_reported(
    studio_db: StudioDB, settings: SettingsWrapper, tmp_path: Path, smtp_server: SMTPServer
) -> None:
    # The replica's disk fills up: Litestream goes on reading commits, and cannot store
    # them. (Root only: a tmpfs is mounted.)
    with mounted_tmpfs(tmp_path / "small", "size=8m") as small:
        replica = {"URL": f"file://{small}/replica", "SYNC_INTERVAL": 0.5, "LAG_WARNING": 2}
        with replicating(studio_db, settings, replica, smtp_server.env()) as replicator:
            fill(small)
            add_one_by_one(studio_db, *[f"l{i}" for i in range(20)])
            deadline = time.monotonic() + 60
            while True:
                found = services.replication_status()
                if found.lag is not None and found.lag > 2:
                    break
                assert time.monotonic() < deadline, found
                time.sleep(0.5)
            [warning] = checks.check_replication_lag()
            assert warning.id == "studio_backups.W061"
            assert "s behind (more than LAG_WARNING, 2 s)" in warning.msg
            out = io.StringIO()
            call_command("list_backups", stdout=out)
            assert "s behind." in out.getvalue()
            # The watcher in `manage.py replicate` mailed the ADMINS, once.
            while not smtp_server.messages:
                assert time.monotonic() < deadline, "no mail about the lag"
                time.sleep(0.2)
            [message] = smtp_server.messages
            assert "Replication failed on " in message["Subject"]
            assert "s behind (more than LAG_WARNING, 2 s)" in message.get_content()
            assert replicator.process is not None
            assert replicator.process.poll() is None


def test_the_lag_counts_from_the_oldest_commit_the_replica_lacks(
    studio_db: StudioDB, settings: SettingsWrapper, tmp_path: Path
) -> None:
    # Litestream uploads at most every SYNC_INTERVAL: a commit made after a quiet while waits
    # for the next upload. The replica lacks it for seconds, not for the quiet while.
    replica = {"URL": f"file://{tmp_path / 'replica'}", "SYNC_INTERVAL": 60}
    with replicating(studio_db, settings, replica, {}):
        time.sleep(8)
        committed = time.monotonic()
        studio_db.add_clients("late")
        while (found := services.replication_status()).lag == 0:
            assert time.monotonic() < committed + 20, "Litestream did not take the commit in"
            time.sleep(0.2)
        assert found.lag is not None
        assert 0 < found.lag <= time.monotonic() - committed + 1
        assert services.replication_trouble() is None


def fill(folder: Path) -> None:
    """Fill the file system of ``folder`` to the last byte."""
    with open(folder / "ballast", "wb", buffering=0) as ballast, contextlib.suppress(OSError):
        while True:
            ballast.write(b"\0" * 4096)
