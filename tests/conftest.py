from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.core.management import call_command
from django.db import connections
from pytest_django.fixtures import Settings as SettingsWrapper

if os.environ.get("STUDIO_TEST_NO_SENDFILE"):
    # As on macOS, where sendfile() cannot copy a file to a file: every copy in this process
    # reads and writes instead (tox -e py311-django52-nosendfile runs the suite so).
    del os.sendfile
    shutil._USE_CP_SENDFILE = False  # type: ignore[attr-defined]  # (decided at its import)

from .notify_servers import Monitor, SMTPServer, running_monitor
from .offsite_helpers import AgeKey, make_age_key
from .offsite_servers import SSHServer


@dataclass
class StudioDB:
    """A real, migrated Django SQLite database in tmp_path, used through the 'studio' alias."""

    path: Path
    backups: Path
    state_file: Path

    def connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, isolation_level=None, timeout=5)

    def add_clients(self, *names: str) -> None:
        with sqlite3.connect(self.path, timeout=5) as connection:
            connection.executemany(
                "INSERT INTO studio_client (name) VALUES (?)", [(n,) for n in names]
            )
        connection.close()

    def clients(self, path: Path | None = None) -> list[str]:
        # A generous wait: tests read right after another process's lock, on a busy machine.
        connection = sqlite3.connect(path or self.path, timeout=30)
        try:
            return [
                row[0] for row in connection.execute("SELECT name FROM studio_client ORDER BY id")
            ]
        finally:
            connection.close()


@pytest.fixture(scope="session")
def template_db(
    tmp_path_factory: pytest.TempPathFactory, django_db_blocker: pytest.FixtureRequest
) -> Path:
    path = tmp_path_factory.mktemp("template") / "studio.db"
    database = django_settings.DATABASES["studio"]
    original = database["NAME"]
    database["NAME"] = path
    try:
        with django_db_blocker.unblock():  # type: ignore[attr-defined]
            # A connection an earlier test left open would still be to the old NAME.
            connections["studio"].close()
            call_command("migrate", database="studio", verbosity=0)
            connections["studio"].close()
    finally:
        database["NAME"] = original
    connection = sqlite3.connect(path)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.close()
    return path


@pytest.fixture
def studio_db(
    template_db: Path, tmp_path: Path, settings: SettingsWrapper, monkeypatch: pytest.MonkeyPatch
) -> Iterator[StudioDB]:
    data = tmp_path / "data"
    data.mkdir()
    path = data / "studio.db"
    shutil.copyfile(template_db, path)
    monkeypatch.setitem(django_settings.DATABASES["studio"], "NAME", path)
    settings.STUDIO_BACKUPS = {"DATABASE": "studio", "TIME_ZONE": "America/Hermosillo"}
    db = StudioDB(path=path, backups=data / "backups", state_file=data / "settings.json")
    db.add_clients("Ana", "Beto")
    yield db
    connections["studio"].close()


REPO = Path(__file__).resolve().parent.parent


def command_env(db: StudioDB, **backups: object) -> dict[str, str]:
    """The environment for a subprocess that should use ``db`` as the 'studio' database."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STUDIO_TEST_")}
    env["STUDIO_TEST_DB"] = str(db.path)
    env["STUDIO_TEST_BACKUPS"] = json.dumps(
        {"DATABASE": "studio", "TIME_ZONE": "America/Hermosillo", **backups}
    )
    env["DJANGO_SETTINGS_MODULE"] = "tests.settings"
    env["PYTHONPATH"] = str(REPO)
    return env


def run_manage(
    db: StudioDB,
    *args: str,
    input: str | None = None,
    env: dict[str, str] | None = None,
    **backups: object,
) -> subprocess.CompletedProcess[str]:
    """``manage.py args`` on ``db``, with ``backups`` in STUDIO_BACKUPS and ``env`` added to
    the environment."""
    return subprocess.run(
        [sys.executable, "-m", "django", *args],
        env={**command_env(db, **backups), **(env or {})},
        cwd=REPO,
        input=input,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _need_root(what: str) -> None:
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail(f"{what} needs root, and CI runs as root")
        pytest.skip(f"{what} needs root to mount a filesystem")


@contextlib.contextmanager
def mounted_tmpfs(directory: Path, options: str) -> Iterator[Path]:
    """A real, small filesystem at ``directory``: read-only, or too small (disk full)."""
    _need_root("A tmpfs mount")
    directory.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(directory)], check=True)
    try:
        yield directory
    finally:
        subprocess.run(["umount", "-l", str(directory)], check=True)


def fill_database(path: Path, megabytes: int, *, journal_mode: str = "wal") -> None:
    """A SQLite file of about ``megabytes`` MB (random blobs, so it does not compress)."""
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute(f"PRAGMA journal_mode={journal_mode}")
    connection.execute("CREATE TABLE IF NOT EXISTS blob (id INTEGER PRIMARY KEY, data BLOB)")
    connection.execute("BEGIN")
    for _ in range(megabytes * 16):
        connection.execute("INSERT INTO blob (data) VALUES (randomblob(65536))")
    connection.execute("COMMIT")
    connection.close()


@pytest.fixture(scope="session")
def age_key(tmp_path_factory: pytest.TempPathFactory) -> AgeKey:
    """A key pair made by the age-keygen tool, for off-site copies."""
    return make_age_key(tmp_path_factory.mktemp("age"))


@contextlib.contextmanager
def undeletable(path: Path) -> Iterator[Path]:
    """``path`` made immutable (chattr +i): not even root can delete it, as on a failing disk."""
    _need_root("chattr +i")
    subprocess.run(["chattr", "+i", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


@pytest.fixture
def failures() -> Iterator[list[dict[str, Any]]]:
    """What ``backup_failed`` sends while the test runs."""
    from django_studio_backups import signals

    sent: list[dict[str, Any]] = []

    def receive(sender: object, signal: object, **kwargs: Any) -> None:
        sent.append(kwargs)

    signals.backup_failed.connect(receive, dispatch_uid="tests.failures")
    yield sent
    signals.backup_failed.disconnect(dispatch_uid="tests.failures")


@pytest.fixture(autouse=True)
def background_work_ends() -> Iterator[None]:
    """Mails, heartbeats and uploads a test started in the background end within it, so
    that none lands in the next test's outbox or folder."""
    from django_studio_backups import background

    yield
    assert background.wait(timeout=60), "background work still running after 60 s"


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[SSHServer]:
    """OpenSSH's sshd on 127.0.0.1, with keys of its own (see offsite_servers)."""
    server = SSHServer(tmp_path / "sshd")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def smtp_server() -> Iterator[SMTPServer]:
    server = SMTPServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def monitor() -> Iterator[Monitor]:
    with running_monitor() as running:
        yield running
