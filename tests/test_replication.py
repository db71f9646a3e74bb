"""Continuous replication through the real Litestream binary, and point-in-time restores
from its replica: a folder replica and an S3 one (moto), with real writer processes."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.core.management import call_command
from django.utils import timezone
from pytest_django.fixtures import Settings as SettingsWrapper

from django_studio_backups import conf, replication, services
from django_studio_backups.exceptions import ReplicationFailed
from django_studio_backups.point_in_time import BadMoment
from tests.conftest import StudioDB, run_manage
from tests.offsite_servers import BUCKET, S3Server
from tests.replication_helpers import (
    LITESTREAM,
    Replicator,
    add_one_by_one,
    get_replication_config_for,
    replica_clients,
    replicating,
    settle,
    wait_for_replica,
    wait_for_snapshot,
)
from tests.workload import client_writer

S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


@pytest.fixture
def replica(tmp_path: Path) -> dict[str, Any]:
    return {"URL": f"file://{tmp_path / 'replica'}", "SYNC_INTERVAL": 0.5}


@pytest.fixture
def replicated(
    studio_db: StudioDB, settings: SettingsWrapper, replica: dict[str, Any]
) -> Iterator[Replicator]:
    with replicating(studio_db, settings, replica, {}) as replicator:
        yield replicator


def logged(log: Path) -> set[str]:
    return {f"w{line.strip()}" for line in log.read_text().splitlines() if line.strip()}


def test_restore_to_a_moment_between_two_groups_of_writes_while_a_writer_runs(
    studio_db: StudioDB, replicated: Replicator, tmp_path: Path
) -> None:
    add_one_by_one(studio_db, *[f"a{i}" for i in range(5)])
    moment = settle()
    add_one_by_one(studio_db, *[f"b{i}" for i in range(5)])
    with client_writer(studio_db, tmp_path) as log:
        time.sleep(0.5)
        report = services.restore_to_moment(moment)
        time.sleep(0.5)
    restored = studio_db.clients()
    before = ["Ana", "Beto", *[f"a{i}" for i in range(5)]]
    # The data of that moment: every row committed before it, none after.
    assert restored[: len(before)] == before
    assert not any(name.startswith("b") for name in restored)
    assert report.restored.kind == "point-in-time"
    # Dated by the replica's last change before the moment (the a's, synced within 0.5 s),
    # or by the moment itself once the replica holds later changes too.
    made = report.restored.created_at
    assert moment - timedelta(seconds=2.5) <= made <= moment
    # Nothing the writer committed is lost: what it wrote on the old data is in the safety
    # backup, what it wrote after the restore is in the live database.
    assert report.safety_backup is not None
    safety = set(studio_db.clients(report.safety_backup.path))
    assert {f"b{i}" for i in range(5)} <= safety
    assert logged(log) <= safety | set(restored)
    assert logged(log) & set(restored), "the writer went on writing after the restore"
    assert services.verify(report.restored, full=True) == []


def test_a_snapshot_restore_is_replicated_and_a_moment_before_it_comes_back(
    studio_db: StudioDB, replicated: Replicator
) -> None:
    snapshot = services.backup_now()
    add_one_by_one(studio_db, "x0", "x1", "x2")
    before_the_restore = settle()
    services.restore(snapshot.name)
    assert studio_db.clients() == ["Ana", "Beto"]
    # The restore is one more write for Litestream.
    deadline = time.monotonic() + 60
    while replica_clients(studio_db) != ["Ana", "Beto"]:
        assert time.monotonic() < deadline
        time.sleep(0.25)
    out = io.StringIO()
    call_command(
        "restore_backup", "--at", before_the_restore.isoformat(), "--no-input", verbosity=0,
        stdout=out,
    )  # fmt: skip
    assert out.getvalue() == ""
    assert studio_db.clients() == ["Ana", "Beto", "x0", "x1", "x2"]


def test_kill_9_and_restart_lose_nothing_and_catch_up(
    studio_db: StudioDB, settings: SettingsWrapper, replica: dict[str, Any]
) -> None:
    with replicating(studio_db, settings, replica, {}) as replicator:
        add_one_by_one(studio_db, "k0", "k1")
        wait_for_replica(studio_db, {"k0", "k1"})
        assert replicator.process is not None
        litestream = children_of(replicator.process.pid)
        assert litestream, "Litestream runs as the command's child"
        code, _ = replicator.stop(signal.SIGKILL)
        assert code == -signal.SIGKILL
        # Litestream died with it: nothing replicates unseen.
        wait_until_gone(litestream)
        assert not replication.is_running(conf.get_config())
        add_one_by_one(studio_db, "k2", "k3")
        before_the_kill = replica_clients(studio_db)
        assert before_the_kill == ["Ana", "Beto", "k0", "k1"]
    with replicating(studio_db, settings, replica, {}):
        wait_for_replica(studio_db, {"k0", "k1", "k2", "k3"})
        assert replica_clients(studio_db) == ["Ana", "Beto", "k0", "k1", "k2", "k3"]


def children_of(pid: int) -> list[int]:
    listed = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True)
    return [int(p) for p in listed.stdout.split()]


def wait_until_gone(pids: list[int]) -> None:
    deadline = time.monotonic() + 30
    for pid in pids:
        while Path(f"/proc/{pid}").exists() and "Z" not in process_state(pid):
            assert time.monotonic() < deadline, f"process {pid} outlived its parent"
            time.sleep(0.05)


def process_state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return "Z"


def test_a_fresh_machine_recovers_from_the_replica(
    studio_db: StudioDB, replicated: Replicator
) -> None:
    add_one_by_one(studio_db, "f0", "f1")
    wait_for_replica(studio_db, {"f0", "f1"})
    code, output = replicated.stop()
    assert code == 0, output
    # The machine is lost: the database, its -wal, the backups and the state file.
    for path in studio_db.path.parent.iterdir():
        if path.name != "replica":
            subprocess.run(["rm", "-rf", str(path)], check=True)
    result = run_manage(
        studio_db,
        "restore_backup",
        "--at",
        "latest",
        "--no-input",
        REPLICATION=conf.user_settings()["REPLICATION"],
    )
    assert result.returncode == 0, result.stderr
    assert "Fetched the database as it was at" in result.stdout
    assert studio_db.clients() == ["Ana", "Beto", "f0", "f1"]
    assert "Safety backup" not in result.stdout  # there was nothing to keep


def test_a_moment_older_than_retention_hours_is_restored_to_the_second(
    studio_db: StudioDB, settings: SettingsWrapper, replica: dict[str, Any]
) -> None:
    # RETENTION_HOURS below SNAPSHOT_HOURS (12 and 24, say): a snapshot older than the
    # retention stays until the next one, and moments since it can be restored. Litestream
    # must keep each sync's file (level 0) as long; without them, it restores from files
    # that gather 30 s of commits and are dated by their last one, losing up to that much.
    # (Here in seconds: 7.2 s of retention, and Litestream looks every 15 s.)
    replica = {**replica, "RETENTION_HOURS": 0.002, "SNAPSHOT_HOURS": 1}
    with replicating(studio_db, settings, replica, {}):
        wait_for_snapshot(replica)
        time.sleep(1)
        add_one_by_one(studio_db, *[f"a{i}" for i in range(3)])
        moment = settle()
        add_one_by_one(studio_db, *[f"b{i}" for i in range(3)])
        # The next 30 s file gathers both groups; the files of level 0 are older than the
        # retention, and Litestream has looked.
        time.sleep(50)
        services.restore_to_moment(moment)
    assert studio_db.clients() == ["Ana", "Beto", "a0", "a1", "a2"]


def test_the_oldest_moment_of_the_window_can_be_restored(
    studio_db: StudioDB, replicated: Replicator, replica: dict[str, Any]
) -> None:
    levels = wait_for_snapshot(replica).parent.parent
    time.sleep(1.5)
    add_one_by_one(studio_db, "later")
    wait_for_replica(studio_db, {"later"})
    code, output = replicated.stop()
    assert code == 0, output
    # As Litestream's retention leaves the replica: nothing before its oldest snapshot, made
    # (as most are) at a time that is not a whole second.
    [snapshot] = (levels / "9").glob("*.ltx")
    last = int(snapshot.name[17:33], 16)
    for older in levels.glob("[0-8]/*.ltx"):
        if int(older.name[:16], 16) <= last:
            older.unlink()
    made = snapshot.stat().st_mtime_ns // 10**9 * 10**9 + 900_000_000
    os.utime(snapshot, ns=(made, made))
    window = services.replication_status().window
    assert window is not None
    services.restore_to_moment(window.start)
    assert studio_db.clients() == ["Ana", "Beto"]


def test_a_moment_after_the_replicas_last_change_is_labelled_with_that_change(
    studio_db: StudioDB, replicated: Replicator
) -> None:
    add_one_by_one(studio_db, "r0")
    wait_for_replica(studio_db, {"r0"})
    code, output = replicated.stop()
    assert code == 0, output
    stopped = timezone.now()
    # Replication stopped (unnoticed); the studio goes on working.
    time.sleep(2)
    studio_db.add_clients("unreplicated")
    asked = settle()
    result = run_manage(
        studio_db,
        "restore_backup",
        "--at",
        asked.isoformat(),
        "--no-input",
        REPLICATION=conf.user_settings()["REPLICATION"],
    )
    assert result.returncode == 0, result.stderr
    assert studio_db.clients() == ["Ana", "Beto", "r0"]
    [fetched] = [b for b in services.backups() if b.kind == "point-in-time"]
    # Not the data of the moment asked for: the restore says how old it is.
    assert fetched.created_at <= stopped
    when = fetched.created_at.isoformat(timespec="seconds")
    assert f"Fetched the database as it was at {when} from the replica" in result.stdout
    assert "That is the replica's last change before " in result.stdout


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize(
    ("time_given", "reason"),
    [
        ("yesterday at five", "'yesterday at five' is not a time: give it in ISO 8601"),
        ("2001-01-01T00:00", "is before the oldest moment the replica can restore"),
        ("2999-01-01T00:00:00+00:00", "has not happened yet"),
    ],
)
def test_a_bad_time_is_one_line_and_changes_nothing(
    studio_db: StudioDB, replicated: Replicator, time_given: str, reason: str
) -> None:
    backups = (
        sorted(p.name for p in studio_db.backups.iterdir()) if studio_db.backups.exists() else []
    )
    with contextlib.closing(sqlite3.connect(studio_db.path)) as connection:
        connection.execute("PRAGMA wal_checkpoint(PASSIVE)")
    before = digest(studio_db.path)
    result = run_manage(
        studio_db,
        "restore_backup",
        "--at",
        time_given,
        "--no-input",
        REPLICATION=conf.user_settings()["REPLICATION"],
    )
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("CommandError: "), line
    assert reason in line, line
    assert digest(studio_db.path) == before
    after = (
        sorted(p.name for p in studio_db.backups.iterdir()) if studio_db.backups.exists() else []
    )
    assert [n for n in after if n.startswith("backup_")] == [
        n for n in backups if n.startswith("backup_")
    ]
    with pytest.raises(BadMoment):
        services.restore_to_moment(services.parse_moment(time_given))


def test_replication_to_s3(
    studio_db: StudioDB, settings: SettingsWrapper, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = S3Server(tmp_path)
    server.start()
    try:
        for key, value in S3_ENV.items():
            monkeypatch.setenv(key, value)
        # Litestream 0.5.17 cannot start its S3 client at all with AWS_CA_BUNDLE set
        # ("unable to add custom RootCAs HTTPClient"); the README says so.
        monkeypatch.delenv("AWS_CA_BUNDLE", raising=False)
        env = {**S3_ENV, "STUDIO_REPLICA_ENDPOINT": server.endpoint}
        monkeypatch.setenv("STUDIO_REPLICA_ENDPOINT", server.endpoint)
        replica = {
            "URL": f"s3://{BUCKET}/studio",
            "OPTIONS": {
                # Litestream expands "${NAME}" from its environment (README).
                "endpoint": "${STUDIO_REPLICA_ENDPOINT}",
                "region": "us-east-1",
                "force-path-style": True,
            },
            "SYNC_INTERVAL": 0.5,
        }
        with replicating(studio_db, settings, replica, env):
            add_one_by_one(studio_db, "s0", "s1")
            moment = settle()
            add_one_by_one(studio_db, "s2")
            wait_for_replica(studio_db, {"s2"})
            assert any(key.startswith("studio/") for key in server.keys())  # noqa: SIM118 (a listing of the bucket)
            services.restore_to_moment(moment)
        assert studio_db.clients() == ["Ana", "Beto", "s0", "s1"]
    finally:
        server.stop()


@pytest.mark.parametrize("folder", ["caja $HOME ${PWD} $", 'caja ☕😀 \\ "q"'])
def test_a_database_whose_path_has_a_dollar_or_any_character_is_replicated(
    studio_db: StudioDB,
    settings: SettingsWrapper,
    replica: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    folder: str,
) -> None:
    # Litestream expands $NAME in its whole configuration, and its YAML refuses a JSON
    # escape of a character beyond the BMP.
    odd = tmp_path / folder
    odd.mkdir()
    db = StudioDB(path=odd / "studio.db", backups=odd / "backups", state_file=odd / "s.json")
    studio_db.path.rename(db.path)
    monkeypatch.setitem(django_settings.DATABASES["studio"], "NAME", db.path)
    with replicating(db, settings, replica, {}):
        db.add_clients("odd")
        wait_for_replica(db, {"Ana", "Beto", "odd"})
        moment = settle()
        db.add_clients("later")
        wait_for_replica(db, {"later"})
        services.restore_to_moment(moment)
    assert db.clients() == ["Ana", "Beto", "odd"]


def test_replicate_without_a_usable_database_or_binary(
    studio_db: StudioDB, replica: dict[str, Any], tmp_path: Path
) -> None:
    studio_db.path.write_bytes(b"not a database" * 10)
    result = run_manage(studio_db, "replicate", REPLICATION=replica)
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    not_sqlite = f"{studio_db.path} is not a SQLite database"
    assert line == f"CommandError: {studio_db.path} cannot be replicated: {not_sqlite}"
    missing = {**replica, "BINARY": str(tmp_path / "no-litestream")}
    result = run_manage(studio_db, "replicate", REPLICATION=missing)
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert "is not an executable file" in line


def test_without_litestream_installed(
    studio_db: StudioDB, replica: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Neither beside this Python nor on PATH.
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    settings = get_replication_config_for(replica)
    with pytest.raises(ReplicationFailed, match=r"Litestream is not installed: pip install"):
        replication.executable(settings)
    (tmp_path / "litestream").symlink_to(LITESTREAM)
    assert replication.executable(settings) == str(tmp_path / "litestream")


def test_sigterm_stops_replicate_cleanly(studio_db: StudioDB, replicated: Replicator) -> None:
    code, output = replicated.stop(signal.SIGTERM)
    assert code == 0, output
    assert not replication.is_running(conf.get_config())
    assert "litestream shut down" in output
