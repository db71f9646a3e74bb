"""What the app does when Litestream is missing, misbehaves or is already running, and the
command line's limits on --at. A stand-in for the binary is a shell script only where the
real one cannot be made to fail that way (unreadable output, a restore that writes nothing)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from pytest_django.fixtures import Settings as SettingsWrapper

from django_studio_backups import checks, conf, engine_restore, locking, replication, services
from django_studio_backups.exceptions import ReplicationFailed, RestoreFailed
from django_studio_backups.management.commands.list_backups import ago
from django_studio_backups.point_in_time import BadMoment
from tests.conftest import StudioDB, run_manage
from tests.replication_helpers import LITESTREAM, Replicator, get_replication_config_for

LTX = [{"level": 0, "min_txid": "01", "max_txid": "01", "timestamp": "2026-12-01T10:00:00Z"}]
# As Litestream lists a large database's replica soon after it started: the first
# transaction's file (the whole database), the next ones, and the first snapshot, which is
# written after them.
FIRST_MINUTES = [
    {"level": 0, "min_txid": "0000000000000001", "max_txid": "0000000000000001",
     "timestamp": "2026-12-01T10:00:00Z"},
    {"level": 0, "min_txid": "0000000000000002", "max_txid": "0000000000000002",
     "timestamp": "2026-12-01T10:00:05Z"},
    {"level": 9, "min_txid": "0000000000000001", "max_txid": "0000000000000002",
     "timestamp": "2026-12-01T10:01:30Z"},
    {"level": 0, "min_txid": "0000000000000003", "max_txid": "0000000000000003",
     "timestamp": "2026-12-01T10:01:40Z"},
]  # fmt: skip


def stand_in(folder: Path, **answers: str) -> str:
    """An executable that prints ``answers[command]`` for ``litestream command ...`` and exits
    0; ``exit=N`` makes every command exit with N instead."""
    script = folder / "litestream"
    cases = "".join(
        f"  {command}) printf '%s\\n' {json.dumps(text)} ;;\n" for command, text in answers.items()
    )
    code = answers.pop("exit", None)
    script.write_text(
        "#!/bin/sh\n"
        + (f"exit {code}\n" if code is not None else "")
        + f'case "$1" in\n{cases}esac\n'
    )
    script.chmod(0o755)
    return str(script)


@pytest.fixture
def replicate_with(studio_db: StudioDB, settings: SettingsWrapper, tmp_path: Path) -> Any:
    def use(binary: str | None = None, **more: Any) -> dict[str, Any]:
        replica = {"URL": f"file://{tmp_path / 'replica'}", "BINARY": binary, **more}
        settings.STUDIO_BACKUPS = {**settings.STUDIO_BACKUPS, "REPLICATION": replica}
        return replica

    return use


def test_the_binary_is_found_where_it_is_said_to_be_or_on_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    given = get_replication_config_for({"URL": "file:///r", "BINARY": str(LITESTREAM)})
    assert replication.executable(given) == str(LITESTREAM)
    (tmp_path / "bin").mkdir()
    (tmp_path / "path").mkdir()
    monkeypatch.setattr(sys, "executable", str(tmp_path / "bin" / "python"))
    monkeypatch.setenv("PATH", str(tmp_path / "path"))
    (tmp_path / "path" / "litestream").symlink_to(LITESTREAM)
    found = get_replication_config_for({"URL": "file:///r"})
    assert replication.executable(found) == str(tmp_path / "path" / "litestream")


def test_a_binary_that_cannot_run(replicate_with: Any, tmp_path: Path) -> None:
    broken = tmp_path / "litestream"
    broken.write_bytes(b"\x7fELF not really")
    broken.chmod(0o755)
    replicate_with(str(broken))
    with pytest.raises(ReplicationFailed, match=r"litestream ltx failed: .*Exec format error"):
        services.replication_status()


def test_output_the_app_cannot_read(replicate_with: Any, tmp_path: Path) -> None:
    replicate_with(stand_in(tmp_path, ltx="this is not JSON"))
    with pytest.raises(ReplicationFailed, match="litestream ltx said what this app cannot read"):
        services.replication_status()
    with pytest.raises(RestoreFailed, match="Could not read the replica: litestream ltx said"):
        services.restore_to_moment(None)


def test_a_status_the_app_cannot_read(
    studio_db: StudioDB, replicate_with: Any, tmp_path: Path
) -> None:
    replicate_with(stand_in(tmp_path, ltx=json.dumps(LTX), status="nope"))
    config = conf.get_config()
    config.directory.mkdir(parents=True, exist_ok=True)
    # As if `replicate` ran: it holds this lock.
    with locking.exclusive(config.directory / replication.LOCK_NAME, 1):
        with pytest.raises(ReplicationFailed, match="litestream status said what this app"):
            services.replication_status()
        reason = services.replication_trouble()
    assert reason is not None
    assert reason.startswith("the replica cannot be read: litestream status said")


def test_a_restore_that_writes_nothing(
    studio_db: StudioDB, replicate_with: Any, tmp_path: Path, failures: list[Any]
) -> None:
    replicate_with(stand_in(tmp_path, ltx=json.dumps(LTX), restore="done"))
    before = studio_db.clients()
    with pytest.raises(RestoreFailed, match="litestream restore wrote no database"):
        services.restore_to_moment(None)
    assert studio_db.clients() == before
    assert [f["kind"] for f in failures] == ["restore"]
    assert not any(p.name.startswith(".tmp-") for p in studio_db.backups.iterdir())


def test_an_empty_replica_has_nothing_to_restore(replicate_with: Any) -> None:
    replicate_with()
    assert services.replication_status().window is None
    with pytest.raises(BadMoment, match="The replica holds nothing yet"):
        services.restore_to_moment(None)


def test_a_litestream_that_stops_by_itself_is_reported(
    studio_db: StudioDB, replicate_with: Any, tmp_path: Path
) -> None:
    replica = replicate_with(stand_in(tmp_path, exit="3"))
    result = run_manage(studio_db, "replicate", REPLICATION=replica)
    assert result.returncode == 1
    assert "litestream replicate stopped by itself (exit status 3)" in result.stderr
    assert result.stderr.strip().endswith(
        "CommandError: litestream replicate ended with exit status 3."
    )


def test_one_replicate_at_a_time(
    studio_db: StudioDB, replicate_with: Any, settings: SettingsWrapper
) -> None:
    replica = replicate_with()
    first = Replicator(studio_db, {"REPLICATION": replica}, {})
    first.start()
    try:
        second = run_manage(studio_db, "replicate", REPLICATION=replica)
        assert second.returncode == 1
        assert "is running already (another `manage.py replicate` holds its lock)" in (
            second.stderr
        )
    finally:
        code, output = first.stop()
    assert code == 0, output


def test_the_configuration_file_cannot_be_written(studio_db: StudioDB, replicate_with: Any) -> None:
    replicate_with()
    config = conf.get_config()
    (config.directory / replication.CONFIG_NAME).mkdir(parents=True)
    with pytest.raises(ReplicationFailed, match=r"Cannot write .*\.litestream\.yml"):
        services.replication_status()


def test_restore_at_needs_replication_and_is_alone(studio_db: StudioDB) -> None:
    with pytest.raises(CommandError, match="Replication is not configured"):
        call_command("restore_backup", "--at", "latest", "--no-input", stdout=io.StringIO())
    for mixed in (["backup_x.db", "--at", "latest"], ["--latest", "--at", "latest"]):
        with pytest.raises(CommandError, match="pass --latest or --at \\(one\\)"):
            call_command("restore_backup", *mixed, "--no-input")
    with pytest.raises(CommandError, match="--at restores from the replica, not from off-site"):
        call_command("restore_backup", "--at", "latest", "--offsite", "--no-input")
    assert os.path.exists(studio_db.path)


def test_list_backups_when_the_replica_cannot_be_read(replicate_with: Any, tmp_path: Path) -> None:
    replicate_with(stand_in(tmp_path, ltx="garbage"))
    out, err = io.StringIO(), io.StringIO()
    call_command("list_backups", stdout=out, stderr=err)
    assert "Warning: cannot read the replica: litestream ltx said what this app" in err.getvalue()
    assert "Point-in-time" not in out.getvalue()


def test_nothing_listed_is_an_empty_replica(replicate_with: Any, tmp_path: Path) -> None:
    replicate_with(stand_in(tmp_path, ltx=""))
    assert services.replication_status().window is None


@pytest.mark.parametrize(
    ("seconds", "said"),
    [
        (5, "5 seconds ago"),
        (119, "119 seconds ago"),
        (600, "10 minutes ago"),
        (10800, "3 hours ago"),
    ],
)
def test_how_long_ago_the_window_ends(seconds: int, said: str) -> None:
    assert ago(timedelta(seconds=seconds)) == said


def test_a_fetch_that_waits_too_long_for_the_folder_is_reported(
    studio_db: StudioDB,
    replicate_with: Any,
    settings: SettingsWrapper,
    tmp_path: Path,
    failures: list[Any],
) -> None:
    replicate_with(stand_in(tmp_path, ltx=json.dumps(LTX)))
    settings.STUDIO_BACKUPS = {**settings.STUDIO_BACKUPS, "LOCK_TIMEOUT": 0.2}
    config = conf.get_config()
    config.directory.mkdir(parents=True, exist_ok=True)
    held = locking.exclusive(config.directory / locking.LOCK_NAME, 1)
    with held, pytest.raises(RestoreFailed, match="has held"):
        services.fetch_moment(None)
    assert [f["kind"] for f in failures] == ["restore"]


def test_checks_leave_wrong_settings_to_check_settings(
    studio_db: StudioDB, replicate_with: Any
) -> None:
    replicate_with(None, SYNC_INTERVAL=0)
    assert checks.check_replication() == []
    config = conf.get_config()
    config.directory.mkdir(parents=True, exist_ok=True)
    # Even while a replicate runs (holds its lock).
    with locking.exclusive(config.directory / replication.LOCK_NAME, 1):
        assert checks.check_replication_lag() == []


@pytest.mark.parametrize(("replicated", "checkpoint"), [(False, "TRUNCATE"), (True, "PASSIVE")])
def test_a_replicated_database_gets_passive_checkpoints_only(
    studio_db: StudioDB,
    replicate_with: Any,
    monkeypatch: pytest.MonkeyPatch,
    replicated: bool,
    checkpoint: str,
) -> None:
    # On a SQLite without the WAL-reset bug a restore's checkpoint would TRUNCATE the -wal,
    # resetting it under Litestream, which tracks the -wal itself.
    monkeypatch.setattr(engine_restore, "HAS_WAL_RESET_BUG", False)
    if replicated:
        replicate_with()
    backup = services.backup_now()
    studio_db.add_clients(*[f"c{i}" for i in range(200)])
    # Another connection stays open, as the site's would: SQLite deletes the -wal when the
    # last one closes.
    with contextlib.closing(studio_db.connect()) as site:
        site.execute("SELECT count(*) FROM studio_client").fetchone()
        services.restore(backup.name)
        wal = Path(f"{studio_db.path}-wal")
        # TRUNCATE leaves an empty -wal; PASSIVE moves the pages and leaves its size.
        assert (wal.stat().st_size == 0) == (checkpoint == "TRUNCATE")
    assert studio_db.clients() == ["Ana", "Beto"]


def test_the_window_starts_at_the_first_file_that_holds_the_whole_database(
    replicate_with: Any, tmp_path: Path
) -> None:
    replicate_with(stand_in(tmp_path, ltx=json.dumps(FIRST_MINUTES)))
    found = services.replication_status().window
    assert found is not None
    # (The next whole second: Litestream lists times cut to the second.)
    assert found.start.isoformat() == "2026-12-01T10:00:01+00:00"
    assert found.end.isoformat() == "2026-12-01T10:01:40+00:00"
    # Once retention dropped the first transaction's file, only snapshots start a restore.
    later = [f for f in FIRST_MINUTES if f["max_txid"] != "0000000000000001"]
    replicate_with(stand_in(tmp_path, ltx=json.dumps(later)))
    found = services.replication_status().window
    assert found is not None
    assert found.start.isoformat() == "2026-12-01T10:01:31+00:00"
    # Files of later transactions alone (the rest not there yet, or lost) restore nothing.
    partial = [f for f in FIRST_MINUTES if f["min_txid"] != "0000000000000001"]
    replicate_with(stand_in(tmp_path, ltx=json.dumps(partial)))
    assert services.replication_status().window is None
