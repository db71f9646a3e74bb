"""The backup pipeline: copy, check, publish, record and prune, under the folder's lock.

``services`` is the public face of it; nothing here is public API.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
from collections.abc import Collection, Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from django.db import connections
from django.utils import timezone

from . import __version__, archive, engine, locking, notify, retention, signals, state
from .archive import BackupFile
from .conf import Config
from .exceptions import OTHER, RAISED, BackupError, BackupFailed, BackupNotFound

logger = logging.getLogger("django_studio_backups")

# How long a backup inside atomic() waits for the database to be readable before taking
# the lock for its caller's own (other processes' commits take milliseconds).
SELF_LOCK_WAIT = 1.0
MIGRATIONS_QUERY = "SELECT app, name FROM django_migrations ORDER BY id"


@contextlib.contextmanager
def exclusive(config: Config, error: type[BackupError]) -> Iterator[None]:
    """Hold the backup folder's lock; also clears what interrupted runs left there."""
    with archive.locked(config.directory, locking.LOCK_NAME, config.lock_timeout, error):
        try:
            removed = archive.remove_temporary_files(config.directory)
        except OSError as exc:
            raise error(f"Cannot use the backup folder {config.directory}: {exc}") from exc
        for leftover in removed:
            logger.info("Removed %s, left by an interrupted run", leftover.name)
        yield


def back_up(
    config: Config,
    kind: str,
    progress: engine.Progress | None,
    note: Mapping[str, Any] | None = None,
) -> BackupFile:
    """Copy, check, publish and record one backup; the caller holds the lock."""
    backup = publish_backup(config, kind, progress, note)
    record_backup(config, backup)
    return backup


def publish_backup(
    config: Config,
    kind: str,
    progress: engine.Progress | None,
    note: Mapping[str, Any] | None = None,
    *,
    under_restore: bool = False,
) -> BackupFile:
    """Copy, check and publish one backup; the caller holds the lock.

    The daily backup, where time does not matter, runs integrity_check, the check a restore
    runs; the others run quick_check and count as verified only once a full check passed
    (or the daily job gives them one, see ``check_newest_in_full``).
    A copy that fails its check means the live database itself is damaged: that raises the
    alarm (``live_damage``).
    """
    started = timezone.now().astimezone(config.time_zone)
    temporary = archive.temporary_path(config.directory)
    # While the live database is known to be damaged, every backup (but the safety backup,
    # made under a restore's lock) runs the full check: one that passes ends the alarm.
    full = kind == "daily" or (
        not under_restore
        and state.read_datetime(config.state_file, state.LIVE_DAMAGED_AT) is not None
    )
    try:
        engine.copy_database(
            config.database_path,
            temporary,
            timeout=config.lock_timeout,
            progress=progress,
            under_restore=under_restore,
        )
        try:
            manifest = {
                **(note or {}),
                **checked_manifest(config, temporary, kind, started, full),
            }
        except engine.CheckFailed as exc:
            # The copy is faithful, so the live database is damaged. The copy may still hold
            # the newest rows, which nothing else has: it is kept, as not verified. A restore
            # (which replaces what is live, damaged or not) goes on.
            reason = raise_damage_alarm(config, str(exc).replace(temporary.name, "the copy"))
            kept = publish_unchecked(config, temporary, kind, started, reason)
            if under_restore:
                logger.error("%s", reason)
                return kept
            raise BackupFailed(f"{reason} The copy is kept as {kept.name}, not verified.") from exc
        path = archive.publish(temporary, config.directory, archive.stamp(started), manifest)
    except (engine.EngineError, OSError, sqlite3.Error) as exc:
        temporary.unlink(missing_ok=True)
        archive.manifest_path_for(temporary).unlink(missing_ok=True)
        raise BackupFailed(
            f"Backup of {config.database_path} failed: {_without(temporary, config, exc)}"
        ) from exc
    if full:
        clear_damage_alarm(config)
    return archive.backup_file(path)


def raise_damage_alarm(config: Config, problem: str) -> str:
    """Record that the live database is damaged; the reason to report, naming the backup to
    restore."""
    state.update(
        config.state_file,
        **{
            state.LIVE_DAMAGED_AT: state.isoformat(timezone.now().astimezone(config.time_zone)),
            state.LIVE_DAMAGED_REASON: problem,
        },
    )
    good = newest_verified(config)
    advice = (
        f"restore {good.name}, the newest backup that passed integrity_check"
        if good is not None
        else "no backup has passed integrity_check yet"
    )
    return (
        f"The live database {config.database_path} is damaged: a fresh copy of it failed "
        f"SQLite's check ({problem}); {advice}."
    )


def clear_damage_alarm(config: Config) -> None:
    state.update(config.state_file, remove=(state.LIVE_DAMAGED_AT, state.LIVE_DAMAGED_REASON))


def newest_verified(config: Config) -> BackupFile | None:
    return next(
        (b for b in archive.list_backup_files(config.directory, config.time_zone) if b.verified),
        None,
    )


def record_backup(config: Config, backup: BackupFile, protected: Collection[Path] = ()) -> None:
    """Make a published backup count: the state file, retention, the log and the signal."""
    # A success ends the run of failures that the admin page and list_backups warn about.
    state.update(
        config.state_file,
        remove=state.BACKUP.keys,
        **{state.LAST_BACKUP_AT: state.isoformat(backup.created_at.astimezone(config.time_zone))},
    )
    # A safety or pre-migrate backup makes room among its own kind only.
    kinds = None if backup.kind in retention.REGULAR else {backup.kind}
    prune(config, protected={backup.path, *protected}, kinds=kinds)
    logger.info("Backed up %s to %s (%d bytes)", config.database_path, backup.path, backup.size)
    signals.send(signals.backup_created, backup=backup, using=config.alias)


def checked_manifest(
    config: Config, temporary: Path, kind: str, started: datetime, full: bool
) -> dict[str, Any]:
    # Hashing and quick_check each read the whole file; both release the GIL, so they
    # run side by side on two cores.
    digest: list[str | BaseException] = []

    def hash_file() -> None:
        try:
            digest.append(engine.sha256_of(temporary))
        except OSError as exc:  # pragma: no cover - the file was just written by us
            digest.append(exc)

    hasher = threading.Thread(target=hash_file, name="studio-backups-sha256")
    hasher.start()
    try:
        engine.check(temporary, full=full)
    finally:
        hasher.join()
    if isinstance(digest[0], BaseException):  # pragma: no cover - see hash_file
        raise digest[0]
    return {
        "format": 1,
        "kind": kind,
        "created_at": state.isoformat(started),
        "size": temporary.stat().st_size,
        "sha256": digest[0],
        "sqlite_version": sqlite3.sqlite_version,
        "app_version": __version__,
        "source": {"alias": config.alias, "path": str(config.database_path)},
        "migrations": recorded_migrations(temporary),
        "verification": {
            "ok": True,
            "check": archive.FULL_CHECK if full else "quick_check",
            "at": state.isoformat(started),
            # The file as it was checked; published under its name, it keeps this time.
            "mtime_ns": temporary.stat().st_mtime_ns,
        },
    }


def recorded_migrations(path: Path) -> list[tuple[str, str]]:
    if not engine.has_table(path, "django_migrations"):
        return []
    return [(str(app), str(name)) for app, name in engine.read_rows(path, MIGRATIONS_QUERY)]


# How retention reads a local backup (see BackupFile.sound).
TRAITS: retention.Traits[BackupFile] = retention.Traits(
    key=lambda b: b.path,
    kind=lambda b: b.kind,
    time=lambda b: b.created_at,
    good=lambda b: b.sound,
    damaged=lambda b: b.failed_check and b.kind in archive.KINDS,
)


def prune(
    config: Config, protected: Collection[Path], kinds: Collection[str] | None = None
) -> None:
    """Apply retention (see retention.py) to the pools of ``kinds`` (all when None)."""
    listed = archive.list_backup_files(config.directory, config.time_zone)
    # Never the last backup that a restore would accept.
    newest_verified = next((b.path for b in listed if b.verified), None)
    if newest_verified is not None:
        protected = {*protected, newest_verified}
    doomed = retention.expired(
        listed, config.policy, TRAITS, config.time_zone, protected=protected, kinds=kinds
    )
    for backup in doomed:
        try:
            delete(backup, BackupFailed)
        except BackupFailed as exc:
            logger.error("Could not delete the old backup: %s", exc)
        else:
            logger.info("Deleted the old backup %s", backup.name)


def delete(backup: BackupFile, error: type[BackupError]) -> None:
    try:
        archive.delete_backup(backup)
    except OSError as exc:
        if backup.path.exists():
            raise error(f"Could not delete {backup.name}: {exc}") from exc
        # The backup is gone; what stands where its manifest was is only clutter.
        logger.warning("Deleted %s, but not its manifest: %s", backup.name, exc)


def _without(temporary: Path, config: Config, exc: BaseException) -> str:
    """``exc`` told without the temporary file's name, which means nothing to anyone and is
    gone by the time they read it."""
    if (
        isinstance(exc, OSError)
        and exc.filename is not None
        and Path(os.fsdecode(exc.filename)).parent == config.directory
    ):
        # "[Errno 28] No space left on device", about the folder it concerns.
        reason = f"[Errno {exc.errno}] {exc.strerror}"
        return f"cannot write in the backup folder {config.directory}: {reason}"
    return str(exc).replace(str(temporary), "the copy").replace(temporary.name, "the copy")


def record_failure(
    config: Config, kind: str, reason: str, problem: str = OTHER, *, raised: bool = False
) -> None:
    """Log, record, signal and notify a failed backup; ``raised``: the caller raises it."""
    logger.error("%s", reason, extra=RAISED if raised else None)
    now = timezone.now().astimezone(config.time_zone)
    state.record_failure(config.state_file, state.BACKUP, reason, now, problem)
    signals.send(signals.backup_failed, kind=kind, reason=reason, using=config.alias)
    notify.failure(kind, reason, database=config.database_path)


def last_backup_at(config: Config) -> datetime | None:
    moment = state.read_datetime(config.state_file, state.LAST_BACKUP_AT)
    if moment is not None:
        return moment
    listed = archive.list_backup_files(config.directory, config.time_zone)
    if listed:
        logger.warning(
            "No usable %s in %s; using the time of the newest backup, %s",
            state.LAST_BACKUP_AT,
            config.state_file,
            listed[0].name,
        )
        return listed[0].created_at
    return None


def find(config: Config, name_or_path: Path | str) -> BackupFile:
    raw = str(name_or_path)
    given = Path(raw)
    if "\x00" in raw or not given.name:
        raise BackupNotFound(f"{raw!r} is not a backup name")
    if str(given) != given.name:
        # A path is accepted only when it names a file directly inside the backup folder.
        try:
            inside = given.absolute().parent.resolve() == config.directory.resolve()
        except (OSError, RuntimeError, ValueError):
            inside = False
        if not inside:
            raise BackupNotFound(f"{raw} is not in the backup folder {config.directory}")
    for backup in archive.list_backup_files(config.directory, config.time_zone):
        if backup.name == given.name:
            return backup
    raise BackupNotFound(f"There is no backup called {given.name!r} in {config.directory}")


def publish_damaged(config: Config, problem: str) -> BackupFile:
    """Keep a copy of the live database as it is, unchecked (it is known to be damaged);
    called under a restore's write lock."""
    started = timezone.now().astimezone(config.time_zone)
    temporary = archive.temporary_path(config.directory)
    try:
        engine.copy_database(
            config.database_path, temporary, timeout=config.lock_timeout, under_restore=True
        )
        return publish_unchecked(config, temporary, "damaged", started, problem)
    except (engine.EngineError, OSError) as exc:
        temporary.unlink(missing_ok=True)
        archive.manifest_path_for(temporary).unlink(missing_ok=True)
        raise BackupFailed(f"Could not keep a copy of {config.database_path}: {exc}") from exc


def publish_unchecked(
    config: Config, temporary: Path, kind: str, started: datetime, problem: str
) -> BackupFile:
    """Publish a copy that failed its check, as a backup that is not verified."""
    manifest = {
        "format": 1,
        "kind": kind,
        "created_at": state.isoformat(started),
        "size": temporary.stat().st_size,
        "sha256": engine.sha256_of(temporary),
        "sqlite_version": sqlite3.sqlite_version,
        "app_version": __version__,
        "source": {"alias": config.alias, "path": str(config.database_path)},
        "verification": {"ok": False, "at": state.isoformat(started), "problems": [problem]},
    }
    path = archive.publish(temporary, config.directory, archive.stamp(started), manifest)
    return archive.backup_file(path)


def refuse_inside_a_transaction(config: Config) -> None:
    if not connections[config.alias].in_atomic_block:
        return
    try:
        wal = engine.is_wal(engine.read_live_header(config.database_path))
    except (engine.EngineError, OSError):
        return  # no database yet: the backup itself says why it cannot be made
    # In WAL mode a backup reads what is committed beside the transaction. With a rollback
    # journal, writes that spilled out of SQLite's cache lock the file against every reader,
    # this process's own backup too, until the transaction ends: waiting cannot help.
    if not wal and not engine.readable(config.database_path, wait=SELF_LOCK_WAIT):
        raise BackupFailed(
            "A backup cannot run inside this transaction (atomic()): the database uses a "
            "rollback journal, and it stayed locked, most likely by the transaction's own "
            "uncommitted writes. Back up after the transaction, for example from "
            "transaction.on_commit()."
        )


def has_data(path: Path) -> bool:
    # Django creates an empty file on first connection: nothing to keep in a safety backup.
    try:
        return path.stat().st_size > 0
    except FileNotFoundError:
        return False
