"""Replication to an SFTP server (the tests' own OpenSSH sshd on 127.0.0.1), its host key
pinned, and a restore to a moment from there."""

from __future__ import annotations

from pathlib import Path

from pytest_django.fixtures import Settings as SettingsWrapper

from django_studio_backups import checks, services
from tests.conftest import StudioDB
from tests.offsite_servers import SSHServer
from tests.replication_helpers import add_one_by_one, replicating, settle, wait_for_replica


def test_replication_over_sftp(
    studio_db: StudioDB, settings: SettingsWrapper, sshd: SSHServer
) -> None:
    host_key = " ".join(sshd.host_key.with_suffix(".pub").read_text().split()[:2])
    replica = {
        "URL": f"sftp://{sshd.user}@127.0.0.1:{sshd.port}{sshd.root}/studio",
        "OPTIONS": {"key-path": str(sshd.client_key), "host-key": host_key},
        "SYNC_INTERVAL": 0.5,
    }
    with replicating(studio_db, settings, replica, {}) as replicator:
        assert checks.check_replication() == []
        add_one_by_one(studio_db, "p0", "p1")
        moment = settle()
        add_one_by_one(studio_db, "p2")
        wait_for_replica(studio_db, {"p2"})
        services.restore_to_moment(moment)
        assert studio_db.clients() == ["Ana", "Beto", "p0", "p1"]
        code, output = replicator.stop()
    assert code == 0, output
    # The host key was checked: Litestream did not fall back to trusting any server.
    assert "host key not verified" not in output
    assert any((sshd.root / "studio").rglob("*.ltx"))


def test_an_unpinned_host_key_is_a_warning(
    studio_db: StudioDB, settings: SettingsWrapper, tmp_path: Path
) -> None:
    settings.STUDIO_BACKUPS = {
        **settings.STUDIO_BACKUPS,
        "REPLICATION": {"URL": "sftp://studio@backup.example.com/srv/replica"},
    }
    found = [m for m in checks.check_replication() if m.id == "studio_backups.W062"]
    [warning] = found
    assert "host key" in warning.msg
    assert warning.hint is not None
    assert "ssh-keyscan" in warning.hint
