"""Helpers the tests of backing up, restoring and verifying share."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from django_studio_backups import archive, services
from tests.conftest import StudioDB

HERMOSILLO = ZoneInfo("America/Hermosillo")


def names(db: StudioDB) -> list[str]:
    return [b["name"] for b in services.list_backups()]


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith(archive.TEMP_PREFIX))


def received(signal: Any) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = []

    def receiver(**kwargs: Any) -> None:
        calls.append(kwargs)

    signal.connect(receiver, weak=False)
    return calls
