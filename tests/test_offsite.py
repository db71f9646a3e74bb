"""Off-site copies into a FileSystemStorage folder (an "external drive")."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import shutil
import sys
from collections.abc import Callable
from datetime import date, datetime, timedelta, timezone
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
import zstandard
from django.core import checks, mail
from django.core.management import CommandError, call_command
from pytest_django.fixtures import Settings as SettingsWrapper

from django_studio_backups import (
    archive,
    background,
    codec,
    conf,
    offsite,
    offsite_conf,
    services,
    state,
)
from django_studio_backups.exceptions import OffsiteFailed

from .conftest import StudioDB, run_manage
from .offsite_helpers import AgeKey, SlowStorage, age_decrypt, folder_storage, use_offsite


@pytest.fixture
def drive(studio_db: StudioDB, settings: SettingsWrapper, tmp_path: Path, age_key: AgeKey) -> Path:
    folder = tmp_path / "drive"
    use_offsite(settings, "drive", folder_storage(folder), ENCRYPT_TO=[age_key.recipient])
    return folder


def unzstd(data: bytes) -> bytes:
    return zstandard.ZstdDecompressor().decompressobj().decompress(data)


def command(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out, stderr=StringIO())
    return out.getvalue()


def test_each_backup_lands_off_site_and_the_age_cli_decrypts_it(
    studio_db: StudioDB, drive: Path, age_key: AgeKey
) -> None:
    backup = services.backup_now()

    assert sorted(os.listdir(drive)) == [f"{backup.name}.json", f"{backup.name}.zst.age"]
    stored = drive / f"{backup.name}.zst.age"
    plain = unzstd(age_decrypt(stored, age_key))
    assert plain == backup.path.read_bytes()
    manifest = json.loads((drive / f"{backup.name}.json").read_text())
    assert manifest["sha256"] == backup.sha256 == hashlib.sha256(plain).hexdigest()
    assert manifest["size"] == backup.size
    assert manifest["object"] == {
        "name": stored.name,
        "size": stored.stat().st_size,
        "sha256": hashlib.sha256(stored.read_bytes()).hexdigest(),
        "compression": "zstd",
        "encryption": "age",
        "recipients": [age_key.recipient],
    }
    assert manifest["manifest"] == backup.manifest
    assert offsite.names() == {backup.name}
    assert state.read(studio_db.state_file)[offsite.UPLOADED_AT] == manifest["uploaded_at"]


@pytest.mark.parametrize(("compression", "suffix"), [("gzip", ".gz"), (None, "")])
def test_other_compressions(
    studio_db: StudioDB,
    settings: SettingsWrapper,
    tmp_path: Path,
    age_key: AgeKey,
    compression: str | None,
    suffix: str,
) -> None:
    use_offsite(settings, "drive", folder_storage(tmp_path / "drive"), COMPRESS=compression)
    backup = services.backup_now()
    stored = (tmp_path / "drive" / (backup.name + suffix)).read_bytes()
    assert (gzip.decompress(stored) if compression else stored) == backup.path.read_bytes()

    use_offsite(
        settings, "drive", folder_storage(tmp_path / "drive"), COMPRESS=compression,
        ENCRYPT_TO=[age_key.recipient],
    )  # fmt: skip
    second = services.backup_now()
    sealed = age_decrypt(tmp_path / "drive" / f"{second.name}{suffix}.age", age_key)
    assert (gzip.decompress(sealed) if compression else sealed) == second.path.read_bytes()
    assert [c.name for c in offsite.copies()] == [second.name, backup.name]


def test_list_backups_offsite(studio_db: StudioDB, drive: Path) -> None:
    assert command("list_backups", "--offsite") == "No off-site copies yet.\n"
    first = services.backup_now(kind="daily")
    second = services.backup_now()

    lines = command("list_backups", "--offsite").splitlines()
    assert lines[0].split() == ["OBJECT", "DATE", "STORED", "DATABASE", "KIND"]
    assert [line.split()[0] for line in lines[1:]] == [
        f"{second.name}.zst.age",
        f"{first.name}.zst.age",
    ]
    assert lines[2].split()[-1] == "daily"
    rows = json.loads(command("list_backups", "--offsite", "--json"))
    assert [row["name"] for row in rows] == [second.name, first.name]
    assert rows[0]["database_size"] == second.size
    assert rows[0]["size"] == (drive / rows[0]["object"]).stat().st_size
    assert rows[0]["encrypted"] is True
    assert rows[0]["sha256"] == second.sha256


def test_restore_from_off_site_after_the_local_backups_are_lost(
    studio_db: StudioDB, drive: Path, age_key: AgeKey
) -> None:
    backup = services.backup_now()
    studio_db.add_clients("Carla")
    shutil.rmtree(studio_db.backups)

    out = command(
        "restore_backup", "--offsite", backup.name, "--identity", str(age_key.path), "--noinput"
    )

    assert f"Fetched the off-site copy as {backup.name}" in out
    assert studio_db.clients() == ["Ana", "Beto"]
    fetched = services.find_backup(backup.name)
    assert fetched.sha256 == backup.sha256
    assert fetched.manifest["downloaded"]["object"] == f"{backup.name}.zst.age"
    # The safety backup of the data that was replaced went off-site too.
    safety = next(b for b in services.backups() if b.kind == "safety")
    assert offsite.names() == {backup.name, safety.name}
    assert studio_db.clients(safety.path) == ["Ana", "Beto", "Carla"]


def test_restore_the_latest_off_site_copy(
    studio_db: StudioDB, drive: Path, age_key: AgeKey
) -> None:
    identity = ("--identity", str(age_key.path))
    with pytest.raises(CommandError, match="There is no off-site copy to restore yet"):
        call_command("restore_backup", "--offsite", "--latest", *identity, "--noinput")
    services.backup_now()
    studio_db.add_clients("Carla")
    newest = services.backup_now()
    studio_db.add_clients("Dora")
    shutil.rmtree(studio_db.backups)
    out = command("restore_backup", "--offsite", "--latest", *identity, "--noinput")
    assert out.splitlines()[0] == f"The latest backup is {newest.name}."
    assert studio_db.clients() == ["Ana", "Beto", "Carla"]


def test_the_latest_off_site_copy_is_not_a_restores_safety_backup(
    studio_db: StudioDB, drive: Path, age_key: AgeKey
) -> None:
    backup = services.backup_now()
    studio_db.add_clients("Carla")
    command("restore_backup", backup.name, "--noinput")
    # The safety backup of the data the restore replaced went off-site too.
    assert services.offsite_copies()[0].kind == "safety"
    identity = ("--identity", str(age_key.path))
    out = command("restore_backup", "--offsite", "--latest", *identity, "--noinput")
    assert out.splitlines()[0] == f"The latest backup is {backup.name}."
    assert studio_db.clients() == ["Ana", "Beto"]


def test_restore_offsite_service(studio_db: StudioDB, drive: Path, age_key: AgeKey) -> None:
    backup = services.backup_now()
    studio_db.add_clients("Carla")
    report = services.restore_offsite(backup.name, identity=age_key.path)
    # The local backup with the same name and SHA-256 is used; nothing is downloaded.
    assert report.restored.path == backup.path
    assert "downloaded" not in report.restored.manifest
    assert studio_db.clients() == ["Ana", "Beto"]


def test_a_downloaded_copy_takes_a_free_name(
    studio_db: StudioDB, drive: Path, age_key: AgeKey
) -> None:
    backup = services.backup_now()
    # A different local file now has that name (from another machine, say).
    os.unlink(backup.path)
    shutil.copyfile(studio_db.path, backup.path)
    fetched = offsite.download(backup.name, identity=str(age_key.path))
    assert fetched.name == backup.name.replace(".db", "_2.db")
    assert fetched.sha256 == backup.sha256
    assert hashlib.sha256(fetched.path.read_bytes()).hexdigest() == backup.sha256


def test_a_damaged_copy_is_refused_and_nothing_changes(
    studio_db: StudioDB, drive: Path, age_key: AgeKey
) -> None:
    backup = services.backup_now()
    studio_db.add_clients("Carla")
    os.unlink(backup.path)
    stored = drive / f"{backup.name}.zst.age"
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0x01
    stored.write_bytes(bytes(data))

    with pytest.raises(CommandError, match=r"Cannot decode the off-site copy .* damaged"):
        command(
            "restore_backup", "--offsite", backup.name, "--identity", str(age_key.path),
            "--noinput",
        )  # fmt: skip

    assert studio_db.clients() == ["Ana", "Beto", "Carla"]
    assert services.backups() == []
    assert not [p for p in studio_db.backups.iterdir() if p.name.startswith(archive.TEMP_PREFIX)]


def test_a_copy_that_does_not_match_its_manifest_is_refused(
    studio_db: StudioDB, drive: Path, age_key: AgeKey, tmp_path: Path
) -> None:
    backup = services.backup_now()
    os.unlink(backup.path)
    # A valid age file of valid zstd data, of another database: only the manifest's
    # SHA-256 tells it apart.
    other = tmp_path / "other.zst"
    other.write_bytes(zstandard.ZstdCompressor().compress(studio_db.path.read_bytes()))
    os.system(f"age -r {age_key.recipient} -o {drive / (backup.name + '.zst.age')} {other}")

    with pytest.raises(OffsiteFailed, match="does not match its manifest"):
        offsite.download(backup.name, identity=age_key.path)
    assert services.backups() == []


def test_restore_offsite_mistakes(
    studio_db: StudioDB, drive: Path, age_key: AgeKey, tmp_path: Path
) -> None:
    backup = services.backup_now()
    with pytest.raises(CommandError, match=r"no off-site copy called 'backup_x\.db'"):
        command("restore_backup", "--offsite", "backup_x.db", "--noinput")
    with pytest.raises(CommandError, match="is encrypted; give the age identity file"):
        command("restore_backup", "--offsite", backup.name, "--noinput")
    with pytest.raises(CommandError, match="--identity is for off-site copies"):
        command("restore_backup", backup.name, "--identity", str(age_key.path), "--noinput")
    with pytest.raises(CommandError, match="Cannot read the identity file"):
        command(
            "restore_backup", "--offsite", backup.name, "--identity", str(tmp_path / "none"),
            "--noinput",
        )  # fmt: skip
    other = tmp_path / "other-key.txt"
    other.write_text(make_other_key(tmp_path))
    os.unlink(backup.path)
    with pytest.raises(CommandError, match="No matching keys found"):
        command("restore_backup", "--offsite", backup.name, "--identity", str(other), "--noinput")


def make_other_key(tmp_path: Path) -> str:
    from .offsite_helpers import make_age_key

    folder = tmp_path / "other"
    folder.mkdir()
    return make_age_key(folder).path.read_text()


def test_unencrypted_copies_need_no_identity(
    studio_db: StudioDB, settings: SettingsWrapper, tmp_path: Path
) -> None:
    use_offsite(settings, "drive", folder_storage(tmp_path / "drive"), COMPRESS="gzip")
    backup = services.backup_now()
    studio_db.add_clients("Carla")
    os.unlink(backup.path)
    command("restore_backup", "--offsite", backup.name, "--noinput")
    assert studio_db.clients() == ["Ana", "Beto"]


def test_off_site_retention_keeps_the_newest(
    studio_db: StudioDB, settings: SettingsWrapper, tmp_path: Path
) -> None:
    use_offsite(settings, "drive", folder_storage(tmp_path / "drive"), MAX_BACKUPS=2)
    made = [services.backup_now() for _ in range(4)]
    assert [c.name for c in offsite.copies()] == [made[3].name, made[2].name]
    assert len(os.listdir(tmp_path / "drive")) == 4
    assert len(services.backups()) == 4


def test_local_max_backups_is_the_default(
    studio_db: StudioDB, settings: SettingsWrapper, tmp_path: Path
) -> None:
    settings.STUDIO_BACKUPS = {**settings.STUDIO_BACKUPS, "MAX_BACKUPS": 3}
    use_offsite(settings, "drive", folder_storage(tmp_path / "drive"))
    for _ in range(5):
        services.backup_now()
    assert len(offsite.copies()) == 3


def test_a_failed_upload_keeps_the_local_backup_and_sync_catches_up(
    studio_db: StudioDB, settings: SettingsWrapper, tmp_path: Path, age_key: AgeKey
) -> None:
    blocker = tmp_path / "unplugged"
    blocker.write_text("the drive is not mounted")
    drive = blocker / "drive"
    use_offsite(settings, "drive", folder_storage(drive), ENCRYPT_TO=[age_key.recipient])

    backup = services.backup_now()

    assert services.verify(backup) == []
    recorded = state.read(studio_db.state_file)
    assert (
        "Listing the off-site storage failed: NotADirectoryError" in recorded[state.OFFSITE_ERROR]
    )
    failure = offsite.last_failure()
    assert failure is not None
    assert failure.reason == recorded[state.OFFSITE_ERROR]
    with pytest.raises(CommandError, match="Listing the off-site storage failed"):
        command("sync_offsite")

    blocker.unlink()
    out = command("sync_offsite")

    assert out == f"Uploaded {backup.name}.zst.age\n"
    assert offsite.names() == {backup.name}
    assert offsite.last_failure() is None
    assert unzstd(age_decrypt(drive / f"{backup.name}.zst.age", age_key)) == (
        backup.path.read_bytes()
    )
    assert command("sync_offsite") == "Every backup already has an off-site copy.\n"


def test_leftovers_of_interrupted_uploads_are_never_listed_and_sync_replaces_them(
    studio_db: StudioDB, settings: SettingsWrapper, tmp_path: Path, age_key: AgeKey
) -> None:
    first = services.backup_now()
    second = services.backup_now()
    third = services.backup_now()
    fourth = services.backup_now()
    drive = tmp_path / "drive"
    drive.mkdir()
    # A data object cut short, with no manifest; a manifest cut short; a manifest whose data
    # object is gone; and files that are not ours.
    (drive / f"{first.name}.zst.age").write_bytes(b"age-encryption.org/v1\n-> X25519 cut")
    (drive / f"{second.name}.zst.age").write_bytes(b"\x00" * 100)
    (drive / f"{second.name}.json").write_text('{"format": 1, "obj')
    (drive / f"{third.name}.json").write_text(
        json.dumps({"format": 1, "object": {"name": f"{third.name}.zst.age"}})
    )
    (drive / f"{fourth.name}.json").write_text(json.dumps({"format": 0, "object": {"name": 1}}))
    (drive / "notes.txt").write_text("the studio's own file")
    use_offsite(settings, "drive", folder_storage(drive), ENCRYPT_TO=[age_key.recipient])

    assert offsite.copies() == []
    out = command("sync_offsite")

    made = (first, second, third, fourth)
    assert out.splitlines() == [f"Uploaded {b.name}.zst.age" for b in made]
    assert sorted(os.listdir(drive)) == sorted(
        ["notes.txt"] + [f"{b.name}{suffix}" for b in made for suffix in (".json", ".zst.age")]
    )
    for backup in made:
        assert unzstd(age_decrypt(drive / f"{backup.name}.zst.age", age_key)) == (
            backup.path.read_bytes()
        )


def test_sync_deletes_leftovers_of_backups_it_does_not_upload(
    studio_db: StudioDB, settings: SettingsWrapper, tmp_path: Path
) -> None:
    drive = tmp_path / "drive"
    drive.mkdir()
    (drive / "backup_20200101_000000.db.gz").write_bytes(b"cut")
    use_offsite(settings, "drive", folder_storage(drive), COMPRESS="gzip")
    assert command("sync_offsite") == (
        "Deleted backup_20200101_000000.db.gz\nEvery backup already has an off-site copy.\n"
    )
    assert os.listdir(drive) == []


def test_sync_uploads_only_what_retention_keeps(
    studio_db: StudioDB, settings: SettingsWrapper, tmp_path: Path
) -> None:
    made = [services.backup_now() for _ in range(4)]
    use_offsite(settings, "drive", folder_storage(tmp_path / "drive"), MAX_BACKUPS=2)
    report = offsite.sync()
    assert [c.name for c in report.uploaded] == [made[2].name, made[3].name]
    assert report.failed == {}
    assert [c.name for c in offsite.copies()] == [made[3].name, made[2].name]


def test_sync_prunes_old_copies(
    studio_db: StudioDB, settings: SettingsWrapper, tmp_path: Path
) -> None:
    use_offsite(settings, "drive", folder_storage(tmp_path / "drive"), MAX_BACKUPS=3)
    made = [services.backup_now() for _ in range(3)]
    use_offsite(settings, "drive", folder_storage(tmp_path / "drive"), MAX_BACKUPS=1)
    out = command("sync_offsite")
    assert out.splitlines() == [
        f"Deleted {made[1].name}",
        f"Deleted {made[0].name}",
        "Every backup already has an off-site copy.",
    ]


def test_a_backup_changed_after_it_was_made_is_not_copied(
    studio_db: StudioDB, settings: SettingsWrapper, tmp_path: Path
) -> None:
    backup = services.backup_now()
    with open(backup.path, "r+b") as f:
        f.seek(5000)
        f.write(b"\xff")
    use_offsite(settings, "drive", folder_storage(tmp_path / "drive"))
    with pytest.raises(CommandError, match="does not match the SHA-256 in its manifest"):
        command("sync_offsite")
    assert os.listdir(tmp_path / "drive") == []
    assert "does not match" in state.read(studio_db.state_file)[state.OFFSITE_ERROR]


def test_a_backup_deleted_before_its_upload_is_not_a_failure(
    studio_db: StudioDB, settings: SettingsWrapper, tmp_path: Path
) -> None:
    # Deleted (by retention, or by hand) while its upload waited for the off-site lock.
    backup = services.backup_now()
    os.unlink(backup.path)
    use_offsite(settings, "drive", folder_storage(tmp_path / "drive"))
    assert offsite.copy_new_backup(backup, conf.get_config()) is True
    assert state.OFFSITE_ERROR not in state.read(studio_db.state_file)
    assert offsite.copies() == []


def test_a_backup_that_cannot_be_read_is_reported(
    studio_db: StudioDB, settings: SettingsWrapper, tmp_path: Path
) -> None:
    backup = services.backup_now()
    os.unlink(backup.path)
    backup.path.mkdir()  # something stands there, and it cannot be read as a file
    use_offsite(settings, "drive", folder_storage(tmp_path / "drive"))
    assert offsite.copy_new_backup(backup, conf.get_config()) is False
    assert "Cannot read" in state.read(studio_db.state_file)[state.OFFSITE_ERROR]
    assert offsite.copies() == []


def test_a_copy_that_a_sync_made_meanwhile_is_not_made_again(
    studio_db: StudioDB, settings: SettingsWrapper, tmp_path: Path
) -> None:
    # "Back up now" queued its upload; a sync took the off-site lock first and copied it.
    backup = services.backup_now()
    drive = tmp_path / "drive"
    use_offsite(settings, "drive", folder_storage(drive))
    services.sync_offsite()
    before = {p.name: p.stat().st_mtime_ns for p in drive.iterdir()}
    assert offsite.copy_new_backup(backup, conf.get_config()) is True
    assert {p.name: p.stat().st_mtime_ns for p in drive.iterdir()} == before
    assert services.offsite_status().of(backup.name) == "copied"


def test_storage_that_renames_is_refused(
    studio_db: StudioDB, settings: SettingsWrapper, tmp_path: Path
) -> None:
    use_offsite(
        settings,
        "renaming",
        {
            "BACKEND": "tests.offsite_helpers.RenamingStorage",
            "OPTIONS": {"location": str(tmp_path)},
        },
    )
    services.backup_now()
    assert (
        "configure it to overwrite existing names"
        in state.read(studio_db.state_file)[state.OFFSITE_ERROR]
    )
    assert offsite.copies() == []


def test_a_storage_that_cannot_be_opened(studio_db: StudioDB, settings: SettingsWrapper) -> None:
    use_offsite(settings, "broken", {"BACKEND": "tests.no_such_module.Storage"})
    with pytest.raises(CommandError, match="Cannot open the storage 'broken'"):
        command("list_backups", "--offsite")
    # A backend that loads, but whose construction fails.
    use_offsite(
        settings,
        "broken",
        {"BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"bucket": "x"}},
    )
    with pytest.raises(CommandError, match="Cannot open the storage 'broken'"):
        command("list_backups", "--offsite")


def test_without_offsite_settings(studio_db: StudioDB) -> None:
    assert offsite_conf.offsite_problems() == []
    services.backup_now()
    assert offsite.last_failure() is None
    assert offsite.names() == set()
    with pytest.raises(CommandError, match="Off-site copies are not configured"):
        command("sync_offsite")
    # Another database never shares the configured database's off-site storage.
    assert offsite_conf.get_offsite_config("default") is None


def test_bad_settings_never_stop_a_backup(studio_db: StudioDB, settings: SettingsWrapper) -> None:
    settings.STUDIO_BACKUPS = {**settings.STUDIO_BACKUPS, "OFFSITE": {"STORAGE": "nowhere"}}
    backup = services.backup_now()
    assert backup.path.exists()
    assert "not an alias in STORAGES" in state.read(studio_db.state_file)[state.OFFSITE_ERROR]


def test_the_lock_waits_for_another_upload(
    studio_db: StudioDB, settings: SettingsWrapper, tmp_path: Path
) -> None:
    from django_studio_backups import locking

    use_offsite(settings, "drive", folder_storage(tmp_path / "drive"))
    settings.STUDIO_BACKUPS = {**settings.STUDIO_BACKUPS, "LOCK_TIMEOUT": 0.2}
    archive.ensure_directory(studio_db.backups)
    with locking.exclusive(studio_db.backups / offsite.LOCK_NAME, 1):
        backup = services.backup_now()
    assert backup.path.exists()
    assert "Cannot use the backup folder" in state.read(studio_db.state_file)[state.OFFSITE_ERROR]
    assert offsite.sync().uploaded[0].name == backup.name


@pytest.mark.parametrize(
    ("value", "check_id", "message"),
    [
        ("drive", "studio_backups.E040", "must be a dict or None"),
        ({"STORAGE": "drive", "KEPT": 3}, "studio_backups.E040", "Unknown .* keys: KEPT"),
        ({"STORAGE": "nowhere"}, "studio_backups.E041", "'nowhere', which is not an alias"),
        ({}, "studio_backups.E041", "None, which is not an alias"),
        ({"STORAGE": "drive", "COMPRESS": "xz"}, "studio_backups.E042", "not 'xz'"),
        ({"STORAGE": "drive", "COMPRESS": ["zstd"]}, "studio_backups.E042", r"not \['zstd'\]"),
        ({"STORAGE": "drive", "ENCRYPT_TO": "age1abc"}, "studio_backups.E043", "non-empty list"),
        ({"STORAGE": "drive", "ENCRYPT_TO": []}, "studio_backups.E043", "non-empty list"),
        ({"STORAGE": "drive", "ENCRYPT_TO": ["age1abc"]}, "studio_backups.E043", "'age1abc'"),
        ({"STORAGE": "drive", "MAX_BACKUPS": 0}, "studio_backups.E044", "not 0"),
        ({"STORAGE": "drive", "MAX_BACKUPS": True}, "studio_backups.E044", "not True"),
    ],
)
def test_setting_mistakes_are_system_checks(
    settings: SettingsWrapper, tmp_path: Path, value: object, check_id: str, message: str
) -> None:
    settings.STORAGES = {**settings.STORAGES, "drive": folder_storage(tmp_path)}
    settings.STUDIO_BACKUPS = {"OFFSITE": value}
    found = [m for m in checks.run_checks() if m.id and m.id.startswith("studio_backups.E04")]
    assert [m.id for m in found] == [check_id]
    assert re.search(message, found[0].msg), found[0].msg


def test_missing_packages_are_a_system_check(
    settings: SettingsWrapper, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, age_key: AgeKey
) -> None:
    settings.STORAGES = {**settings.STORAGES, "drive": folder_storage(tmp_path)}
    settings.STUDIO_BACKUPS = {"OFFSITE": {"STORAGE": "drive", "ENCRYPT_TO": [age_key.recipient]}}
    assert offsite_conf.offsite_problems() == []
    monkeypatch.setitem(sys.modules, "pyrage", None)
    monkeypatch.setitem(sys.modules, "zstandard", None)
    [problem] = offsite_conf.offsite_problems()
    assert problem.id == "studio_backups.E045"
    assert problem.message == "Off-site copies need the Python packages zstandard, pyrage."
    assert problem.hint == "Install django-studio-backups[offsite]."


def test_copies_have_a_readable_record(studio_db: StudioDB, drive: Path) -> None:
    backup = services.backup_now(kind="daily")
    [copy] = offsite.copies()
    assert copy.kind == "daily"
    assert copy.compression == "zstd"
    assert copy.encrypted
    assert copy.database_size == backup.size
    assert copy.created_at.isoformat(timespec="seconds") == backup.manifest["created_at"]
    assert copy.as_dict()["display"] == backup.display(copy.created_at.tzinfo)  # type: ignore[arg-type]
    assert codec.suffix(copy.compression, copy.encrypted) == ".zst.age"


def test_the_daily_backup_goes_off_site_too(studio_db: StudioDB, drive: Path) -> None:
    backup = services.backup_if_needed()
    assert backup is not None
    assert offsite.names() == {backup.name}
    assert services.backup_if_needed() is None
    assert offsite.names() == {backup.name}


def test_the_daily_job_records_off_site_settings_that_stop_copies(
    studio_db: StudioDB, settings: SettingsWrapper
) -> None:
    settings.STUDIO_BACKUPS = {**settings.STUDIO_BACKUPS, "OFFSITE": {"STORAGE": "nowhere"}}
    daily = services.backup_if_needed()
    assert daily is not None  # the local backup stands
    failure = services.offsite_failure()
    assert failure is not None
    assert failure.reason.startswith("No off-site copies: STUDIO_BACKUPS[")


def test_an_unreadable_state_file_shows_no_off_site_state(
    studio_db: StudioDB, caplog: pytest.LogCaptureFixture
) -> None:
    studio_db.state_file.write_text("{not json")
    status = services.offsite_status()
    assert (status.copied, status.pending, status.failed) == (None, {}, {})
    assert "Ignoring the state file" in caplog.text


def test_a_backup_deleted_during_a_sync_is_not_a_failure(
    studio_db: StudioDB, settings: SettingsWrapper, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    older, newer = services.backup_now(), services.backup_now()
    monkeypatch.setattr(SlowStorage, "delete_during_upload", (newer.path,))
    use_offsite(
        settings,
        "slow",
        {"BACKEND": "tests.offsite_helpers.SlowStorage", "OPTIONS": {"location": str(tmp_path)}},
    )
    report = services.sync_offsite()
    # The older one was uploaded first; the newer one was gone by its turn.
    assert [c.name for c in report.uploaded] == [older.name]
    assert report.failed == {}
    assert services.offsite_failure() is None


def test_a_pending_copy_of_unknown_age_is_pending(studio_db: StudioDB) -> None:
    studio_db.state_file.write_text(
        json.dumps({state.OFFSITE_PENDING: {"backup_20260304_153045.db": "not a time"}})
    )
    assert services.offsite_status().of("backup_20260304_153045.db") == "pending"


def test_a_day_with_its_backup_asks_the_storage_nothing(
    studio_db: StudioDB, settings: SettingsWrapper, tmp_path: Path
) -> None:
    use_offsite(settings, "drive", folder_storage(tmp_path / "drive"))
    assert services.backup_if_needed() is not None
    # The storage goes away; every copy is recorded as made, so nothing needs it.
    (tmp_path / "drive").rename(tmp_path / "gone")
    (tmp_path / "drive").write_text("not a folder")
    assert services.backup_if_needed() is None
    assert services.backup_if_needed(daily_job=True) is None
    assert services.offsite_failure() is None
    # Once a copy is recorded as failed, the daily job (only it) tries again.
    state.update(studio_db.state_file, **{state.OFFSITE_FAILED_COPIES: {"x": "y"}})
    assert services.backup_if_needed() is None
    assert services.offsite_failure() is None
    assert services.backup_if_needed(daily_job=True) is None
    assert services.offsite_failure() is not None


def test_copies_are_unknown_until_the_storage_was_looked_at(
    studio_db: StudioDB, settings: SettingsWrapper, tmp_path: Path
) -> None:
    # A state file from before this version: nothing recorded of the copies.
    backup = services.backup_now()
    use_offsite(settings, "drive", folder_storage(tmp_path / "drive"))
    assert services.offsite_status().of(backup.name) == "unknown"
    # A sync that cannot list the storage does not call them failed.
    (tmp_path / "drive").write_text("not a folder")
    with pytest.raises(OffsiteFailed):
        services.sync_offsite()
    assert services.offsite_status().of(backup.name) == "unknown"


def test_a_copy_made_stays_made_when_retention_fails_after_it(
    studio_db: StudioDB, settings: SettingsWrapper, tmp_path: Path
) -> None:
    # Old copies cannot be deleted (an S3 bucket with object lock, say).
    use_offsite(
        settings,
        "locked",
        {"BACKEND": "tests.offsite_helpers.KeepingStorage", "OPTIONS": {"location": str(tmp_path)}},
        MAX_BACKUPS=1,
    )
    first = services.backup_now()
    second = services.backup_now()
    assert services.offsite_failure() is not None
    status = services.offsite_status()
    assert status.of(first.name) == "copied"
    assert status.of(second.name) == "copied"


def test_a_damaged_backup_is_reported_once_not_at_every_sync(
    studio_db: StudioDB, settings: SettingsWrapper, tmp_path: Path
) -> None:
    settings.ADMINS = [("Studio owner", "owner@studio.test")]
    backup = services.backup_now()
    with backup.path.open("r+b") as f:
        f.seek(200)
        f.write(b"\xff")
    use_offsite(settings, "drive", folder_storage(tmp_path / "drive"))
    assert services.sync_offsite().failed != {}
    assert services.find_backup(backup.name).failed_check
    assert services.sync_offsite().failed == {}
    assert background.wait(30)
    assert len(mail.outbox) == 1


def copied_with_a_changed_manifest(
    settings: SettingsWrapper, tmp_path: Path, change: Callable[[dict[str, Any]], object]
) -> archive.BackupFile:
    """A backup, copied to a folder storage, whose off-site manifest ``change`` then edits."""
    drive = tmp_path / "drive"
    use_offsite(settings, "drive", folder_storage(drive))
    backup = services.backup_now()
    manifest_path = drive / f"{backup.name}.json"
    manifest = json.loads(manifest_path.read_text())
    change(manifest)
    manifest_path.write_text(json.dumps(manifest))
    return backup


def test_a_copy_with_a_bad_time_in_its_manifest_is_dated_by_its_name(
    studio_db: StudioDB, settings: SettingsWrapper, tmp_path: Path
) -> None:
    # A time without a UTC offset.
    backup = copied_with_a_changed_manifest(
        settings, tmp_path, lambda manifest: manifest.update(created_at="2026-03-04T15:30:45")
    )
    [copy] = services.offsite_copies()
    assert copy.created_at == archive.time_of_name(backup.name, timezone.utc)
    services.backup_now()  # retention reads it without failing
    assert services.offsite_failure() is None


def test_a_sync_keeps_what_its_own_retention_wants(
    studio_db: StudioDB, settings: SettingsWrapper, tmp_path: Path
) -> None:
    import time_machine

    from .backup_helpers import HERMOSILLO

    for n in range(70):
        day = date(2026, 1, 1) + timedelta(days=n)
        with time_machine.travel(datetime(day.year, day.month, day.day, 3, tzinfo=HERMOSILLO)):
            services.backup_if_needed()
    use_offsite(settings, "drive", folder_storage(tmp_path / "drive"), MAX_BACKUPS=3)
    services.sync_offsite()
    use_offsite(
        settings, "drive", folder_storage(tmp_path / "drive"), MAX_BACKUPS=3, KEEP={"MONTHLY": 3}
    )
    first = services.sync_offsite()
    assert first.deleted == []
    second = services.sync_offsite()
    assert (second.uploaded, second.deleted) == ([], [])
    # The newest 3, and the newest of February (January's are gone locally: MAX_BACKUPS).
    assert [c.name for c in services.offsite_copies()] == [
        "backup_20260311_030000.db",
        "backup_20260310_030000.db",
        "backup_20260309_030000.db",
        "backup_20260228_030000.db",
    ]


def test_a_downloaded_copy_counts_as_checked(
    studio_db: StudioDB, settings: SettingsWrapper, tmp_path: Path
) -> None:
    use_offsite(settings, "drive", folder_storage(tmp_path / "drive"))
    backup = services.backup_if_needed()
    assert backup is not None
    os.unlink(backup.path)
    fetched = services.download_offsite(backup.name)
    assert fetched.verified
    assert fetched.sound


def test_a_copy_uploaded_without_a_check_record_downloads_as_unchecked(
    studio_db: StudioDB, settings: SettingsWrapper, tmp_path: Path
) -> None:
    # Uploaded by a version that kept no check record.
    backup = copied_with_a_changed_manifest(
        settings, tmp_path, lambda manifest: manifest["manifest"].pop("verification")
    )
    os.unlink(backup.path)
    fetched = services.download_offsite(backup.name)
    assert fetched.sha256 == backup.sha256
    assert fetched.check is None


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (
            "storages.backends.s3.S3Storage",
            "STORAGES['remote'], the storage for off-site copies, must be a dict with a "
            "BACKEND, not a str.",
        ),
        (
            {"OPTIONS": {"password": "secret"}},
            "STORAGES['remote'], the storage for off-site copies, has no BACKEND.",
        ),
        (
            {"BACKEND": "os.path.join"},
            "The storage 'remote' for off-site copies cannot be loaded: its BACKEND "
            "'os.path.join' is not a class.",
        ),
        (
            {"BACKEND": "broken_storage.Storage"},
            "The storage 'remote' for off-site copies cannot be loaded: its BACKEND "
            "'broken_storage.Storage' fails with RuntimeError: needs AWS_REGION",
        ),
    ],
)
def test_a_storage_that_cannot_be_made_is_a_system_check_not_a_crash(
    studio_db: StudioDB,
    settings: SettingsWrapper,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    entry: Any,
    message: str,
) -> None:
    # check runs before every manage.py command: an exception there would stop them all.
    (tmp_path / "broken_storage.py").write_text('raise RuntimeError("needs AWS_REGION")\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    use_offsite(settings, "remote", entry, COMPRESS=None)
    assert offsite_conf.offsite_problems() == []  # (reading the settings loads nothing)
    [problem] = offsite_conf.storage_problems()
    assert (problem.id, problem.message) == ("studio_backups.E047", message)
    assert [m.id for m in checks.run_checks() if m.id == "studio_backups.E047"] == [problem.id]
    assert "secret" not in f"{problem.message} {problem.hint}"


@pytest.mark.parametrize(
    ("backend", "library", "hint"),
    [
        ("storages.backends.s3.S3Storage", "boto3", "Install django-studio-backups[s3]."),
        (
            "storages.backends.sftpstorage.SFTPStorage",
            "paramiko",
            "Install django-studio-backups[sftp].",
        ),
    ],
)
def test_a_storage_without_its_client_library_is_a_system_check(
    studio_db: StudioDB,
    settings: SettingsWrapper,
    monkeypatch: pytest.MonkeyPatch,
    backend: str,
    library: str,
    hint: str,
) -> None:
    use_offsite(settings, "remote", {"BACKEND": backend, "OPTIONS": {}}, COMPRESS=None)
    assert offsite_conf.storage_problems() == []
    # As in a project that installed only [offsite]: the backend's module fails to import.
    monkeypatch.setitem(sys.modules, library, None)
    monkeypatch.delitem(sys.modules, backend.rsplit(".", 1)[0], raising=False)
    [problem] = offsite_conf.storage_problems()
    assert problem.id == "studio_backups.E047"
    assert problem.message.startswith(
        f"The storage 'remote' for off-site copies cannot be loaded: its BACKEND {backend!r} fails"
    )
    assert problem.hint == hint
    # The local backup is made, and the off-site failure recorded and reported.
    result = run_manage(
        studio_db,
        "backup_now",
        env={"STUDIO_TEST_STORAGES": json.dumps({"remote": {"BACKEND": "no.such.Storage"}})},
        OFFSITE={"STORAGE": "remote", "COMPRESS": None},
    )
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()).exists()
    assert "Cannot open the storage 'remote'" in result.stderr
    error = state.read(studio_db.state_file)[state.OFFSITE_ERROR]
    assert "Cannot open the storage 'remote'" in error
    checked = run_manage(
        studio_db,
        "check",
        env={"STUDIO_TEST_STORAGES": json.dumps({"remote": {"BACKEND": "no.such.Storage"}})},
        OFFSITE={"STORAGE": "remote", "COMPRESS": None},
    )
    assert checked.returncode == 1
    assert "studio_backups.E047" in checked.stderr
    assert "Install the package that provides it, or fix the BACKEND path." in checked.stderr


def test_off_site_commands_with_v0_print_nothing(
    studio_db: StudioDB, drive: Path, age_key: AgeKey
) -> None:
    backup = services.backup_now()
    studio_db.add_clients("Carla")
    out = StringIO()
    call_command("sync_offsite", verbosity=0, stdout=out)
    call_command(
        "restore_backup",
        "--offsite",
        backup.name,
        "--identity",
        str(age_key.path),
        "--no-input",
        verbosity=0,
        stdout=out,
    )
    assert out.getvalue() == ""
    assert studio_db.clients() == ["Ana", "Beto"]
