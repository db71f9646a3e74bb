"""Nothing committed is silently lost, and nothing is called verified that cannot be restored.

Each test here replays a way the app once said "done" or "verified" while data was gone:
the gap between the safety backup and the restore, an undo after "could not check", a
database behind a symlink or named by a ``file:`` URI, backups that passed quick_check but
not integrity_check, and a backup inside the caller's own transaction.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import sqlite3
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import time_machine
from django.contrib.messages import get_messages
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.test import Client
from django.urls import reverse
from pytest_django.fixtures import Settings as SettingsWrapper

from django_studio_backups import conf, engine, engine_restore, services, state
from django_studio_backups.database_file import database_file
from django_studio_backups.exceptions import BackupFailed, RestoreFailed
from tests.conftest import REPO, StudioDB, fill_database, undeletable
from tests.workload import client_writer


def journal(path: Path, mode: str) -> None:
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute(f"PRAGMA journal_mode={mode}")
    connection.close()


def tokens(path: Path) -> list[int]:
    """The numbers of the writer's clients (w0, w1, ...) in the database ``path``."""
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = connection.execute("SELECT name FROM studio_client WHERE name LIKE 'w%'")
        return sorted(int(name[1:]) for (name,) in rows)
    finally:
        connection.close()


def restore_url(name: str) -> str:
    return reverse("admin:django_studio_backups_backup_restore", args=[name])


def messages_of(response: Any) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


# 1. The safety backup holds exactly what the restore replaced ---------------------------


@pytest.mark.parametrize("mode", ["wal", "delete"])
def test_every_row_committed_before_the_restore_is_in_its_safety_backup(
    studio_db: StudioDB, tmp_path: Path, mode: str
) -> None:
    # A few MB of other data widen the time a safety backup takes to copy and check.
    fill_database(studio_db.path, 8, journal_mode=mode)
    backup = services.backup_now()
    with client_writer(studio_db, tmp_path) as log:
        time.sleep(0.3)
        report = services.restore(backup.name)
        time.sleep(0.3)
    committed = [int(line) for line in log.read_text().split()]
    assert report.safety_backup is not None
    saved = tokens(report.safety_backup.path)
    after = tokens(studio_db.path)
    # The writer's numbers are contiguous: the safety backup holds the first ones, up to
    # the moment the restore took the database, and the live database every one after.
    assert saved == list(range(len(saved)))
    assert after == list(range(len(saved), len(saved) + len(after)))
    assert sorted(saved + after) == committed
    assert saved
    assert after


# 2. "Could not check" after a committed restore is not damage -------------------------


class LockAfterCommit(sqlite3.Connection):
    """A backup source whose ``backup()``, once it has committed, has another process take
    the live database's lock before anything else can run."""

    locker: subprocess.Popen[str]
    cue: Path

    def backup(self, *args: Any, **kwargs: Any) -> None:
        super().backup(*args, **kwargs)
        self.cue.touch()
        assert self.locker.stdout is not None
        assert self.locker.stdout.readline() == "locked\n"


@contextlib.contextmanager
def locked_right_after_the_commit(
    backup: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, live: Path
) -> Iterator[None]:
    """While the block runs, a restore of ``backup`` is followed at once by another process
    that locks the live database for 2.5 s and adds the client "late" in that time."""
    cue = tmp_path / "cue"
    locker = subprocess.Popen(
        [sys.executable, "-m", "tests.processes", "locker", str(live), str(cue), "2.5"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert locker.stdout is not None
    assert locker.stdout.readline() == "ready\n"
    real_open = engine.open_snapshot_file

    def open_with_lock_after_commit(path: Path) -> sqlite3.Connection:
        if path != backup:
            return real_open(path)
        uri = f"{engine.file_uri(path)}?mode=ro&immutable=1"
        connection = sqlite3.connect(uri, uri=True, isolation_level=None, factory=LockAfterCommit)
        assert isinstance(connection, LockAfterCommit)
        connection.locker = locker
        connection.cue = cue
        return connection

    monkeypatch.setattr(engine_restore, "open_snapshot_file", open_with_lock_after_commit)
    try:
        yield
    finally:
        locker.communicate(timeout=30)
    assert locker.returncode == 0


@pytest.fixture
def busy_restore(
    studio_db: StudioDB,
    tmp_path: Path,
    settings: SettingsWrapper,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Path]:
    """A backup of Ana and Beto in rollback-journal mode, then Carla added; a restore of it
    in the block is followed at once by a process that holds the lock past LOCK_TIMEOUT."""
    journal(studio_db.path, "delete")
    settings.STUDIO_BACKUPS = {**settings.STUDIO_BACKUPS, "LOCK_TIMEOUT": 1}
    backup = services.backup_now()
    studio_db.add_clients("Carla")
    with locked_right_after_the_commit(backup.path, tmp_path, monkeypatch, studio_db.path):
        yield backup.path


def test_a_restore_that_could_not_be_checked_is_kept_with_what_came_after_it(
    studio_db: StudioDB, busy_restore: Path
) -> None:
    report = services.restore(busy_restore.name)
    assert not report.checked
    assert "could not be checked" in (report.warning or "")
    # The restore stands, and the client added after it was committed is still there.
    assert studio_db.clients() == ["Ana", "Beto", "late"]
    assert report.safety_backup is not None
    assert studio_db.clients(report.safety_backup.path) == ["Ana", "Beto", "Carla"]


def test_restore_backup_warns_that_a_busy_restore_was_not_checked(busy_restore: Path) -> None:
    out, err = io.StringIO(), io.StringIO()
    call_command(
        "restore_backup",
        busy_restore.name,
        "--database",
        "studio",
        "--no-input",
        stdout=out,
        stderr=err,
    )
    assert f"Restored {busy_restore.name}." in out.getvalue()
    assert "could not be checked: database is locked" in err.getvalue()
    assert "The restore stands" in err.getvalue()


@pytest.mark.django_db(databases=["default", "studio"], transaction=True)
def test_the_admin_says_a_busy_restore_stands(
    studio_db: StudioDB, busy_restore: Path, admin_client: Client
) -> None:
    response = admin_client.post(restore_url(busy_restore.name), {"post": "yes"}, follow=True)
    shown = messages_of(response)
    assert shown[0].startswith(f"Restored the database from {busy_restore.name}.")
    assert shown[1] == (
        "The database was too busy to be checked right after the restore. The restore is "
        "complete; the next daily backup checks the database in full."
    )
    assert studio_db.clients() == ["Ana", "Beto", "late"]


def damage_right_after_the_commit(
    monkeypatch: pytest.MonkeyPatch, also: Callable[[], object] = lambda: None
) -> None:
    """The next restore finds the database damaged right after it committed, with a client
    "late" added since: what a failing disk and a quick user would do. ``also`` runs then."""
    real_check = engine_restore.check_restored
    calls: list[Path] = []

    def damage_then_check(connection: sqlite3.Connection, live: Path, timeout: float) -> Any:
        if not calls:
            connection.execute("INSERT INTO studio_client (name) VALUES ('late')")
            with open(live, "r+b") as f:
                # The change counter moves, so no connection trusts its cached pages.
                f.seek(24)
                counter = int.from_bytes(f.read(4), "big")
                f.seek(24)
                f.write((counter + 1).to_bytes(4, "big"))
                f.seek(engine.page_size(engine.read_header(live)) + 8)
                f.write(b"\xff" * 64)
            also()
        calls.append(live)
        return real_check(connection, live, timeout)

    monkeypatch.setattr(engine_restore, "check_restored", damage_then_check)


def test_a_restore_that_fails_its_check_saves_the_live_database_before_putting_back(
    studio_db: StudioDB, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal(studio_db.path, "delete")
    backup = services.backup_now()
    studio_db.add_clients("Carla")
    damage_right_after_the_commit(monkeypatch)
    with pytest.raises(RestoreFailed) as failed:
        services.restore(backup.name)
    assert failed.value.database_changed is False
    # Put back: the data from before the restore ...
    engine.check(studio_db.path, full=True)
    assert studio_db.clients() == ["Ana", "Beto", "Carla"]
    # ... and what was live just before the put-back, "late" included, kept beside it.
    damaged = [b for b in services.backups() if b.kind == "damaged"]
    assert len(damaged) == 1
    assert not damaged[0].verified
    assert damaged[0].name in str(failed.value)
    assert b"late" in damaged[0].path.read_bytes()


def test_a_restore_that_fails_its_check_with_nothing_to_put_back(
    studio_db: StudioDB, monkeypatch: pytest.MonkeyPatch
) -> None:
    backup = services.backup_now()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{studio_db.path}{suffix}").unlink(missing_ok=True)
    damage_right_after_the_commit(monkeypatch)
    with pytest.raises(RestoreFailed, match="no database before it") as failed:
        services.restore(backup.name)
    assert failed.value.database_changed is True


@pytest.mark.django_db(databases=["default", "studio"], transaction=True)
def test_the_admin_says_what_a_put_back_did(
    studio_db: StudioDB, monkeypatch: pytest.MonkeyPatch, admin_client: Client
) -> None:
    journal(studio_db.path, "delete")
    backup = services.backup_now()
    studio_db.add_clients("Carla")
    damage_right_after_the_commit(monkeypatch)
    response = admin_client.post(restore_url(backup.name), {"post": "yes"}, follow=True)
    [shown] = messages_of(response)
    assert shown.startswith("The restore failed; the database is as it was.")
    [damaged] = [b for b in services.backups() if b.kind == "damaged"]
    assert damaged.name in shown
    assert ">damaged<" in response.content.decode()


def test_a_restore_stands_damaged_rather_than_lose_what_came_after_it(
    studio_db: StudioDB, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal(studio_db.path, "delete")
    backup = services.backup_now()
    studio_db.add_clients("Carla")
    with contextlib.ExitStack() as stack:
        # The backup folder turns unwritable, so the copy of what is live cannot be kept:
        # then nothing is put back over it.
        damage_right_after_the_commit(
            monkeypatch, lambda: stack.enter_context(undeletable(studio_db.backups))
        )
        with pytest.raises(RestoreFailed) as failed:
            services.restore(backup.name)
    assert failed.value.database_changed is True
    assert "could not be put back" in str(failed.value)
    assert "late" in str(engine.read_rows(studio_db.path, "SELECT name FROM studio_client"))


# 3. A database reached through a symlink ----------------------------------------------


@pytest.fixture
def linked_db(studio_db: StudioDB, monkeypatch: pytest.MonkeyPatch) -> StudioDB:
    """``studio_db`` moved into real/ and reached through data/linked.db, in WAL mode."""
    real = studio_db.path.parent / "real"
    real.mkdir()
    target = real / "studio.db"
    studio_db.path.rename(target)
    for suffix in ("-wal", "-shm"):
        Path(f"{studio_db.path}{suffix}").unlink(missing_ok=True)
    link = studio_db.path.parent / "linked.db"
    link.symlink_to(target)
    from django.conf import settings as django_settings

    monkeypatch.setitem(django_settings.DATABASES["studio"], "NAME", link)
    return StudioDB(path=target, backups=real / "backups", state_file=real / "settings.json")


def test_a_symlinked_database_in_wal_mode_is_backed_up_with_its_real_wal(
    linked_db: StudioDB,
) -> None:
    holder = linked_db.connect()
    holder.execute("PRAGMA wal_autocheckpoint=0")
    holder.execute("INSERT INTO studio_client (name) VALUES ('Carla')")
    assert Path(f"{linked_db.path}-wal").stat().st_size > 0
    try:
        backup = services.backup_now()
    finally:
        holder.close()
    assert linked_db.clients(backup.path) == ["Ana", "Beto", "Carla"]
    assert backup.path.parent == linked_db.backups


def test_a_stale_wal_beside_the_symlink_is_never_replayed(linked_db: StudioDB) -> None:
    link = Path(str(conf.get_config().database_path))
    holder = linked_db.connect()
    holder.execute("PRAGMA wal_autocheckpoint=0")
    holder.execute("UPDATE studio_client SET name = 'Old' WHERE name = 'Ana'")
    stale = link.parent / "linked.db-wal"
    shutil.copyfile(f"{linked_db.path}-wal", stale)
    holder.execute("UPDATE studio_client SET name = 'Ana' WHERE name = 'Old'")
    holder.execute("INSERT INTO studio_client (name) VALUES ('Carla')")
    holder.execute("PRAGMA wal_checkpoint(PASSIVE)")
    holder.close()
    backup = services.backup_now()
    assert linked_db.clients(backup.path) == ["Ana", "Beto", "Carla"]
    assert services.verify(backup, full=True) == []


def test_a_restore_through_a_symlink_writes_the_real_file(
    linked_db: StudioDB, tmp_path: Path
) -> None:
    link = tmp_path / "data" / "linked.db"
    backup = services.backup_now()
    linked_db.add_clients("Carla")
    report = services.restore(backup.name)
    assert report.safety_backup is not None
    assert link.is_symlink()
    assert linked_db.clients() == ["Ana", "Beto"]
    assert linked_db.clients(report.safety_backup.path) == ["Ana", "Beto", "Carla"]


# 4. NAME as a file: URI, and a path that starts with // --------------------------------


def _uri_names(path: Path) -> list[str]:
    quoted = urllib.parse.quote(str(path))
    return [f"file:{quoted}", f"file://{quoted}?mode=rw", f"file://localhost{quoted}?cache=private"]


@pytest.mark.parametrize("which", [0, 1, 2])
def test_a_file_uri_name_backs_up_and_restores_the_database_django_uses(
    studio_db: StudioDB,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    which: int,
) -> None:
    from django.conf import settings as django_settings

    spaced = tmp_path / "the studio" / "data #1.db"
    spaced.parent.mkdir()
    studio_db.path.rename(spaced)
    for suffix in ("-wal", "-shm"):
        Path(f"{studio_db.path}{suffix}").unlink(missing_ok=True)
    name = _uri_names(spaced)[which]
    monkeypatch.setitem(django_settings.DATABASES["studio"], "NAME", name)
    monkeypatch.chdir(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    assert conf.get_config().database_path == spaced
    backup = services.backup_now()
    db = StudioDB(path=spaced, backups=spaced.parent / "backups", state_file=tmp_path)
    db.add_clients("Carla")
    report = services.restore(backup.name)
    assert report.safety_backup is not None
    assert db.clients() == ["Ana", "Beto"]
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert not any(p.name.startswith("file:") for p in REPO.iterdir())


def test_a_name_that_starts_with_two_slashes(
    studio_db: StudioDB, monkeypatch: pytest.MonkeyPatch
) -> None:
    from django.conf import settings as django_settings

    monkeypatch.setitem(django_settings.DATABASES["studio"], "NAME", f"/{studio_db.path}")
    backup = services.backup_now()
    studio_db.add_clients("Carla")
    services.restore(backup.name)
    assert studio_db.clients() == ["Ana", "Beto"]


@pytest.mark.parametrize(
    ("query", "problem"),
    [("vfs=unix-dotfile", "studio_backups.E009"), ("nolock=1", "studio_backups.E009")],
)
def test_a_uri_that_backups_cannot_share_safely_is_refused(
    studio_db: StudioDB, monkeypatch: pytest.MonkeyPatch, query: str, problem: str
) -> None:
    from django.conf import settings as django_settings

    from django_studio_backups.checks import check_settings

    name = f"file:{urllib.parse.quote(str(studio_db.path))}?{query}"
    monkeypatch.setitem(django_settings.DATABASES["studio"], "NAME", name)
    found = [m for m in check_settings() if m.id == problem]
    assert found
    assert found[0].level == checks.ERROR
    with pytest.raises(ImproperlyConfigured, match=r"vfs=|nolock="):
        services.backup_now()


# 5. Verified means restorable ---------------------------------------------------------


def damage_an_index(path: Path) -> None:
    """Leave ``path`` with an index that no longer matches its table: quick_check passes,
    integrity_check fails (what the WAL-reset bug of SQLite 3.40.1 does to a database)."""
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("CREATE INDEX studio_client_by_name ON studio_client (name)")
    connection.execute("PRAGMA writable_schema=ON")
    connection.execute(
        "UPDATE sqlite_master SET sql = 'CREATE INDEX studio_client_by_name ON studio_client (id)'"
        " WHERE name = 'studio_client_by_name'"
    )
    connection.execute("PRAGMA writable_schema=OFF")
    connection.close()
    engine.check(path)
    with pytest.raises(engine.CheckFailed):
        engine.check(path, full=True)


def at(day: int) -> Any:
    zone = conf.get_config().time_zone
    return time_machine.travel(datetime(2026, 3, day, 3, 0, tzinfo=zone), tick=False)


def test_only_a_full_check_makes_a_backup_verified_and_the_newest_verified_one_stays(
    studio_db: StudioDB, settings: SettingsWrapper
) -> None:
    settings.STUDIO_BACKUPS = {**settings.STUDIO_BACKUPS, "MAX_BACKUPS": 3}
    with at(1):
        good = services.backup_if_needed()
    assert good is not None
    assert good.verified
    assert good.check == "integrity_check"
    manual = []
    for day in (2, 3, 4, 5):
        with at(day):
            made = services.backup_now()
        assert made.check == "quick_check"
        assert not made.verified
        manual.append(made.name)
    listed = [b.name for b in services.backups()]
    # Retention kept MAX_BACKUPS, and never the last backup that passed the restore's check.
    assert sorted(listed) == sorted([good.name, *manual[-2:]])


def test_copies_of_a_damaged_database_are_kept_but_never_verified(studio_db: StudioDB) -> None:
    with at(1):
        good = services.backup_if_needed()
    assert good is not None
    damage_an_index(studio_db.path)
    studio_db.add_clients("Carla")
    with at(2), pytest.raises(BackupFailed, match="is damaged") as failed:
        services.backup_if_needed()
    [kept] = [b for b in services.backups() if b.name != good.name]
    assert kept.name in str(failed.value)
    assert kept.kind == "daily"
    assert kept.check is None
    assert not kept.verified
    # Not the day's backup: the next run tries again.
    assert services.last_backup_at() == good.created_at
    # The copy holds the newest rows, for whoever repairs the database.
    assert b"Carla" in kept.path.read_bytes()
    with pytest.raises(RestoreFailed, match="integrity_check"):
        services.restore(kept.name)
    services.restore(good.name)
    assert studio_db.clients() == ["Ana", "Beto"]


@pytest.mark.django_db(databases=["default", "studio"], transaction=True)
def test_a_damaged_live_database_raises_the_loudest_alarm(
    studio_db: StudioDB, settings: SettingsWrapper, django_db_blocker: Any, admin_client: Client
) -> None:
    from django_studio_backups import signals

    failed: list[dict[str, Any]] = []

    def receiver(**kwargs: Any) -> None:
        failed.append(kwargs)

    signals.backup_failed.connect(receiver)
    try:
        with at(1):
            good = services.backup_if_needed()
        assert good is not None
        damage_an_index(studio_db.path)
        with at(2), pytest.raises(BackupFailed):
            services.backup_if_needed()
    finally:
        signals.backup_failed.disconnect(receiver)
    assert failed
    assert "integrity_check" in failed[0]["reason"]
    alarm = services.live_damage()
    assert alarm is not None
    assert alarm.newest_good is not None
    assert alarm.newest_good.name == good.name
    saved = state.read(studio_db.state_file)
    assert state.LIVE_DAMAGED_AT in saved
    # A banner on the admin's page, in words for the studio.
    with django_db_blocker.unblock():
        page = admin_client.get(reverse("admin:django_studio_backups_backup_changelist"))
    text = page.content.decode()
    assert "The live database is damaged" in text
    assert f"Restore {good.name}, the newest backup that passed the full check" in text
    # An error in `check --deploy`, naming the backup to restore.
    errors = [
        m
        for m in checks.run_checks(include_deployment_checks=True)
        if m.id == "studio_backups.E050"
    ]
    assert errors
    assert good.name in (errors[0].hint or "")
    # A later backup that passes the full check ends the alarm.
    services.restore(good.name)
    with at(3):
        assert services.backup_if_needed() is not None
    assert services.live_damage() is None


# 6. backup_now inside the caller's own transaction ------------------------------------


def test_backup_now_inside_a_transaction_in_rollback_mode_is_refused_at_once(
    studio_db: StudioDB, django_db_blocker: Any, settings: SettingsWrapper
) -> None:
    from django.db import transaction

    from tests.studio.models import Client

    journal(studio_db.path, "delete")
    settings.STUDIO_BACKUPS = {**settings.STUDIO_BACKUPS, "LOCK_TIMEOUT": 30}
    with django_db_blocker.unblock():
        with transaction.atomic(using="studio"):
            # Enough to spill out of SQLite's cache, which takes the file's exclusive lock.
            Client.objects.using("studio").bulk_create(
                [Client(name="Z" * 1000) for _ in range(5000)]
            )
            with pytest.raises(BackupFailed, match="inside this transaction"):
                services.backup_now()
        assert services.create_backup_now() is not None


def test_backup_now_inside_a_transaction_in_wal_mode_backs_up_what_is_committed(
    studio_db: StudioDB, django_db_blocker: Any
) -> None:
    from django.db import transaction

    from tests.studio.models import Client

    with django_db_blocker.unblock(), transaction.atomic(using="studio"):
        Client.objects.using("studio").bulk_create([Client(name="Z" * 1000) for _ in range(5000)])
        backup = services.backup_now()
    assert studio_db.clients(backup.path) == ["Ana", "Beto"]


# The WAL-reset bug of SQLite before 3.51.3 --------------------------------------------


@pytest.mark.parametrize(
    ("version", "affected"),
    [
        ("3.40.1", True),
        ("3.7.0", True),
        ("3.6.23", False),
        ("3.44.5", True),
        ("3.44.6", False),
        ("3.50.6", True),
        ("3.50.7", False),
        ("3.51.2", True),
        ("3.51.3", False),
        ("3.52.0", False),
        ("3.x", True),
    ],
)
def test_which_sqlite_versions_have_the_wal_reset_bug(version: str, affected: bool) -> None:
    assert engine_restore.has_wal_reset_bug(version) is affected


def test_a_restore_on_an_affected_sqlite_only_checkpoints_passively(
    studio_db: StudioDB, monkeypatch: pytest.MonkeyPatch
) -> None:
    statements: list[str] = []
    real_connect = engine.connect

    def traced(path: Path, **kwargs: Any) -> sqlite3.Connection:
        connection = real_connect(path, **kwargs)
        connection.set_trace_callback(statements.append)
        return connection

    monkeypatch.setattr(engine_restore, "connect", traced)
    monkeypatch.setattr(engine_restore, "HAS_WAL_RESET_BUG", True)
    backup = services.backup_now()
    studio_db.add_clients("Carla")
    services.restore(backup.name)
    checkpoints = [s for s in statements if "wal_checkpoint" in s]
    assert checkpoints
    assert all("PASSIVE" in s for s in checkpoints)
    assert studio_db.clients() == ["Ana", "Beto"]


def test_check_deploy_warns_of_the_wal_reset_bug(
    studio_db: StudioDB, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine_restore, "HAS_WAL_RESET_BUG", True)
    found = [
        m
        for m in checks.run_checks(include_deployment_checks=True)
        if m.id == "studio_backups.W011"
    ]
    assert found
    assert "3.51.3" in (found[0].hint or "")
    assert not [m for m in checks.run_checks() if m.id == "studio_backups.W011"]
    journal(studio_db.path, "delete")
    assert not [
        m
        for m in checks.run_checks(include_deployment_checks=True)
        if m.id == "studio_backups.W011"
    ]


def test_a_restore_report_says_it_was_checked(studio_db: StudioDB) -> None:
    backup = services.backup_now()
    report = services.restore(backup.name)
    assert report.checked
    assert report.warning is None


def test_a_damaged_live_database_can_still_be_restored_over(studio_db: StudioDB) -> None:
    backup = services.backup_now()
    studio_db.add_clients("Carla")
    with contextlib.closing(studio_db.connect()) as connection:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    # A page of the live file goes bad: quick_check fails on any copy of it.
    with open(studio_db.path, "r+b") as f:
        f.seek(engine.page_size(engine.read_header(studio_db.path)) + 8)
        f.write(b"\xff" * 64)
    with pytest.raises(BackupFailed, match="is damaged"):
        services.backup_now()
    assert services.live_damage() is not None
    report = services.restore(backup.name)
    # The safety backup keeps what was live, damage and all, and is not called verified.
    assert report.safety_backup is not None
    assert report.safety_backup.kind == "safety"
    assert report.safety_backup.check is None
    assert b"Carla" in report.safety_backup.path.read_bytes()
    assert studio_db.clients() == ["Ana", "Beto"]
    # The live database is a checked backup again.
    assert services.live_damage() is None


@pytest.mark.django_db(databases=["default", "studio"], transaction=True)
def test_the_admin_says_when_a_restore_stands_damaged(
    studio_db: StudioDB, monkeypatch: pytest.MonkeyPatch, admin_client: Client
) -> None:
    journal(studio_db.path, "delete")
    backup = services.backup_now()
    with contextlib.ExitStack() as stack:
        damage_right_after_the_commit(
            monkeypatch, lambda: stack.enter_context(undeletable(studio_db.backups))
        )
        response = admin_client.post(restore_url(backup.name), {"post": "yes"})
    shown = messages_of(response)
    assert shown[0].startswith(
        "The restored database failed its check and could not be put back: the site now runs "
        "on the restored data"
    )
    assert "the database is as it was" not in shown[0]


@pytest.mark.django_db(databases=["default", "studio"], transaction=True)
def test_the_damage_alarm_without_a_verified_backup(
    studio_db: StudioDB, admin_client: Client
) -> None:
    damage_an_index(studio_db.path)
    with at(2), pytest.raises(BackupFailed, match="no backup has passed integrity_check"):
        services.backup_if_needed()
    page = admin_client.get(reverse("admin:django_studio_backups_backup_changelist"))
    assert "No backup has passed the full check yet" in page.content.decode()
    [error] = [
        m
        for m in checks.run_checks(include_deployment_checks=True)
        if m.id == "studio_backups.E050"
    ]
    assert "No backup has passed integrity_check yet" in (error.hint or "")


def test_checks_of_damage_and_the_wal_reset_bug_stay_quiet_without_usable_settings(
    studio_db: StudioDB, settings: SettingsWrapper, monkeypatch: pytest.MonkeyPatch
) -> None:
    from django_studio_backups.checks import check_live_damage, check_wal_reset_bug

    monkeypatch.setattr(engine_restore, "HAS_WAL_RESET_BUG", True)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{studio_db.path}{suffix}").unlink(missing_ok=True)
    assert check_wal_reset_bug() == []
    settings.STUDIO_BACKUPS = {"DATABASE": "nope"}
    assert check_live_damage() == []
    assert check_wal_reset_bug() == []


def test_no_wal_reset_warning_on_a_fixed_sqlite(
    studio_db: StudioDB, monkeypatch: pytest.MonkeyPatch
) -> None:
    from django_studio_backups.checks import check_wal_reset_bug

    monkeypatch.setattr(engine_restore, "HAS_WAL_RESET_BUG", False)
    assert check_wal_reset_bug() == []


def test_backup_now_inside_a_transaction_with_no_database_says_why_it_failed(
    studio_db: StudioDB, django_db_blocker: Any
) -> None:
    from django.db import transaction

    for suffix in ("", "-wal", "-shm"):
        Path(f"{studio_db.path}{suffix}").unlink(missing_ok=True)
    with (
        django_db_blocker.unblock(),
        transaction.atomic(using="studio"),
        pytest.raises(BackupFailed, match=r"not a SQLite database|does not exist"),
    ):
        services.backup_now()


def test_a_uri_with_another_host_is_refused(
    studio_db: StudioDB, monkeypatch: pytest.MonkeyPatch
) -> None:
    from django.conf import settings as django_settings

    from django_studio_backups.checks import check_settings

    name = f"file://fileserver{urllib.parse.quote(str(studio_db.path))}"
    monkeypatch.setitem(django_settings.DATABASES["studio"], "NAME", name)
    [problem] = [m for m in check_settings() if m.id == "studio_backups.E009"]
    assert "'fileserver'" in problem.msg


@pytest.mark.parametrize("name", ["file::memory:", "file:memdb?mode=memory", "file:"])
def test_a_uri_in_memory_has_no_file(name: str) -> None:
    assert database_file(name).path is None


def test_a_put_back_that_fails_its_check_too_says_it_was_put_back(
    studio_db: StudioDB, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal(studio_db.path, "delete")
    backup = services.backup_now()
    studio_db.add_clients("Carla")
    # The live database is damaged already: its safety backup is kept as it is.
    with open(studio_db.path, "r+b") as f:
        f.seek(engine.page_size(engine.read_header(studio_db.path)) + 8)
        f.write(b"\xff" * 64)
    damage_right_after_the_commit(monkeypatch)
    with pytest.raises(RestoreFailed, match="fails its check too") as failed:
        services.restore(backup.name)
    assert failed.value.database_changed is False
    [safety] = [b for b in services.backups() if b.kind == "safety"]
    assert safety.check is None
    [damaged] = [b for b in services.backups() if b.kind == "damaged"]
    assert damaged.name in str(failed.value)


def test_the_daily_job_checks_a_backup_made_earlier_that_day_in_full(
    studio_db: StudioDB,
) -> None:
    with at(1):
        manual = services.backup_now()
        assert not manual.verified
        assert services.backup_if_needed() is None
    assert services.find_backup(manual.name).verified


def test_the_daily_job_finds_damage_in_a_backup_made_earlier_that_day(
    studio_db: StudioDB,
) -> None:
    damage_an_index(studio_db.path)
    with at(1):
        manual = services.backup_now()
        with pytest.raises(BackupFailed, match="is damaged"):
            services.backup_if_needed()
    assert services.live_damage() is not None
    assert not services.find_backup(manual.name).verified
    # The next day's run does not check the same failed file again; it makes a new backup.
    with at(2), pytest.raises(BackupFailed, match="is damaged"):
        services.backup_if_needed()


def test_while_the_alarm_stands_a_manual_backup_gets_the_full_check(
    studio_db: StudioDB,
) -> None:
    damage_an_index(studio_db.path)
    with at(1), pytest.raises(BackupFailed):
        services.backup_if_needed()
    with pytest.raises(BackupFailed, match="is damaged"):
        services.backup_now()
    # Repaired by hand: the next backup passes the full check, and that ends the alarm.
    with contextlib.closing(studio_db.connect()) as connection:
        connection.execute("DROP INDEX studio_client_by_name")
    made = services.backup_now()
    assert made.verified
    assert services.live_damage() is None


def test_only_damage_counts_as_damage(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"x" * 4096)
    malformed = tmp_path / "malformed.db"
    fill_database(malformed, 1, journal_mode="delete")
    with open(malformed, "r+b") as f:
        f.seek(4096 + 8)
        f.write(b"\xff" * 64)
    found = []
    for path, query in [(garbage, "PRAGMA quick_check"), (malformed, "SELECT * FROM blob")]:
        with contextlib.closing(sqlite3.connect(path)) as connection:
            with pytest.raises(sqlite3.DatabaseError) as error:
                connection.execute(query).fetchall()
            found.append(engine.is_damage(error.value))
    assert found == [True, True]
    with pytest.raises(sqlite3.OperationalError) as unopened:
        sqlite3.connect(f"file:{tmp_path}/missing/x.db?mode=ro", uri=True)
    assert not engine.is_damage(unopened.value)


def test_backups_left_beside_a_symlink_are_pointed_out(linked_db: StudioDB, tmp_path: Path) -> None:
    from django_studio_backups.checks import check_backups_beside_a_symlink

    assert check_backups_beside_a_symlink() == []
    old = tmp_path / "data" / "backups"
    old.mkdir()
    (old / "backup_20260101_030000.db").write_bytes(b"")
    [warning] = check_backups_beside_a_symlink()
    assert warning.id == "studio_backups.W012"
    assert str(linked_db.backups) in warning.msg


@pytest.mark.parametrize(
    ("query", "unsafe"),
    [("nolock=0", None), ("nolock=off", None), ("immutable=yes", "immutable=yes")],
)
def test_uri_flags_are_read_as_sqlite_reads_them(query: str, unsafe: str | None) -> None:
    assert database_file(f"file:/srv/db.sqlite3?{query}").unsafe == unsafe


def test_a_name_ends_at_a_nul_as_sqlite_reads_it() -> None:
    assert database_file("/srv/db.sqlite3\x00.bak").path == Path("/srv/db.sqlite3")


def test_a_backup_changed_on_disk_is_no_sign_of_damage_to_the_database(
    studio_db: StudioDB,
) -> None:
    with at(1):
        manual = services.backup_now()
    data = bytearray(manual.path.read_bytes())
    data[-100] ^= 0x01
    manual.path.write_bytes(bytes(data))
    with at(1):
        daily = services.backup_if_needed()
    assert services.live_damage() is None
    assert not services.find_backup(manual.name).verified
    # The day has a good backup again: the daily job made one, since that one is not.
    assert daily is not None
    assert daily.kind == "daily"
    assert daily.verified


def test_the_symlink_check_stays_quiet_without_usable_settings(settings: SettingsWrapper) -> None:
    from django_studio_backups.checks import check_backups_beside_a_symlink

    settings.STUDIO_BACKUPS = {"DATABASE": "nope"}
    assert check_backups_beside_a_symlink() == []


def test_a_folder_beside_the_link_that_cannot_be_read_is_no_crash(
    linked_db: StudioDB, tmp_path: Path
) -> None:
    from django_studio_backups.checks import check_backups_beside_a_symlink

    loop = tmp_path / "data" / "backups"
    loop.symlink_to(loop)
    assert check_backups_beside_a_symlink() == []
