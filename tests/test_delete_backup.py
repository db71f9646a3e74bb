from __future__ import annotations

import pytest
from pytest_django.fixtures import Settings as SettingsWrapper

from django_studio_backups import locking, services
from django_studio_backups.exceptions import BackupNotFound, DeleteFailed
from tests.conftest import StudioDB, undeletable


def test_delete_removes_the_backup_and_its_manifest(studio_db: StudioDB) -> None:
    keep = services.backup_now()
    backup = services.backup_now()
    assert services.delete_backup(backup.name) == backup
    assert not backup.path.exists()
    assert not backup.manifest_path.exists()
    assert services.backups() == [keep]
    assert studio_db.clients(keep.path) == ["Ana", "Beto"]


@pytest.mark.parametrize(
    "name", ["backup_20200101_000000.db", "../settings.json", "/etc/passwd", "..", "a\x00b"]
)
def test_delete_refuses_anything_but_a_listed_backup(studio_db: StudioDB, name: str) -> None:
    backup = services.backup_now()
    with pytest.raises(BackupNotFound):
        services.delete_backup(name)
    assert services.backups() == [backup]
    assert studio_db.state_file.exists()


def test_delete_refuses_a_symlink_out_of_the_folder(studio_db: StudioDB) -> None:
    services.backup_now()
    link = studio_db.backups / "backup_20990101_000000.db"
    link.symlink_to(studio_db.path)
    with pytest.raises(BackupNotFound):
        services.delete_backup(link.name)
    assert link.is_symlink()
    assert studio_db.path.exists()


def test_a_file_that_cannot_be_removed(studio_db: StudioDB) -> None:
    backup = services.backup_now()
    with undeletable(backup.path):
        with pytest.raises(DeleteFailed, match=f"Could not delete {backup.name}: "):
            services.delete_backup(backup.name)
        assert [b.name for b in services.backups()] == [backup.name]
        assert services.backups()[0].check == "quick_check"


def test_a_manifest_that_cannot_be_removed(
    studio_db: StudioDB, caplog: pytest.LogCaptureFixture
) -> None:
    backup = services.backup_now()
    backup.manifest_path.unlink()
    backup.manifest_path.mkdir()
    (backup.manifest_path / "x").write_text("x")
    services.delete_backup(backup.name)
    assert services.backups() == []
    assert f"Deleted {backup.name}, but not its manifest" in caplog.text


def test_delete_waits_for_the_folder_lock(studio_db: StudioDB, settings: SettingsWrapper) -> None:
    backup = services.backup_now()
    settings.STUDIO_BACKUPS = {**settings.STUDIO_BACKUPS, "LOCK_TIMEOUT": 0.1}
    with (
        locking.exclusive(studio_db.backups / locking.LOCK_NAME, 1),
        pytest.raises(DeleteFailed, match="Cannot use the backup folder"),
    ):
        services.delete_backup(backup.name)
    assert backup.path.exists()
