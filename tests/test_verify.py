"""Verifying backups against their manifests and SQLite's checks."""

from __future__ import annotations

from django_studio_backups import services
from tests.conftest import StudioDB


def test_verify_finds_changed_and_damaged_backups(studio_db: StudioDB) -> None:
    good = services.backup_now()
    assert services.verify(good) == []
    assert not services.find_backup(good.name).verified
    assert services.verify(good, full=True) == []
    assert services.find_backup(good.name).verified
    # A quick re-check of a file whose SHA-256 still matches keeps its full verification.
    assert services.verify(good.name) == []
    assert services.find_backup(good.name).check == "integrity_check"
    grown = services.backup_now()
    with open(grown.path, "ab") as f:
        f.write(b"\x00" * 10)
    assert "manifest says" in services.verify(grown.name)[0]
    changed = services.backup_now()
    data = bytearray(changed.path.read_bytes())
    data[-100] ^= 0x01
    changed.path.write_bytes(bytes(data))
    assert "SHA-256" in services.verify(changed.name)[0]
    by_name = {b.name: b for b in services.backups()}
    assert by_name[good.name].verified
    assert not by_name[grown.name].verified
    assert not by_name[changed.name].verified
    assert by_name[changed.name].manifest["verification"]["problems"]


def test_verify_adopts_a_good_backup_without_a_manifest(studio_db: StudioDB) -> None:
    # A copy put back from a drive, without its .json file.
    backup = services.backup_now()
    backup.manifest_path.unlink()
    assert services.find_backup(backup.name).sound is False
    assert services.verify(backup.name) == []
    adopted = services.find_backup(backup.name)
    assert adopted.kind == "adopted"
    assert adopted.verified  # adopting runs the full check, whatever was asked
    assert adopted.sha256 == backup.sha256
    assert adopted.created_at == backup.created_at
    assert adopted.sound


def test_verify_marks_a_foreign_file_damaged(studio_db: StudioDB) -> None:
    (studio_db.backups).mkdir(exist_ok=True)
    junk = studio_db.backups / "backup_20260304_153045.db"
    junk.write_bytes(b"seventeen bytes!!")
    assert "not a SQLite database" in services.verify(junk.name)[0]
    listed = services.find_backup(junk.name)
    assert listed.failed_check
    assert not listed.sound


def test_verify_a_backup_that_disappeared(studio_db: StudioDB) -> None:
    backup = services.backup_now()
    backup.path.unlink()
    assert "Could not read" in services.verify(backup)[0]
