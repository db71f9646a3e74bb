from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from django_studio_backups import archive, backing_up, conf, locking, retention, state
from tests.conftest import mounted_tmpfs


def backup_file(directory: Path, name: str, manifest: object = None) -> Path:
    path = directory / name
    path.write_bytes(b"SQLite format 3\x00" + b"\x00" * 200)
    if manifest is not None:
        target = archive.manifest_path_for(path)
        target.write_text(manifest if isinstance(manifest, str) else json.dumps(manifest))
    return path


@pytest.mark.parametrize(
    "manifest",
    [None, "{broken", "[1, 2]", {"created_at": "soon"}, {"created_at": "2026-03-04T15:30:45"}],
)
def test_unusable_manifests_fall_back_to_the_name(tmp_path: Path, manifest: object) -> None:
    path = backup_file(tmp_path, "backup_20260304_153045.db", manifest)
    # The file's time says nothing: a copy put back from a drive is as old as its name.
    os.utime(path, (1_700_000_000, 1_700_000_000))
    (listed,) = archive.list_backup_files(tmp_path, ZoneInfo("America/Hermosillo"))
    assert listed.created_at == datetime(
        2026, 3, 4, 15, 30, 45, tzinfo=ZoneInfo("America/Hermosillo")
    )
    assert listed.kind == "unknown"
    assert listed.sha256 is None
    assert listed.migrations is None
    assert not listed.verified


def test_manifests_are_read_again_only_when_they_change(tmp_path: Path) -> None:
    path = backup_file(tmp_path, "backup_20260304_153045.db", {"kind": "daily"})
    assert archive.read_manifest(path) == {"kind": "daily"}
    target = archive.manifest_path_for(path)
    target.write_text(json.dumps({"kind": "safety", "note": "a longer manifest"}))
    assert archive.read_manifest(path)["kind"] == "safety"
    target.unlink()
    assert archive.read_manifest(path) == {}


def test_a_manifest_that_is_a_dangling_symlink_counts_as_missing(tmp_path: Path) -> None:
    path = backup_file(tmp_path, "backup_20260304_153045.db", {"kind": "daily"})
    target = archive.manifest_path_for(path)
    target.unlink()
    target.symlink_to(tmp_path / "gone.json")
    (listed,) = archive.list_backup_files(tmp_path)
    assert listed.manifest == {}
    assert listed.kind == "unknown"


def test_listing_skips_what_is_not_a_backup_file(tmp_path: Path) -> None:
    (tmp_path / "backup_20260304_153045.db").mkdir()
    backup_file(tmp_path, "backup_20260304_153046.db")
    (tmp_path / "backup_20260304_153047.db").symlink_to(tmp_path / "backup_20260304_153046.db")
    assert [b.name for b in archive.list_backup_files(tmp_path)] == ["backup_20260304_153046.db"]
    assert archive.list_backup_files(tmp_path / "missing") == []
    (tmp_path / "a-file").write_text("")
    assert archive.list_backup_files(tmp_path / "a-file") == []


def test_a_backup_deleted_while_listing_is_left_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    doomed = backup_file(tmp_path, "backup_20260304_153045.db")
    backup_file(tmp_path, "backup_20260304_153046.db")
    entries = list(os.scandir(tmp_path))
    # Another process (retention, the admin) deletes it between scandir() and stat().
    doomed.unlink()
    monkeypatch.setattr(os, "scandir", lambda directory: iter(entries))
    assert [b.name for b in archive.list_backup_files(tmp_path)] == ["backup_20260304_153046.db"]


def test_a_failed_json_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    with mounted_tmpfs(tmp_path / "small", "size=64k") as small:
        target = small / "settings.json"
        target.write_text('{"keep": true}')
        (small / "filler").write_bytes(b"\x00" * (64 * 1024 - 8192))
        with pytest.raises(OSError, match="No space"):
            archive.replace_json(target, {"keep": True, "big": "x" * 100_000})
        assert json.loads(target.read_text()) == {"keep": True}
        assert sorted(p.name for p in small.iterdir()) == ["filler", "settings.json"]
        assert not state.update(target, big="x" * 100_000)
        assert json.loads(target.read_text()) == {"keep": True}


def test_lock_is_seen_from_another_process_and_freed_by_its_death(tmp_path: Path) -> None:
    lock = tmp_path / locking.LOCK_NAME
    assert not locking.is_locked(lock)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, os, sys, time\n"
            f"fd = os.open({str(lock)!r}, os.O_RDWR | os.O_CREAT)\n"
            "fcntl.flock(fd, fcntl.LOCK_EX)\n"
            "print('locked', flush=True)\n"
            "time.sleep(60)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "locked\n"
        assert locking.is_locked(lock)
        with pytest.raises(locking.LockTimeout), locking.exclusive(lock, 0.1):
            pass
    finally:
        holder.kill()
        holder.communicate()
    assert not locking.is_locked(lock)
    with locking.exclusive(lock, 0.1):
        assert locking.is_locked(lock)


def test_retention_counts_protected_files_towards_the_limit(tmp_path: Path) -> None:
    paths = [
        backup_file(tmp_path, f"backup_20260304_15304{i}.db", {"kind": "daily"}) for i in range(5)
    ]
    listed = archive.list_backup_files(tmp_path)
    traits = backing_up.TRAITS

    def expired(newest: int, protected: set[Path] | None = None) -> list[Path]:
        policy = conf.Policy(newest)
        found = retention.expired(listed, policy, traits, timezone.utc, protected=protected or ())
        return [b.path for b in found]

    assert expired(2) == paths[2::-1]
    assert expired(2, {paths[0]}) == [paths[3], paths[2], paths[1]]
    assert expired(10) == []


def test_a_manifest_whose_backup_is_gone_is_cleared(tmp_path: Path) -> None:
    kept = backup_file(tmp_path, "backup_20260304_153045.db", {"kind": "daily"})
    orphan = archive.manifest_path_for(tmp_path / "backup_20260304_153046.db")
    orphan.write_text("{}")
    foreign = tmp_path / "notes.db.json"
    foreign.write_text("{}")
    assert archive.remove_temporary_files(tmp_path) == [orphan]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        kept.name,
        kept.name + ".json",
        "notes.db.json",
    ]
