"""The admin never waits on the network: an off-site server that accepts the connection and
never answers (an SSH banner, then silence) slows neither the Backups page nor "Back up now"."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import time_machine
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from pytest_django.fixtures import Settings as SettingsWrapper

from django_studio_backups import background, offsite_record, services, state

from .conftest import StudioDB
from .notify_servers import silent_server
from .offsite_helpers import folder_storage, offsite_cells, use_offsite

pytestmark = pytest.mark.django_db(databases=["default", "studio"])

CHANGELIST = "admin:django_studio_backups_backup_changelist"
CREATE = "admin:django_studio_backups_backup_create"
# What the admin may take to answer, on this 2-core machine, with a hung server.
ANSWER_WITHIN = 1.0
# How long the hung server would hold a request that waited on it.
SERVER_TIMEOUT = 15


def sftp_storage(port: int) -> dict[str, Any]:
    return {
        "BACKEND": "storages.backends.sftpstorage.SFTPStorage",
        "OPTIONS": {
            "host": "127.0.0.1",
            "params": {
                "port": port,
                "username": "studio",
                "password": "not-used",
                "look_for_keys": False,
                "allow_agent": False,
                "timeout": SERVER_TIMEOUT,
                "banner_timeout": SERVER_TIMEOUT,
                "auth_timeout": SERVER_TIMEOUT,
            },
            "root_path": "/backups",
        },
    }


def timed(call: Any, *args: Any, **kwargs: Any) -> tuple[Any, float]:
    started = time.monotonic()
    result = call(*args, **kwargs)
    return result, time.monotonic() - started


def test_a_hung_off_site_server_does_not_slow_the_admin(
    studio_db: StudioDB, admin_client: Client, settings: SettingsWrapper
) -> None:
    with silent_server(b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n") as port:
        use_offsite(settings, "sftp", sftp_storage(port))

        page, took = timed(admin_client.get, reverse(CHANGELIST))
        assert page.status_code == 200
        assert took < ANSWER_WITHIN, f"the Backups page took {took:.1f} s"

        created, took = timed(admin_client.post, reverse(CREATE))
        assert created.status_code == 302
        assert took < ANSWER_WITHIN, f"Back up now took {took:.1f} s"
        [backup] = services.backups()

        # The copy is on its way, and the page says so, still without waiting.
        page, took = timed(admin_client.get, reverse(CHANGELIST))
        assert took < ANSWER_WITHIN, f"the Backups page took {took:.1f} s"
        assert offsite_cells(page.content.decode()) == {backup.name: "clock"}
        assert 'title="Being copied"' in page.content.decode()
        print(f"with a hung SFTP server: Back up now and the page each answered in {took:.2f} s")
    # The server goes away: the upload in the background fails, and the page says that.
    assert background.wait(SERVER_TIMEOUT + 30)
    page = admin_client.get(reverse(CHANGELIST)).content.decode()
    assert offsite_cells(page) == {backup.name: "alert"}
    assert "The last copy to the off-site storage, on " in page
    assert services.offsite_status().of(backup.name) == "failed"


def test_a_copy_made_in_the_background_shows_as_copied(
    studio_db: StudioDB, admin_client: Client, settings: SettingsWrapper, tmp_path: Path
) -> None:
    use_offsite(settings, "drive", folder_storage(tmp_path / "drive"))
    admin_client.post(reverse(CREATE))
    assert background.wait(30)
    [backup] = services.backups()
    page = admin_client.get(reverse(CHANGELIST)).content.decode()
    assert offsite_cells(page) == {backup.name: "yes"}
    assert services.offsite_names() == {backup.name}


def test_a_copy_cut_short_shows_as_stalled(
    studio_db: StudioDB, admin_client: Client, settings: SettingsWrapper, tmp_path: Path
) -> None:
    # The server process stopped during an upload: the backup stays "being copied".
    use_offsite(settings, "drive", folder_storage(tmp_path / "drive"))
    backup = services.backup_now()
    data = state.read(studio_db.state_file)
    data[state.OFFSITE_PENDING] = {backup.name: state.isoformat(timezone.now())}
    studio_db.state_file.write_text(json.dumps(data))
    assert services.offsite_status().of(backup.name) == "pending"
    with time_machine.travel(timezone.now() + offsite_record.STALLED_AFTER + timedelta(minutes=1)):
        page = admin_client.get(reverse(CHANGELIST)).content.decode()
    assert offsite_cells(page) == {backup.name: "alert"}
    assert "Not copied yet: the next daily backup copies it" in page
    # The next sync (or daily job) copies it.
    services.sync_offsite()
    assert services.offsite_status().of(backup.name) == "copied"
