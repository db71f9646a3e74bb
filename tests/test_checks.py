from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured
from pytest_django.fixtures import Settings as SettingsWrapper

from django_studio_backups import conf
from django_studio_backups.checks import check_journal_mode, check_settings
from tests.conftest import StudioDB, mounted_tmpfs


def ids(settings: SettingsWrapper, **backups: object) -> list[str]:
    settings.STUDIO_BACKUPS = {"DATABASE": "studio", **backups}
    return [message.id for message in check_settings() if message.id]


def test_good_settings_pass(studio_db: StudioDB, settings: SettingsWrapper) -> None:
    assert ids(settings) == []
    config = conf.get_config()
    assert config.database_path == studio_db.path
    assert config.directory == studio_db.backups
    assert config.state_file == studio_db.state_file
    assert config.max_backups == 20
    assert str(config.time_zone) == "America/Hermosillo"


def test_defaults_follow_djangos_time_zone(studio_db: StudioDB, settings: SettingsWrapper) -> None:
    settings.TIME_ZONE = "Europe/Madrid"
    settings.STUDIO_BACKUPS = {"DATABASE": "studio"}
    assert str(conf.get_config().time_zone) == "Europe/Madrid"


def test_explicit_paths(studio_db: StudioDB, settings: SettingsWrapper, tmp_path: Path) -> None:
    settings.STUDIO_BACKUPS = {
        "DATABASE": "studio",
        "DIRECTORY": str(tmp_path / "elsewhere"),
        "STATE_FILE": str(tmp_path / "state.json"),
        "MAX_BACKUPS": 5,
    }
    config = conf.get_config()
    assert config.directory == tmp_path / "elsewhere"
    assert config.state_file == tmp_path / "state.json"
    assert config.max_backups == 5


# Overriding DATABASES is safe here: no connection to "other" is ever opened.
@pytest.mark.filterwarnings("ignore:Overriding setting DATABASES")
@pytest.mark.parametrize(
    ("database", "expected"),
    [
        ({"ENGINE": "django.db.backends.postgresql", "NAME": "studio"}, "studio_backups.E001"),
        ({"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}, "studio_backups.E002"),
        (
            {"ENGINE": "django.db.backends.sqlite3", "NAME": "file:x?mode=memory&cache=shared"},
            "studio_backups.E002",
        ),
        ({"ENGINE": "django.db.backends.sqlite3", "NAME": ""}, "studio_backups.E002"),
    ],
)
def test_database_that_cannot_be_backed_up(
    settings: SettingsWrapper, database: dict[str, str], expected: str
) -> None:
    settings.DATABASES = {**settings.DATABASES, "other": database}
    settings.STUDIO_BACKUPS = {"DATABASE": "other"}
    assert [m.id for m in check_settings()] == [expected]
    with pytest.raises(ImproperlyConfigured):
        conf.get_config()


def test_unknown_alias(settings: SettingsWrapper) -> None:
    assert ids(settings, DATABASE="missing") == ["studio_backups.E003"]
    settings.STUDIO_BACKUPS = {}
    with pytest.raises(ImproperlyConfigured, match="'missing'"):
        conf.get_config("missing")


@pytest.mark.parametrize("value", [0, -1, "20", 2.5, True, None])
def test_bad_max_backups(studio_db: StudioDB, settings: SettingsWrapper, value: object) -> None:
    assert ids(settings, MAX_BACKUPS=value) == ["studio_backups.E004"]


@pytest.mark.parametrize("value", ["Mars/Olympus", "../../etc/passwd", 7])
def test_unknown_time_zone(studio_db: StudioDB, settings: SettingsWrapper, value: object) -> None:
    assert ids(settings, TIME_ZONE=value) == ["studio_backups.E005"]


def test_unwritable_directory(
    studio_db: StudioDB, settings: SettingsWrapper, tmp_path: Path
) -> None:
    with mounted_tmpfs(tmp_path / "ro", "ro,size=64k") as readonly:
        assert ids(settings, DIRECTORY=str(readonly)) == ["studio_backups.E006"]
        assert ids(settings, DIRECTORY=str(readonly / "not" / "yet")) == ["studio_backups.E006"]
        # Still usable for reading: listing works, backing up fails with the reason.
        assert conf.get_config().directory == readonly / "not" / "yet"
    assert ids(settings, DIRECTORY=str(tmp_path / "not" / "yet")) == []
    (tmp_path / "file").write_text("")
    assert ids(settings, DIRECTORY=str(tmp_path / "file")) == ["studio_backups.E006"]


def test_unknown_key(studio_db: StudioDB, settings: SettingsWrapper) -> None:
    assert ids(settings, MAX_BACKUP=3) == ["studio_backups.E007"]


@pytest.mark.parametrize("value", [-1, "60", False])
def test_bad_lock_timeout(studio_db: StudioDB, settings: SettingsWrapper, value: object) -> None:
    assert ids(settings, LOCK_TIMEOUT=value) == ["studio_backups.E008"]


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_bad_notify_admins(studio_db: StudioDB, settings: SettingsWrapper, value: object) -> None:
    assert ids(settings, NOTIFY_ADMINS=value) == ["studio_backups.E032"]


@pytest.mark.parametrize("value", ["hc-ping.com/abc", "ftp://m.test/x", "https://", 42])
def test_bad_heartbeat_url(studio_db: StudioDB, settings: SettingsWrapper, value: object) -> None:
    assert ids(settings, HEARTBEAT_URL=value) == ["studio_backups.E033"]


def test_good_notification_settings(studio_db: StudioDB, settings: SettingsWrapper) -> None:
    assert ids(settings, NOTIFY_ADMINS=False, HEARTBEAT_URL="https://hc-ping.com/abc") == []


def test_rollback_journal_mode_gets_a_recommendation(
    studio_db: StudioDB, settings: SettingsWrapper
) -> None:
    settings.STUDIO_BACKUPS = {"DATABASE": "studio"}
    assert check_journal_mode() == []
    with contextlib.closing(studio_db.connect()) as connection:
        connection.execute("PRAGMA journal_mode=DELETE")
    connection.close()
    (warning,) = check_journal_mode()
    assert warning.id == "studio_backups.W010"
    assert str(studio_db.path) in warning.msg
    studio_db.path.unlink()
    assert check_journal_mode() == []
    settings.STUDIO_BACKUPS = {"DATABASE": "missing"}
    assert check_journal_mode() == []
