"""The admin's Backups page shows which backups have an off-site copy."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.test import Client
from django.urls import reverse
from pytest_django.fixtures import Settings as SettingsWrapper

from django_studio_backups import services

from .conftest import StudioDB
from .offsite_helpers import folder_storage, offsite_cells, use_offsite

pytestmark = pytest.mark.django_db(databases=["default", "studio"])

CHANGELIST = "admin:django_studio_backups_backup_changelist"


def test_each_backup_shows_whether_it_has_an_off_site_copy(
    studio_db: StudioDB, admin_client: Client, settings: SettingsWrapper, tmp_path: Path
) -> None:
    local_only = services.backup_now()
    use_offsite(settings, "drive", folder_storage(tmp_path / "drive"))
    copied = services.backup_now()

    page = admin_client.get(reverse(CHANGELIST)).content.decode()

    assert "Off-site copy" in page
    assert offsite_cells(page) == {copied.name: "yes", local_only.name: "no"}
    spanish = admin_client.get(reverse(CHANGELIST), HTTP_ACCEPT_LANGUAGE="es")
    assert "Copia externa" in spanish.content.decode()


def test_without_off_site_copies_there_is_no_column(
    studio_db: StudioDB, admin_client: Client
) -> None:
    page = admin_client.get(reverse(CHANGELIST)).content.decode()
    assert "Off-site copy" not in page
    assert 'colspan="6"' in page


def test_off_site_problems_are_warnings(
    studio_db: StudioDB, admin_client: Client, settings: SettingsWrapper, tmp_path: Path
) -> None:
    blocker = tmp_path / "unplugged"
    blocker.write_text("not a folder")
    use_offsite(settings, "drive", folder_storage(blocker / "drive"))
    backup = services.backup_now()

    page = admin_client.get(reverse(CHANGELIST)).content.decode()

    # What happened and what to do, then the exact reason once, as the detail.
    assert "The last copy to the off-site storage, on " in page
    assert "The backups on this server are not affected." in page
    assert page.count("Listing the off-site storage failed: NotADirectoryError") == 1
    assert offsite_cells(page) == {backup.name: "alert"}

    # Recorded, not asked: the page does not list the storage, which now works.
    blocker.unlink()
    page = admin_client.get(reverse(CHANGELIST)).content.decode()
    assert offsite_cells(page) == {backup.name: "alert"}
    services.sync_offsite()
    page = admin_client.get(reverse(CHANGELIST)).content.decode()
    assert offsite_cells(page) == {backup.name: "yes"}
    assert "The last copy to the off-site storage" not in page

    settings.STUDIO_BACKUPS = {**settings.STUDIO_BACKUPS, "OFFSITE": {"STORAGE": "nowhere"}}
    page = admin_client.get(reverse(CHANGELIST)).content.decode()
    assert "No off-site copies are made: their settings are wrong." in page
    assert "Technical detail: STUDIO_BACKUPS[" in page
    spanish = admin_client.get(reverse(CHANGELIST), HTTP_ACCEPT_LANGUAGE="es").content.decode()
    assert "No se hacen copias externas" in spanish
