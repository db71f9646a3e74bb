"""Off-site copies over SFTP (OpenSSH's sshd) and S3 (moto), real servers on 127.0.0.1."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from io import StringIO
from pathlib import Path

import pytest
import zstandard
from django.core.management import call_command
from pytest_django.fixtures import Settings as SettingsWrapper

from django_studio_backups import offsite, services, state

from .conftest import REPO, StudioDB, command_env, fill_database
from .offsite_helpers import AgeKey, age_decrypt, use_offsite
from .offsite_servers import S3Server, SSHServer


@pytest.fixture
def s3(tmp_path: Path) -> Iterator[S3Server]:
    server = S3Server(tmp_path)
    server.start()
    yield server
    server.stop()


def unzstd(data: bytes) -> bytes:
    return zstandard.ZstdDecompressor().decompressobj().decompress(data)


def command(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out, stderr=StringIO())
    return out.getvalue()


def when(condition: Callable[[], bool], action: Callable[[], None]) -> threading.Thread:
    """Run ``action`` in a thread as soon as ``condition`` holds (within 60 s)."""

    def watch() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if condition():
                action()
                return
            time.sleep(0.005)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_sftp_copy_restore_and_age_cli(
    studio_db: StudioDB, sshd: SSHServer, settings: SettingsWrapper, age_key: AgeKey
) -> None:
    use_offsite(settings, "sftp", sshd.storage(), ENCRYPT_TO=[age_key.recipient])
    backup = services.backup_now()

    stored = sshd.root / f"{backup.name}.zst.age"
    assert sorted(p.name for p in sshd.root.iterdir()) == [f"{backup.name}.json", stored.name]
    assert unzstd(age_decrypt(stored, age_key)) == backup.path.read_bytes()
    assert offsite.names() == {backup.name}

    studio_db.add_clients("Carla")
    os.unlink(backup.path)
    command(
        "restore_backup", "--offsite", backup.name, "--identity", str(age_key.path), "--noinput"
    )
    assert studio_db.clients() == ["Ana", "Beto"]


def test_s3_copy_restore_and_age_cli(
    studio_db: StudioDB, s3: S3Server, settings: SettingsWrapper, age_key: AgeKey
) -> None:
    use_offsite(settings, "s3", s3.storage(), ENCRYPT_TO=[age_key.recipient], COMPRESS="gzip")
    backup = services.backup_now()

    key = f"studio/{backup.name}.gz.age"
    assert s3.keys() == [key, f"studio/{backup.name}.json"]
    sealed = Path(studio_db.path.parent / "copy.gz.age")
    sealed.write_bytes(s3.get(key))
    gunzipped = subprocess.run(
        ["gzip", "-d", "-c"], input=age_decrypt(sealed, age_key), capture_output=True, check=True
    ).stdout
    assert gunzipped == backup.path.read_bytes()
    assert json.loads(s3.get(f"studio/{backup.name}.json"))["sha256"] == backup.sha256

    studio_db.add_clients("Carla")
    os.unlink(backup.path)
    command(
        "restore_backup", "--offsite", backup.name, "--identity", str(age_key.path), "--noinput"
    )
    assert studio_db.clients() == ["Ana", "Beto"]
    [safety] = [b for b in services.backups() if b.kind == "safety"]
    # Retention deletes the old copy's manifest and data object; the restore's safety
    # backup, copied too, is kept under its own count.
    use_offsite(
        settings, "s3", s3.storage(), ENCRYPT_TO=[age_key.recipient], COMPRESS="gzip",
        MAX_BACKUPS=1,
    )  # fmt: skip
    newest = services.backup_now()
    assert s3.keys() == sorted(
        f"studio/{name}{suffix}"
        for name in (newest.name, safety.name)
        for suffix in (".gz.age", ".json")
    )


@pytest.mark.slow
def test_sftp_server_killed_mid_upload(
    studio_db: StudioDB, sshd: SSHServer, settings: SettingsWrapper, age_key: AgeKey
) -> None:
    fill_database(studio_db.path, 64)
    use_offsite(settings, "sftp", sshd.storage(), ENCRYPT_TO=[age_key.recipient])

    def uploading() -> bool:
        return any(
            p.name.endswith(".age") and p.stat().st_size > 4_000_000 for p in sshd.root.iterdir()
        )

    killer = when(uploading, sshd.kill)
    backup = services.backup_now()
    killer.join()

    # The local backup stands, checked; the failure is on record.
    assert services.verify(backup) == []
    assert (
        f"Uploading {backup.name}.zst.age to 'sftp' failed"
        in (state.read(studio_db.state_file)[state.OFFSITE_ERROR])
    )
    # What the server had received stays on its disk, without a manifest.
    partial = sshd.root / f"{backup.name}.zst.age"
    assert 4_000_000 < partial.stat().st_size < backup.size
    assert not (sshd.root / f"{backup.name}.json").exists()

    sshd.start()
    assert offsite.copies() == []  # nothing partial is visible
    assert command("sync_offsite") == f"Uploaded {partial.name}\n"
    assert unzstd(age_decrypt(partial, age_key)) == backup.path.read_bytes()
    assert offsite.names() == {backup.name}
    assert offsite.last_failure() is None


@pytest.mark.slow
def test_s3_server_killed_mid_upload(
    studio_db: StudioDB, s3: S3Server, settings: SettingsWrapper, age_key: AgeKey
) -> None:
    fill_database(studio_db.path, 64)
    use_offsite(settings, "s3", s3.storage(), ENCRYPT_TO=[age_key.recipient])
    killer = when(lambda: bool(s3.uploads_in_progress()), s3.kill)
    backup = services.backup_now()
    killer.join()

    assert services.verify(backup) == []
    assert "failed" in state.read(studio_db.state_file)[state.OFFSITE_ERROR]
    # moto keeps objects in memory, so a new server starts empty, like a new bucket.
    s3.start()
    assert offsite.copies() == []
    assert command("sync_offsite") == f"Uploaded {backup.name}.zst.age\n"
    assert offsite.names() == {backup.name}


@pytest.mark.slow
def test_s3_client_killed_mid_upload_leaves_no_object(
    studio_db: StudioDB, s3: S3Server, settings: SettingsWrapper, age_key: AgeKey
) -> None:
    fill_database(studio_db.path, 64)
    offsite_settings = {"STORAGE": "s3", "ENCRYPT_TO": [age_key.recipient]}
    env = command_env(studio_db, OFFSITE=offsite_settings)
    env["STUDIO_TEST_STORAGES"] = json.dumps({"s3": s3.storage()})
    process = subprocess.Popen(
        [sys.executable, "-m", "django", "backup_now"],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )

    def parts_uploaded() -> bool:
        client = s3.client()
        return any(
            client.list_parts(Bucket="studio-offsite", Key=u["Key"], UploadId=u["UploadId"]).get(
                "Parts"
            )
            for u in s3.uploads_in_progress()
        )

    killer = when(parts_uploaded, lambda: process.send_signal(signal.SIGKILL))
    process.communicate(timeout=120)
    killer.join()
    assert process.returncode == -signal.SIGKILL

    # The multipart upload was cut off: S3 shows no object until it completes.
    [upload] = s3.uploads_in_progress()
    [backup] = services.backups()
    assert upload["Key"] == f"studio/{backup.name}.zst.age"
    assert s3.keys() == []
    assert services.verify(backup) == []

    use_offsite(settings, "s3", s3.storage(), ENCRYPT_TO=[age_key.recipient])
    assert offsite.copies() == []
    assert command("sync_offsite") == f"Uploaded {backup.name}.zst.age\n"
    sealed = studio_db.path.parent / "copy.zst.age"
    sealed.write_bytes(s3.get(f"studio/{backup.name}.zst.age"))
    assert unzstd(age_decrypt(sealed, age_key)) == backup.path.read_bytes()


# Peak RSS from VmHWM: getrusage()'s ru_maxrss survives exec(), so a child of the big pytest
# process would report pytest's own peak.
MEASURE = """
import django
django.setup()
from django_studio_backups import offsite

def peak():
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmHWM:"))
    return int(line.split()[1]) // 1024

# Listing first loads the storage's own libraries (boto3 and its S3 model: ~35 MB), a fixed
# cost; what follows is what the upload of the backup adds.
start = peak()
assert offsite.copies() == []
before = peak()
report = offsite.sync()
assert len(report.uploaded) == 1, report
print(start, before, peak())
"""


@pytest.mark.slow
@pytest.mark.parametrize("where", ["folder", "s3"])
def test_memory_stays_bounded_while_a_200_mb_backup_uploads(
    studio_db: StudioDB, tmp_path: Path, age_key: AgeKey, where: str, request: pytest.FixtureRequest
) -> None:
    fill_database(studio_db.path, 200)
    backup = services.backup_now()
    assert backup.size > 200_000_000
    if where == "s3":
        storage = request.getfixturevalue("s3").storage()
    else:
        storage = {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path / "drive")},
        }
    env = command_env(studio_db, OFFSITE={"STORAGE": "x", "ENCRYPT_TO": [age_key.recipient]})
    env["STUDIO_TEST_STORAGES"] = json.dumps({"x": storage})
    done = subprocess.run(
        [sys.executable, "-c", MEASURE], env=env, cwd=REPO, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    start, before, after = map(int, done.stdout.split())
    print(f"{where}: peak RSS {start} MB at start, {before} MB listed, {after} MB uploaded")
    # Tens of MB for the storage client's buffers (boto3 keeps several 8 MB parts in
    # flight: +50 MB on Python 3.11, +61 MB on 3.13); a copy held in memory would add at
    # least the 200 MB of random data, which does not compress.
    assert after - before < 100, (before, after)
