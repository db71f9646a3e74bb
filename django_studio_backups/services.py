"""The public API: back up, list, verify, copy off-site and restore the project's database.

Two tiers:

- the simple API (``create_backup_now``, ``create_backup_if_needed``, ``list_backups``,
  ``restore_backup``, ``get_last_backup_display``) logs an expected failure and returns
  None/False;
- the raising API below it returns ``BackupFile`` objects and reports, and raises
  ``BackupError`` subclasses whose message says what went wrong. Management commands, the
  admin and the cron job use it, and call nothing else of the app.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from django.db import connections
from django.utils import timezone

from . import (
    __version__,
    archive,
    conf,
    engine,
    growth,
    locking,
    offsite,
    retention,
    signals,
    state,
)

# BackupFile is part of this module's API: faces take the type from here.
from .archive import BackupFile as BackupFile
from .conf import Config, get_config, get_offsite_config
from .exceptions import BackupError, BackupFailed, BackupNotFound, DeleteFailed, RestoreFailed

logger = logging.getLogger("django_studio_backups")

NO_BACKUP = "—"
# How long a backup inside atomic() waits for the database to be readable before taking
# the lock for its caller's own (other processes' commits take milliseconds).
SELF_LOCK_WAIT = 1.0
MIGRATIONS_QUERY = "SELECT app, name FROM django_migrations ORDER BY id"


# The simple API: None or False on failure ----------------------------------------------


def create_backup_now(*, using: str | None = None) -> Path | None:
    """Back up the database now. The new backup's path, or None if it failed."""
    try:
        return backup_now(using=using).path
    except BackupError:
        return None


def create_backup_if_needed(*, using: str | None = None) -> Path | None:
    """Back up unless a backup was made today (in the configured time zone)."""
    try:
        backup = backup_if_needed(using=using)
    except BackupError:
        return None
    return backup.path if backup is not None else None


def list_backups(*, using: str | None = None) -> list[dict[str, Any]]:
    """Every backup with its metadata, newest first."""
    config = get_config(using)
    return [b.as_dict(config.time_zone) for b in archive.list_backup_files(config.directory)]


def restore_backup(path: Path | str, *, using: str | None = None) -> bool:
    """Restore the database from the backup ``path`` (a name or a path in the backup folder)."""
    try:
        restore(path, using=using)
    except BackupError:
        return False
    return True


def get_last_backup_display(*, using: str | None = None) -> str:
    """When the last backup was made, as ``dd/mm/yyyy hh:mm``, or "—" if never."""
    config = get_config(using)
    moment = _last_backup_at(config)
    if moment is None:
        return NO_BACKUP
    return archive.display(moment, config.time_zone)


def display_time(moment: datetime, *, using: str | None = None) -> str:
    """``moment`` as the app shows times to people: ``dd/mm/yyyy hh:mm``, in the studio's zone."""
    return archive.display(moment, get_config(using).time_zone)


# The raising API -----------------------------------------------------------------------


@dataclass(frozen=True)
class RestoreReport:
    restored: BackupFile
    safety_backup: BackupFile | None
    # Migrations the current code has that the backup lacks, and the reverse.
    missing_migrations: list[tuple[str, str]] = field(default_factory=list)
    unknown_migrations: list[tuple[str, str]] = field(default_factory=list)
    # Why the restored database could not be checked right after the restore (it stayed
    # busy); None once it passed. The restore stands either way.
    warning: str | None = None

    @property
    def checked(self) -> bool:
        return self.warning is None


Failure = state.Failure


@dataclass(frozen=True)
class Damage:
    """A fresh copy of the live database failed SQLite's check: the database is damaged."""

    at: datetime
    reason: str
    # The newest backup that passed integrity_check, the one to restore; None if none did.
    newest_good: BackupFile | None


def backup_now(
    *,
    using: str | None = None,
    kind: str = "manual",
    progress: engine.Progress | None = None,
    note: Mapping[str, Any] | None = None,
) -> BackupFile:
    """Back up the database now; raises ``BackupFailed`` with the reason.

    ``note`` adds fields to the manifest (the pre-migrate backup records its migration plan);
    it cannot replace the fields the service writes.
    """
    config = get_config(using)
    try:
        _refuse_inside_a_transaction(config)
        with _exclusive(config, BackupFailed):
            backup = _back_up(config, kind, progress, note=note)
    except BackupFailed as exc:
        _record_failure(config, kind, str(exc))
        raise
    # Outside the lock: a slow upload must not hold up the next backup or a restore.
    offsite.copy_new_backup(backup, config)
    return backup


def backup_if_needed(
    *, using: str | None = None, progress: engine.Progress | None = None
) -> BackupFile | None:
    """Make the daily backup unless one exists for today; None when none was needed."""
    config = get_config(using)
    try:
        _refuse_inside_a_transaction(config)
        with _exclusive(config, BackupFailed):
            last = _last_backup_at(config)
            today = timezone.now().astimezone(config.time_zone).date()
            if last is not None and last.astimezone(config.time_zone).date() == today:
                logger.info("A backup of %s already exists for %s", config.database_path, today)
                _check_newest_in_full(config)
                return None
            backup = _back_up(config, "daily", progress)
    except BackupFailed as exc:
        _record_failure(config, "daily", str(exc))
        raise
    offsite.copy_new_backup(backup, config)
    return backup


def backups(*, using: str | None = None) -> list[BackupFile]:
    return archive.list_backup_files(get_config(using).directory)


def find_backup(name_or_path: Path | str, *, using: str | None = None) -> BackupFile:
    """The listed backup called ``name_or_path``; ``BackupNotFound`` for anything else."""
    return _find(get_config(using), name_or_path)


def growth_warning(*, using: str | None = None) -> str | None:
    """Why the newest backup's size is unusual, or None while it is not (see ``growth``)."""
    config = get_config(using)
    found = growth.unusual_growth(
        archive.list_backup_files(config.directory), config.growth_warning
    )
    return growth.describe(found) if found is not None else None


def last_backup_at(*, using: str | None = None) -> datetime | None:
    return _last_backup_at(get_config(using))


def last_failure(*, using: str | None = None) -> Failure | None:
    """The last failed backup attempt, if it came after the last successful backup."""
    config = get_config(using)
    return state.last_failure(config.state_file, state.BACKUP, _last_backup_at(config))


def live_damage(*, using: str | None = None) -> Damage | None:
    """Why the live database is known to be damaged, and which backup to restore; None
    unless a fresh copy of it failed SQLite's check since it last passed one."""
    config = get_config(using)
    damaged_at = state.read_datetime(config.state_file, state.LIVE_DAMAGED_AT)
    if damaged_at is None:
        return None
    try:
        reason = str(state.read(config.state_file).get(state.LIVE_DAMAGED_REASON, ""))
    except state.UnreadableState:  # pragma: no cover - read_datetime above just parsed it
        reason = ""
    return Damage(damaged_at, reason, _newest_verified(config))


def in_wal_mode(*, using: str | None = None) -> bool | None:
    """Whether the live database is in WAL mode; None while there is no database."""
    config = get_config(using)
    try:
        return engine.is_wal(engine.read_live_header(config.database_path))
    except (engine.NotADatabase, OSError):
        return None


def has_wal_reset_bug() -> bool:
    """Whether this Python's SQLite has the WAL-reset bug (see ``engine.has_wal_reset_bug``)."""
    return engine.HAS_WAL_RESET_BUG


def backups_left_beside_a_link(*, using: str | None = None) -> Path | None:
    """The folder where versions before 0.2 put the backups of a database reached through a
    symlink (beside the link, not the real file), if it holds any; None otherwise."""
    config = get_config(using)
    name = connections[config.alias].settings_dict["NAME"]
    if conf.user_settings()["DIRECTORY"] or str(name).startswith("file:"):
        return None
    old = Path(name).absolute().parent / "backups"
    if os.path.realpath(old) == os.path.realpath(config.directory):
        return None
    return old if archive.list_backup_files(old) else None


def record_failure(reason: str, *, kind: str, using: str | None = None) -> None:
    """Log, record in the state file and signal a failed attempt to back up.

    The functions above do this for the failures they raise; callers that catch something
    else (a cron job, a project's own scheduler) use this so the failure is still seen.
    """
    _record_failure(get_config(using), kind, reason)


def restore(
    name_or_path: Path | str,
    *,
    using: str | None = None,
    progress: engine.Progress | None = None,
) -> RestoreReport:
    """Restore a listed backup onto the live database, after a safety backup of it.

    Raises ``RestoreFailed`` with the live database as it was, and every backup kept.
    """
    config = get_config(using)
    try:
        if connections[config.alias].in_atomic_block:
            # The caller's own transaction would hold the lock the restore needs, or see the
            # old data afterwards. (Admin views that restore are not atomic for this reason.)
            raise RestoreFailed("A restore cannot run inside a transaction (atomic()).")
        with _exclusive(config, RestoreFailed):
            backup = _find(config, name_or_path)
            # integrity_check takes five times as long as anything else a restore does before
            # it writes (see bench/RESULTS.md): it runs alongside the other checks, the safety
            # backup and (in WAL mode) the copy into the live database, which commits only
            # once it has passed.
            with engine.BackgroundCheck(backup.path, full=True) as integrity:
                _validate(config, backup)
                live_in_wal_mode = _has_data(config.database_path) and engine.is_wal(
                    engine.read_live_header(config.database_path)
                )
                missing, unknown = migration_difference(backup)

                def passed() -> None:
                    integrity.wait()
                    failure = integrity.failure()
                    if failure is not None:
                        raise RestoreFailed(
                            f"{backup.name} cannot be restored: {failure}"
                        ) from failure

                safety, warning = _restore_file(
                    config, backup, progress, passed, wait_first=not live_in_wal_mode
                )
            # Recorded (and pruned) only once the restore has worked: a restore that fails
            # leaves no safety backup, costs the oldest real backup nothing, and does not
            # count as the day's backup.
            if safety is not None:
                _record_backup(config, safety, protected={backup.path})
            else:
                _prune(config, protected={backup.path})
            if warning is None:
                # The live database now holds a backup that passed integrity_check.
                _clear_damage_alarm(config)
    except RestoreFailed as exc:
        logger.error("Restore into %s failed: %s", config.database_path, exc)
        raise
    logger.info(
        "Restored %s from %s (safety backup: %s)",
        config.database_path,
        backup.name,
        safety.name if safety else "none, there was no database",
    )
    if warning is not None:
        logger.warning("%s. It was not put back: being busy is no sign of damage.", warning)
    signals.send(signals.backup_restored, backup=backup, safety_backup=safety, using=config.alias)
    if safety is not None:
        offsite.copy_new_backup(safety, config)
    return RestoreReport(backup, safety, missing, unknown, warning)


def restore_offsite(
    name: str,
    *,
    identity: Path | str | None = None,
    using: str | None = None,
    progress: engine.Progress | None = None,
) -> RestoreReport:
    """Fetch an off-site copy (``download_offsite``) and restore it like any other backup.

    Raises ``OffsiteFailed`` if the copy cannot be fetched, ``RestoreFailed`` as ``restore``.
    """
    backup = download_offsite(name, identity=identity, using=using)
    return restore(backup.name, using=using, progress=progress)


# Off-site copies (see offsite.py); each raises OffsiteFailed with the reason.


def offsite_configured(*, using: str | None = None) -> bool:
    """Whether the backups of ``using`` get off-site copies (``ImproperlyConfigured`` names a
    mistake in ``OFFSITE``)."""
    return get_offsite_config(using) is not None


def offsite_copies(*, using: str | None = None) -> list[offsite.OffsiteCopy]:
    """The complete off-site copies, newest first."""
    return offsite.copies(using=using)


def offsite_names(*, using: str | None = None) -> set[str]:
    """The names of the backups that have an off-site copy; empty without ``OFFSITE``."""
    return offsite.names(using=using)


def offsite_failure(*, using: str | None = None) -> Failure | None:
    """When and why the last off-site copy failed, if no copy was made since."""
    return offsite.last_failure(using=using)


def sync_offsite(*, using: str | None = None) -> offsite.SyncReport:
    """Upload the backups that lack an off-site copy, then apply off-site retention."""
    return offsite.sync(using=using)


def download_offsite(
    name: str, *, identity: Path | str | None = None, using: str | None = None
) -> BackupFile:
    """Fetch an off-site copy (decrypted with the ``identity`` file) into the backup folder,
    checked against its manifest, as a local backup."""
    return offsite.download(name, identity=identity, using=using)


def verify(
    backup: BackupFile | Path | str, *, full: bool = False, using: str | None = None
) -> list[str]:
    """Re-check a backup against its manifest and SQLite; the problems found (none: good)."""
    config = get_config(using)
    if not isinstance(backup, BackupFile):
        backup = _find(config, backup)
    return _verify(config, backup, full)[0]


def _verify(config: Config, backup: BackupFile, full: bool) -> tuple[list[str], bool]:
    """(the problems found, whether the file is byte for byte the one its manifest
    describes); the result is recorded in the manifest."""
    problems = []
    expected = backup.sha256
    faithful = False
    try:
        if expected is not None and backup.manifest.get("size") != backup.path.stat().st_size:
            problems.append(
                f"{backup.name} is {backup.path.stat().st_size} bytes; "
                f"its manifest says {backup.manifest.get('size')}"
            )
        elif expected is not None and engine.sha256_of(backup.path) != expected:
            problems.append(f"{backup.name} does not match the SHA-256 in its manifest")
        else:
            faithful = expected is not None
        engine.check(backup.path, full=full)
    except engine.EngineError as exc:
        problems.append(str(exc))
    except OSError as exc:
        problems.append(f"Could not read {backup.name}: {exc}")
    # A file whose SHA-256 still matches is the file that passed integrity_check before.
    still_full = expected is not None and backup.check == archive.FULL_CHECK
    if backup.manifest:
        manifest = {
            **backup.manifest,
            "verification": {
                "ok": not problems,
                "check": archive.FULL_CHECK if full or still_full else "quick_check",
                "at": state.isoformat(timezone.now().astimezone(config.time_zone)),
                "problems": problems,
            },
        }
        with contextlib.suppress(OSError):
            archive.replace_json(backup.manifest_path, manifest)
    return problems, faithful


def delete_backup(name_or_path: Path | str, *, using: str | None = None) -> BackupFile:
    """Delete a listed backup and its manifest; raises ``BackupNotFound`` or ``DeleteFailed``."""
    config = get_config(using)
    # Under the lock, so that a restore or a backup never reads a half-deleted folder.
    with _exclusive(config, DeleteFailed):
        backup = _find(config, name_or_path)
        _delete(backup, DeleteFailed)
    logger.info("Deleted the backup %s", backup.name)
    return backup


def migration_difference(
    backup: BackupFile,
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(migrations the code has and the backup lacks, migrations only the backup has)."""
    from django.db.migrations.loader import MigrationLoader

    try:
        recorded = set(_recorded_migrations(backup.path))
    except (sqlite3.Error, OSError) as exc:
        raise RestoreFailed(f"{backup.name} cannot be restored: {exc}") from exc
    known = set(MigrationLoader(None, ignore_no_migrations=True).disk_migrations)
    return sorted(known - recorded), sorted(recorded - known)


# Internals -----------------------------------------------------------------------------


@contextlib.contextmanager
def _exclusive(config: Config, error: type[BackupError]) -> Iterator[None]:
    """Hold the backup folder's lock; also clears what interrupted runs left there."""
    with archive.locked(config.directory, locking.LOCK_NAME, config.lock_timeout, error):
        try:
            removed = archive.remove_temporary_files(config.directory)
        except OSError as exc:
            raise error(f"Cannot use the backup folder {config.directory}: {exc}") from exc
        for leftover in removed:
            logger.info("Removed %s, left by an interrupted run", leftover.name)
        yield


def _back_up(
    config: Config,
    kind: str,
    progress: engine.Progress | None,
    note: Mapping[str, Any] | None = None,
) -> BackupFile:
    """Copy, check, publish and record one backup; the caller holds the lock."""
    backup = _publish_backup(config, kind, progress, note)
    _record_backup(config, backup)
    return backup


def _publish_backup(
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
    (or the daily job gives them one, see ``_check_newest_in_full``).
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
                **_checked_manifest(config, temporary, kind, started, full),
            }
        except engine.CheckFailed as exc:
            # The copy is faithful, so the live database is damaged. The copy may still hold
            # the newest rows, which nothing else has: it is kept, as not verified. A restore
            # (which replaces what is live, damaged or not) goes on.
            reason = _raise_damage_alarm(config, str(exc).replace(temporary.name, "the copy"))
            kept = _publish_unchecked(config, temporary, kind, started, reason)
            if under_restore:
                logger.error("%s", reason)
                return kept
            raise BackupFailed(f"{reason} The copy is kept as {kept.name}, not verified.") from exc
        path = archive.publish(temporary, config.directory, archive.stamp(started), manifest)
    except (engine.EngineError, OSError, sqlite3.Error) as exc:
        temporary.unlink(missing_ok=True)
        archive.manifest_path_for(temporary).unlink(missing_ok=True)
        raise BackupFailed(f"Backup of {config.database_path} failed: {exc}") from exc
    if full:
        _clear_damage_alarm(config)
    return archive.backup_file(path)


def _raise_damage_alarm(config: Config, problem: str) -> str:
    """Record that the live database is damaged; the reason to report, naming the backup to
    restore."""
    state.update(
        config.state_file,
        **{
            state.LIVE_DAMAGED_AT: state.isoformat(timezone.now().astimezone(config.time_zone)),
            state.LIVE_DAMAGED_REASON: problem,
        },
    )
    good = _newest_verified(config)
    advice = (
        f"restore {good.name}, the newest backup that passed integrity_check"
        if good is not None
        else "no backup has passed integrity_check yet"
    )
    return (
        f"The live database {config.database_path} is damaged: a fresh copy of it failed "
        f"SQLite's check ({problem}); {advice}."
    )


def _check_newest_in_full(config: Config) -> None:
    """The daily job's full check, on a day whose backup was made already (by hand, before
    a migrate or a restore): the newest backup gets integrity_check unless it passed it."""
    newest = next(iter(archive.list_backup_files(config.directory)), None)
    if newest is None or newest.verified or newest.check is None:
        return  # nothing to check, verified already, or failed already (and reported)
    problems, faithful = _verify(config, newest, full=True)
    if problems and faithful:
        # The file is the copy that was made, so the database it was copied from failed.
        raise BackupFailed(_raise_damage_alarm(config, "; ".join(problems)))
    if not problems:
        _clear_damage_alarm(config)


def _clear_damage_alarm(config: Config) -> None:
    state.update(config.state_file, remove=(state.LIVE_DAMAGED_AT, state.LIVE_DAMAGED_REASON))


def _newest_verified(config: Config) -> BackupFile | None:
    return next((b for b in archive.list_backup_files(config.directory) if b.verified), None)


def _record_backup(config: Config, backup: BackupFile, protected: Collection[Path] = ()) -> None:
    """Make a published backup count: the state file, retention, the log and the signal."""
    # A success ends the run of failures that the admin page and list_backups warn about.
    state.update(
        config.state_file,
        remove=(state.LAST_FAILURE_AT, state.LAST_FAILURE_REASON),
        **{state.LAST_BACKUP_AT: state.isoformat(backup.created_at.astimezone(config.time_zone))},
    )
    _prune(config, protected={backup.path, *protected})
    logger.info("Backed up %s to %s (%d bytes)", config.database_path, backup.path, backup.size)
    signals.send(signals.backup_created, backup=backup, using=config.alias)


def _checked_manifest(
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
        "migrations": _recorded_migrations(temporary),
        "verification": {
            "ok": True,
            "check": archive.FULL_CHECK if full else "quick_check",
            "at": state.isoformat(started),
        },
    }


def _recorded_migrations(path: Path) -> list[tuple[str, str]]:
    if not engine.has_table(path, "django_migrations"):
        return []
    return [(str(app), str(name)) for app, name in engine.read_rows(path, MIGRATIONS_QUERY)]


def _prune(config: Config, protected: Collection[Path]) -> None:
    listed = archive.list_backup_files(config.directory)
    # Never the last backup that a restore would accept.
    newest_verified = next((b.path for b in listed if b.verified), None)
    if newest_verified is not None:
        protected = {*protected, newest_verified}
    for backup in retention.expired(listed, config.max_backups, protected):
        try:
            _delete(backup, BackupFailed)
        except BackupFailed as exc:
            logger.error("Could not delete the old backup: %s", exc)
        else:
            logger.info("Deleted the old backup %s", backup.name)


def _delete(backup: BackupFile, error: type[BackupError]) -> None:
    try:
        archive.delete_backup(backup)
    except OSError as exc:
        if backup.path.exists():
            raise error(f"Could not delete {backup.name}: {exc}") from exc
        # The backup is gone; what stands where its manifest was is only clutter.
        logger.warning("Deleted %s, but not its manifest: %s", backup.name, exc)


def _record_failure(config: Config, kind: str, reason: str) -> None:
    logger.error("%s", reason)
    now = timezone.now().astimezone(config.time_zone)
    state.record_failure(config.state_file, state.BACKUP, reason, now)
    signals.send(signals.backup_failed, kind=kind, reason=reason, using=config.alias)


def _last_backup_at(config: Config) -> datetime | None:
    moment = state.read_datetime(config.state_file, state.LAST_BACKUP_AT)
    if moment is not None:
        return moment
    listed = archive.list_backup_files(config.directory)
    if listed:
        logger.warning(
            "No usable %s in %s; using the time of the newest backup, %s",
            state.LAST_BACKUP_AT,
            config.state_file,
            listed[0].name,
        )
        return listed[0].created_at
    return None


def _find(config: Config, name_or_path: Path | str) -> BackupFile:
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
    for backup in archive.list_backup_files(config.directory):
        if backup.name == given.name:
            return backup
    raise BackupNotFound(f"There is no backup called {given.name!r} in {config.directory}")


def _validate(config: Config, backup: BackupFile) -> None:
    """Refuse what cannot be restored (all but the integrity_check)."""
    try:
        if backup.manifest_path.exists() and backup.sha256 is None:
            # Without its checksum a changed file could pass for the backup that was made.
            raise engine.CheckFailed("its manifest is damaged, so its SHA-256 is unknown")
        if not engine.has_table(backup.path, "django_migrations"):
            raise engine.NotADatabase("it is a SQLite database, but not a Django one")
        engine.check_restorable(backup.path, config.database_path, sha256=backup.sha256)
    except (engine.EngineError, sqlite3.Error, OSError) as exc:
        raise RestoreFailed(f"{backup.name} cannot be restored: {exc}") from exc


def _restore_file(
    config: Config,
    backup: BackupFile,
    progress: engine.Progress | None,
    before_commit: Callable[[], None],
    *,
    wait_first: bool,
) -> tuple[BackupFile | None, str | None]:
    """Restore ``backup`` into the live database after a safety backup of it, taken under
    the restore's own write lock; (the safety backup, why the result is unchecked)."""
    safety: BackupFile | None = None

    def take_safety_backup() -> None:
        # Called once the restore holds the write lock: no one can commit between this
        # copy and the restore, so it is exactly the data that the restore replaces.
        nonlocal safety
        try:
            safety = _publish_backup(config, "safety", None, under_restore=True)
        except BackupFailed as exc:
            raise RestoreFailed(f"No restore without a safety backup: {exc}") from exc

    _close_connections(config.alias)
    try:
        if wait_first:
            # In rollback-journal mode the copy's lock keeps the site's readers out too, so
            # it is not held while the check ends: the check ends first.
            before_commit()
        warning = engine.restore_into(
            backup.path,
            config.database_path,
            timeout=config.lock_timeout,
            progress=progress,
            before_commit=None if wait_first else before_commit,
            while_locked=take_safety_backup if _has_data(config.database_path) else None,
        )
    except engine.CheckFailed as exc:
        # Committed, and SQLite found the restored database damaged: the safety backup
        # holds the data it replaced, so it stays (and counts), whatever happens next.
        if safety is None:
            raise RestoreFailed(
                f"{exc}; there was no database before it to put back", database_changed=True
            ) from exc
        _record_backup(config, safety, protected={backup.path})
        raise _put_back(config, safety, str(exc)) from exc
    except (RestoreFailed, engine.EngineError, sqlite3.Error, OSError) as exc:
        # Refused by before_commit, or rolled back: the live database is as it was, so
        # the safety backup is a second copy of it. (Anything else, a KeyboardInterrupt
        # say, may have come after the commit: the safety backup stays.)
        if safety is not None:
            try:
                archive.delete_backup(safety)
            except OSError as cleanup:  # pragma: no cover - a file just written, undeletable
                logger.error("Could not delete the unneeded %s: %s", safety.name, cleanup)
        if isinstance(exc, RestoreFailed):
            raise
        raise RestoreFailed(f"{backup.name} was not restored: {exc}") from exc
    finally:
        # Django's connections may hold pages of the old database in their caches;
        # the next query opens a fresh connection and sees the restored data.
        _close_connections(config.alias)
    return safety, warning


def _put_back(config: Config, safety: BackupFile, problem: str) -> RestoreFailed:
    """Put ``safety`` back over a restored database that failed its check, after keeping a
    copy of what is live then (with anything written since the restore); what to raise."""
    kept: list[BackupFile] = []

    def keep_what_is_live() -> None:
        kept.append(_publish_damaged(config, problem))

    try:
        engine.restore_into(
            safety.path,
            config.database_path,
            timeout=config.lock_timeout,
            while_locked=keep_what_is_live,
        )
    except engine.CheckFailed as exc:
        # Put back, and committed: but the data from before fails its check too (it was
        # damaged already, and the safety backup kept it as it was).
        logger.critical(
            "The live database %s failed its check after a restore; the safety backup %s was "
            "put back, and fails its check too: %s",
            config.database_path,
            safety.path,
            exc,
        )
        return RestoreFailed(
            f"{problem}. The data from before the restore was put back from {safety.name}, "
            f"and fails its check too ({exc}); what the database held just before that is "
            f"kept in {kept[0].name}"
        )
    except (engine.EngineError, BackupFailed, sqlite3.Error, OSError) as exc:
        logger.critical(
            "The live database %s failed its check after a restore and was not put back from "
            "the safety backup %s: %s",
            config.database_path,
            safety.path,
            exc,
        )
        return RestoreFailed(
            f"{problem}. It could not be put back from the safety backup {safety.name} "
            f"({exc}): the live database is the restored one",
            database_changed=True,
        )
    return RestoreFailed(
        f"{problem}. The data from before the restore was put back from {safety.name}; "
        f"what the database held just before that is kept in {kept[0].name}"
    )


def _publish_damaged(config: Config, problem: str) -> BackupFile:
    """Keep a copy of the live database as it is, unchecked (it is known to be damaged);
    called under a restore's write lock."""
    started = timezone.now().astimezone(config.time_zone)
    temporary = archive.temporary_path(config.directory)
    try:
        engine.copy_database(
            config.database_path, temporary, timeout=config.lock_timeout, under_restore=True
        )
        return _publish_unchecked(config, temporary, "damaged", started, problem)
    except (engine.EngineError, OSError) as exc:
        temporary.unlink(missing_ok=True)
        archive.manifest_path_for(temporary).unlink(missing_ok=True)
        raise BackupFailed(f"Could not keep a copy of {config.database_path}: {exc}") from exc


def _publish_unchecked(
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


def _refuse_inside_a_transaction(config: Config) -> None:
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


def _has_data(path: Path) -> bool:
    # Django creates an empty file on first connection: nothing to keep in a safety backup.
    try:
        return path.stat().st_size > 0
    except FileNotFoundError:
        return False


def _close_connections(alias: str) -> None:
    connections[alias].close()
