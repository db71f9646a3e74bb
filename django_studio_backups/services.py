"""The public API: back up, list, verify and restore the project's SQLite database.

The seed's functions (``create_backup_now``, ``create_backup_if_needed``, ``list_backups``,
``restore_backup``, ``get_last_backup_display``) log an expected failure and return
None/False. The richer functions below them raise ``BackupError`` subclasses whose message
says what went wrong; management commands and admin views use those.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from django.db import connections
from django.utils import timezone

from . import __version__, archive, engine, growth, locking, offsite, retention, signals, state
from .archive import BackupFile
from .conf import Config, get_config
from .exceptions import BackupError, BackupFailed, BackupNotFound, DeleteFailed, RestoreFailed

logger = logging.getLogger("django_studio_backups")

NO_BACKUP = "—"
MIGRATIONS_QUERY = "SELECT app, name FROM django_migrations ORDER BY id"


# The seed's contract -------------------------------------------------------------------


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
    return moment.astimezone(config.time_zone).strftime("%d/%m/%Y %H:%M")


# The richer API ------------------------------------------------------------------------


@dataclass(frozen=True)
class RestoreReport:
    restored: BackupFile
    safety_backup: BackupFile | None
    # Migrations the current code has that the backup lacks, and the reverse.
    missing_migrations: list[tuple[str, str]] = field(default_factory=list)
    unknown_migrations: list[tuple[str, str]] = field(default_factory=list)


@dataclass(frozen=True)
class Failure:
    at: datetime
    reason: str


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
        with _exclusive(config, BackupFailed):
            last = _last_backup_at(config)
            today = timezone.now().astimezone(config.time_zone).date()
            if last is not None and last.astimezone(config.time_zone).date() == today:
                logger.info("A backup of %s already exists for %s", config.database_path, today)
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
    failed_at = state.read_datetime(config.state_file, state.LAST_FAILURE_AT)
    if failed_at is None:
        return None
    succeeded_at = _last_backup_at(config)
    if succeeded_at is not None and succeeded_at > failed_at:
        return None
    try:
        reason = str(state.read(config.state_file).get(state.LAST_FAILURE_REASON, ""))
    except state.UnreadableState:  # pragma: no cover - read_datetime above just parsed it
        reason = ""
    return Failure(at=failed_at, reason=reason)


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
            # it writes (5 s per GiB): it runs alongside the other checks, the safety backup
            # and (in WAL mode) the copy into the live database, which commits only once it
            # has passed.
            with engine.BackgroundCheck(backup.path, full=True) as integrity:
                live_in_wal_mode = _validate(config, backup)
                missing, unknown = migration_difference(backup)
                safety = None
                if _has_data(config.database_path):
                    try:
                        safety = _publish_backup(config, "safety", None)
                    except BackupFailed as exc:
                        raise RestoreFailed(f"No restore without a safety backup: {exc}") from exc

                def passed() -> None:
                    integrity.wait()
                    failure = integrity.failure()
                    if failure is not None:
                        raise RestoreFailed(
                            f"{backup.name} cannot be restored: {failure}"
                        ) from failure

                _restore_file(
                    config, backup, safety, progress, passed, wait_first=not live_in_wal_mode
                )
            # Recorded (and pruned) only once the restore has worked: a restore that fails
            # leaves no safety backup, costs the oldest real backup nothing, and does not
            # count as the day's backup.
            if safety is not None:
                _record_backup(config, safety, protected={backup.path})
            else:
                _prune(config, protected={backup.path})
    except RestoreFailed as exc:
        logger.error("Restore into %s failed: %s", config.database_path, exc)
        raise
    logger.info(
        "Restored %s from %s (safety backup: %s)",
        config.database_path,
        backup.name,
        safety.name if safety else "none, there was no database",
    )
    signals.send(signals.backup_restored, backup=backup, safety_backup=safety, using=config.alias)
    if safety is not None:
        offsite.copy_new_backup(safety, config)
    return RestoreReport(backup, safety, missing, unknown)


def restore_offsite(
    name: str,
    *,
    identity: Path | str | None = None,
    using: str | None = None,
    progress: engine.Progress | None = None,
) -> RestoreReport:
    """Fetch an off-site copy (decrypted with the ``identity`` file), check it against its
    manifest, keep it as a local backup, and restore it like any other.

    Raises ``OffsiteFailed`` if the copy cannot be fetched, ``RestoreFailed`` as ``restore``.
    """
    backup = offsite.download(name, identity=identity, using=using)
    return restore(backup.name, using=using, progress=progress)


def verify(
    backup: BackupFile | Path | str, *, full: bool = False, using: str | None = None
) -> list[str]:
    """Re-check a backup against its manifest and SQLite; the problems found (none: good)."""
    config = get_config(using)
    if not isinstance(backup, BackupFile):
        backup = _find(config, backup)
    problems = []
    expected = backup.sha256
    try:
        if expected is not None and backup.manifest.get("size") != backup.path.stat().st_size:
            problems.append(
                f"{backup.name} is {backup.path.stat().st_size} bytes; "
                f"its manifest says {backup.manifest.get('size')}"
            )
        elif expected is not None and engine.sha256_of(backup.path) != expected:
            problems.append(f"{backup.name} does not match the SHA-256 in its manifest")
        engine.check(backup.path, full=full)
    except engine.EngineError as exc:
        problems.append(str(exc))
    except OSError as exc:
        problems.append(f"Could not read {backup.name}: {exc}")
    if backup.manifest:
        manifest = {
            **backup.manifest,
            "verification": {
                "ok": not problems,
                "check": "integrity_check" if full else "quick_check",
                "at": state.isoformat(timezone.now().astimezone(config.time_zone)),
                "problems": problems,
            },
        }
        with contextlib.suppress(OSError):
            archive.replace_json(backup.manifest_path, manifest)
    return problems


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
    with contextlib.ExitStack() as stack:
        try:
            archive.ensure_directory(config.directory)
            stack.enter_context(
                locking.exclusive(config.directory / locking.LOCK_NAME, config.lock_timeout)
            )
            for leftover in archive.remove_temporary_files(config.directory):
                logger.info("Removed %s, left by an interrupted run", leftover.name)
        except (OSError, locking.LockTimeout) as exc:
            raise error(f"Cannot use the backup folder {config.directory}: {exc}") from exc
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
) -> BackupFile:
    """Copy, check and publish one backup; the caller holds the lock."""
    started = timezone.now().astimezone(config.time_zone)
    temporary = archive.temporary_path(config.directory)
    try:
        engine.copy_database(
            config.database_path, temporary, timeout=config.lock_timeout, progress=progress
        )
        manifest = {**(note or {}), **_checked_manifest(config, temporary, kind, started)}
        path = archive.publish(
            temporary, config.directory, started.strftime("%Y%m%d_%H%M%S"), manifest
        )
    except (engine.EngineError, OSError, sqlite3.Error) as exc:
        temporary.unlink(missing_ok=True)
        archive.manifest_path_for(temporary).unlink(missing_ok=True)
        raise BackupFailed(f"Backup of {config.database_path} failed: {exc}") from exc
    return archive.backup_file(path)


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
    config: Config, temporary: Path, kind: str, started: datetime
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
        engine.check(temporary)
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
        "verification": {"ok": True, "check": "quick_check", "at": state.isoformat(started)},
    }


def _recorded_migrations(path: Path) -> list[tuple[str, str]]:
    if not engine.has_table(path, "django_migrations"):
        return []
    return [(str(app), str(name)) for app, name in engine.read_rows(path, MIGRATIONS_QUERY)]


def _prune(config: Config, protected: Collection[Path]) -> None:
    listed = archive.list_backup_files(config.directory)
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
    state.update(
        config.state_file,
        **{
            state.LAST_FAILURE_AT: state.isoformat(timezone.now().astimezone(config.time_zone)),
            state.LAST_FAILURE_REASON: reason,
        },
    )
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


def _validate(config: Config, backup: BackupFile) -> bool:
    """Refuse what cannot be restored (all but integrity_check); whether the live database
    is in WAL mode."""
    try:
        if backup.manifest_path.exists() and backup.sha256 is None:
            # Without its checksum a changed file could pass for the backup that was made.
            raise engine.CheckFailed("its manifest is damaged, so its SHA-256 is unknown")
        if backup.sha256 is not None and engine.sha256_of(backup.path) != backup.sha256:
            raise engine.CheckFailed(
                "it does not match the SHA-256 in its manifest, so it changed after it was made"
            )
        if not engine.has_table(backup.path, "django_migrations"):
            raise engine.NotADatabase("it is a SQLite database, but not a Django one")
        if not _has_data(config.database_path):
            return False
        live = engine.read_live_header(config.database_path)
        restored = engine.read_header(backup.path)
        # Bytes 18-19 of the header are 2 in WAL mode. SQLite cannot change the page size
        # of a database in WAL mode.
        if live[18] == 2 and engine.page_size(live) != engine.page_size(restored):
            raise engine.CheckFailed(
                f"its page size ({engine.page_size(restored)} bytes) differs from the live "
                f"database's ({engine.page_size(live)} bytes), which is in WAL mode"
            )
    except (engine.EngineError, sqlite3.Error, OSError) as exc:
        raise RestoreFailed(f"{backup.name} cannot be restored: {exc}") from exc
    return live[18] == 2


def _restore_file(
    config: Config,
    backup: BackupFile,
    safety: BackupFile | None,
    progress: engine.Progress | None,
    before_commit: Callable[[], None],
    *,
    wait_first: bool,
) -> None:
    _close_connections(config.alias)
    try:
        if wait_first:
            # In rollback-journal mode the copy's lock keeps the site's readers out too, so
            # it is not held while the check ends: the check ends first.
            before_commit()
        engine.restore_into(
            backup.path,
            config.database_path,
            timeout=config.lock_timeout,
            progress=progress,
            before_commit=None if wait_first else before_commit,
        )
    except engine.CheckFailed as exc:
        # The restore was committed: the safety backup holds the data it replaced, so it
        # stays (and counts), whether or not putting it back works.
        if safety is not None:
            _put_back(config, safety)
            _record_backup(config, safety, protected={backup.path})
        raise RestoreFailed(str(exc)) from exc
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


def _put_back(config: Config, safety: BackupFile) -> None:
    try:
        engine.restore_into(safety.path, config.database_path, timeout=config.lock_timeout)
    except engine.EngineError as exc:  # pragma: no cover - needs two independent failures
        logger.critical(
            "The live database %s failed its check after a restore and could not be put back "
            "from the safety backup %s: %s",
            config.database_path,
            safety.path,
            exc,
        )


def _has_data(path: Path) -> bool:
    # Django creates an empty file on first connection: nothing to keep in a safety backup.
    try:
        return path.stat().st_size > 0
    except FileNotFoundError:
        return False


def _close_connections(alias: str) -> None:
    connections[alias].close()
