"""The daily backup, and the state file that records when the last backup was made."""

from __future__ import annotations

import json
import logging
from datetime import datetime
from pathlib import Path

import pytest
import time_machine
from pytest_django.fixtures import Settings as SettingsWrapper

from django_studio_backups import locking, services, state
from tests.backup_helpers import HERMOSILLO
from tests.conftest import StudioDB, mounted_tmpfs


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
