from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.core.management import call_command
from django.db import connections
from pytest_django.fixtures import Settings as SettingsWrapper


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
        connection = sqlite3.connect(path or self.path, timeout=5)
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
