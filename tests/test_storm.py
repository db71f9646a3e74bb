"""A storm: ten manual backups, the daily job twice and a writer, all at the same moment."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import time_machine
from pytest_django.fixtures import Settings as SettingsWrapper

from django_studio_backups import archive, engine, locking, services
from tests.conftest import REPO, StudioDB, command_env, fill_database
from tests.workload import CuedCall, running_writer

MANUAL = 10
MAX_BACKUPS = 5
TIMEOUT = 60


class Publications(threading.Thread):
    """Keeps a hard link to every backup the moment it is published, before retention runs.

    Retention deletes all but the newest MAX_BACKUPS; the links keep the others to check.
    """

    def __init__(self, directory: Path, keep: Path) -> None:
        super().__init__(name="publications", daemon=True)
        self.directory = directory
        self.keep = keep
        self.done = threading.Event()
        self.missed: list[str] = []

    def run(self) -> None:
        while not self.done.is_set():
            self.collect()
            time.sleep(0.002)
        self.collect()

    def collect(self) -> None:
        try:
            entries = list(os.scandir(self.directory))
        except FileNotFoundError:
            return
        present = {entry.name for entry in entries}
        for name in present:
            manifest = name + archive.MANIFEST_SUFFIX
            # The manifest gets its name just after the backup: wait for both.
            if not archive.is_backup_name(name) or manifest not in present:
                continue
            if (self.keep / name).exists():
                continue
            try:
                os.link(self.directory / name, self.keep / name)
                os.link(self.directory / manifest, self.keep / manifest)
            except FileNotFoundError:
                self.missed.append(name)

    @contextmanager
    def watching(self) -> Iterator[None]:
        self.start()
        try:
            yield
        finally:
            self.done.set()
            self.join()


def manage(db: StudioDB, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "django", *args],
        env=command_env(db, MAX_BACKUPS=MAX_BACKUPS),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen[str]) -> str:
    output, errors = process.communicate(timeout=TIMEOUT)
    assert process.returncode == 0, errors
    assert "Traceback" not in errors
    return output.strip()


# Backups are made one at a time under the lock, each named from the time it started, with
# _2, _3... within one second: the names sort in the order of publication.
publication_order = archive.name_order


def test_a_storm_of_backups(studio_db: StudioDB, settings: SettingsWrapper, tmp_path: Path) -> None:
    settings.STUDIO_BACKUPS = {**settings.STUDIO_BACKUPS, "MAX_BACKUPS": MAX_BACKUPS}
    fill_database(studio_db.path, 16)
    lock = studio_db.backups / locking.LOCK_NAME
    limits = {"MAX_BACKUPS": MAX_BACKUPS}
    kept = tmp_path / "published"
    kept.mkdir()
    go = tmp_path / "go"
    publications = Publications(studio_db.backups, kept)
    with running_writer(studio_db.path, tmp_path), publications.watching():
        # Everyone is set up before the storm begins, so that it really is at one moment.
        manual = [
            CuedCall(studio_db, tmp_path, "create_backup_now", cue=go, backups=limits)
            for _ in range(MANUAL)
        ]
        late_daily = CuedCall(
            studio_db, tmp_path, "create_backup_if_needed", cue=go, backups=limits
        )
        for call in [*manual, late_daily]:
            call.ready()
        # The daily job (as cron runs it) takes the lock of an empty folder first; the rest
        # start while it holds it. A daily job that came later would find today's manual
        # backups and rightly make none, so this order is what makes its outcome certain.
        started = time.monotonic()
        daily = manage(studio_db, "backup_if_needed")
        while not locking.is_locked(lock):
            assert daily.poll() is None, "the daily job ended before it took the lock"
            time.sleep(0.001)
        go.touch()
        made = [finish(daily), *(call.result(timeout=TIMEOUT) for call in manual)]
        assert late_daily.result(timeout=TIMEOUT) == "None"
        duration = time.monotonic() - started
    print(f"storm: {MANUAL} manual + 2 daily + a writer, {duration:.1f} s")

    # Everything asked for was made, published and seen, and nothing more.
    assert all(archive.is_backup_name(Path(path).name) for path in made), made
    names = sorted((Path(path).name for path in made), key=publication_order)
    assert len(set(names)) == MANUAL + 1
    assert publications.missed == []
    assert sorted(p.name for p in kept.glob("backup_*.db")) == sorted(names)

    # Every backup published was valid, and distinct from every other.
    published = {b.name: b for b in archive.list_backup_files(kept)}
    for backup in published.values():
        assert backup.sha256 == engine.sha256_of(backup.path), backup.name
        engine.check(backup.path, full=True)
        ((pairs,),) = engine.read_rows(backup.path, "SELECT count(*) FROM pair")
        assert isinstance(pairs, int)
        assert pairs % 2 == 0, f"{backup.name} holds half of the writer's transaction"
    assert len({b.sha256 for b in published.values()}) == MANUAL + 1
    # Exactly one daily backup: the first one, made by the cron job.
    assert Counter(b.kind for b in published.values()) == {"daily": 1, "manual": MANUAL}
    assert published[names[0]].kind == "daily"

    # Retention kept exactly MAX_BACKUPS, and the folder holds nothing else: the newest ones,
    # and the newest that had passed integrity_check when the last one was published (the
    # first daily job checked its own). The late daily job found today's backup made and gave
    # the newest then the full check, which may end after the last publication: that backup
    # may be verified now though the last pruning protected an older one.
    survivors = services.backups()
    kept_names = sorted((b.name for b in survivors), key=publication_order)
    verified = [b.name for b in survivors if b.verified]
    assert verified
    assert len(kept_names) == MAX_BACKUPS
    assert kept_names[1:] == names[-(MAX_BACKUPS - 1) :]
    assert kept_names[0] == names[-MAX_BACKUPS] or kept_names[0] in verified
    assert all(services.verify(b) == [] for b in survivors)
    expected = {locking.LOCK_NAME, archive.GITIGNORE} | {
        n for b in survivors for n in (b.name, b.manifest_path.name)
    }
    assert {p.name for p in studio_db.backups.iterdir()} == expected
    assert not locking.is_locked(lock)

    # The day has its daily backup: the cron job run again makes none.
    assert "already exists" in finish(manage(studio_db, "backup_if_needed"))
    assert services.backups() == survivors


def test_a_deleted_backups_name_is_never_given_to_a_new_one(
    studio_db: StudioDB, settings: SettingsWrapper
) -> None:
    settings.STUDIO_BACKUPS = {**settings.STUDIO_BACKUPS, "MAX_BACKUPS": 1}
    moment = datetime(2026, 3, 4, 15, 30, 45, tzinfo=ZoneInfo("America/Hermosillo"))
    with time_machine.travel(moment, tick=False):
        made = [services.backup_now().name for _ in range(3)]
    # The first was deleted by retention when the second was made; the third is not it.
    assert made == [
        "backup_20260304_153045.db",
        "backup_20260304_153045_2.db",
        "backup_20260304_153045_3.db",
    ]
    assert [b.name for b in services.backups()] == made[-1:]
