"""What the off-site tests share: an age key made by age-keygen, the age CLI, storages."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from django.core.files.storage import FileSystemStorage
from pytest_django.fixtures import Settings as SettingsWrapper


@dataclass(frozen=True)
class AgeKey:
    path: Path
    recipient: str


def make_age_key(directory: Path) -> AgeKey:
    path = directory / "studio-key.txt"
    subprocess.run(["age-keygen", "-o", str(path)], check=True, capture_output=True)
    recipient = subprocess.run(
        ["age-keygen", "-y", str(path)], check=True, capture_output=True, text=True
    ).stdout.strip()
    return AgeKey(path, recipient)


def age_decrypt(path: Path, key: AgeKey) -> bytes:
    """Decrypt with the age command-line tool: no code of ours involved."""
    return subprocess.run(
        ["age", "-d", "-i", str(key.path), str(path)], check=True, capture_output=True
    ).stdout


def use_offsite(
    settings: SettingsWrapper, alias: str, storage: dict[str, Any], **offsite: Any
) -> None:
    settings.STORAGES = {**settings.STORAGES, alias: storage}
    settings.STUDIO_BACKUPS = {**settings.STUDIO_BACKUPS, "OFFSITE": {"STORAGE": alias, **offsite}}


def folder_storage(location: Path) -> dict[str, Any]:
    return {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": str(location)},
    }


class RenamingStorage(FileSystemStorage):
    """A storage that never reuses a name, as some do."""

    def get_available_name(self, name: str, max_length: int | None = None) -> str:
        return f"renamed-{name}"


def offsite_cells(page: str) -> dict[str, str]:
    """Each backup the admin's page lists, and the icon in its off-site column."""
    row = r'<tr data-backup="([^"]+)">.*?class="studio-backups-offsite"><img src="[^"]*icon-(\w+)'
    return dict(re.findall(row, page, re.S))


class SlowStorage(FileSystemStorage):
    """A storage during whose uploads local backups are deleted, as retention in another
    process may do while a sync copies older ones: ``delete_during_upload`` names them."""

    delete_during_upload: ClassVar[tuple[Path, ...]] = ()

    def save(self, name: str | None, content: Any, max_length: int | None = None) -> str:
        for path in self.delete_during_upload:
            path.unlink(missing_ok=True)
        return super().save(name, content, max_length)


class KeepingStorage(FileSystemStorage):
    """A storage that refuses to delete what it holds, as one with an object lock does."""

    def delete(self, name: str) -> None:
        if self.exists(name):
            raise PermissionError(f"{name} is locked")
        super().delete(name)
