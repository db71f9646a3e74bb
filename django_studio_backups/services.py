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

import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, tzinfo
from pathlib import Path
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.db import connections
from django.utils import timezone

from . import (
    archive,
    backing_up,
    conf,
    engine,
    engine_restore,
    growth,
    locking,
    notify,
    offsite,
    offsite_record,
    point_in_time,
    replication,
    replication_record,
    restoring,
    retention,
    signals,
    state,
    verifying,
)

# BackupFile is part of this module's API: faces take the type from here.
from .archive import BackupFile as BackupFile
from .conf import Config, get_config
from .exceptions import BackupError, BackupFailed, BackupNotFound, DeleteFailed, ReplicationFailed
from .offsite_conf import get_offsite_config
from .replication_conf import ReplicationConfig, get_replication_config, replicated

logger = logging.getLogger("django_studio_backups")

NO_BACKUP = "—"
# How many of the backups checked longest ago the daily job checks again in full, so that a
# backup damaged on the disk after it was made does not keep its ✓ for long.
REVERIFY_EACH_DAY = 2


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
    return [
        b.as_dict(config.time_zone)
        for b in archive.list_backup_files(config.directory, config.time_zone)
    ]


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
    moment = backing_up.last_backup_at(config)
    if moment is None:
        return NO_BACKUP
    return archive.display(moment, config.time_zone)


def display_time(moment: datetime, *, using: str | None = None) -> str:
    """``moment`` as the app shows times to people: ``dd/mm/yyyy hh:mm``, in the studio's zone."""
    return time_display(using=using)(moment)


def time_display(*, using: str | None = None) -> Callable[[datetime], str]:
    """``display_time`` with the settings read once, for showing many times."""
    zone = get_config(using).time_zone
    return lambda moment: archive.display(moment, zone)


# The raising API -----------------------------------------------------------------------


Failure = state.Failure


RestoreReport = restoring.RestoreReport
# What was recorded of each backup's off-site copy (see offsite_status()).
OffsiteStatus = offsite_record.Status
# What `replicate` last recorded of the replica, and whether it runs (see replication_seen()).
ReplicationSeen = replication_record.Seen
# A moment the replica cannot restore (parse_moment(), fetch_moment()); a RestoreFailed.
BadMoment = point_in_time.BadMoment
# (bytes done, bytes expected), as a backup or restore goes.
Progress = engine.Progress
# What to do about an unusual growth (see growth_warning()).
GROWTH_HINT = growth.HINT


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
    copy_in_background: bool = False,
) -> BackupFile:
    """Back up the database now; raises ``BackupFailed`` with the reason.

    ``note`` adds fields to the manifest (the pre-migrate backup records its migration plan);
    it cannot replace the fields the service writes. ``copy_in_background`` returns before
    the off-site copy is made (see ``offsite_status``).
    """
    config = get_config(using)
    try:
        backing_up.refuse_inside_a_transaction(config)
        with backing_up.exclusive(config, BackupFailed):
            backup = backing_up.back_up(config, kind, progress, note=note)
    except BackupFailed as exc:
        backing_up.record_failure(config, kind, str(exc), exc.problem, raised=True)
        raise
    # Outside the lock: a slow upload must not hold up the next backup or a restore.
    offsite.copy_new_backup(backup, config, in_background=copy_in_background)
    return backup


def backup_if_needed(
    *,
    using: str | None = None,
    progress: engine.Progress | None = None,
    daily_job: bool = False,
) -> BackupFile | None:
    """Make the daily backup unless one exists for today; None when none was needed.

    ``daily_job``: also do the daily job's rounds: re-verify the backups checked longest
    ago (``REVERIFY_EACH_DAY``), make the off-site copies that are behind, and request
    ``HEARTBEAT_URL`` once all is well (a backup at start-up must not hide a job that
    stopped). A failure is reported either way.
    """
    config = get_config(using)
    try:
        backing_up.refuse_inside_a_transaction(config)
        with backing_up.exclusive(config, BackupFailed):
            last = backing_up.last_backup_at(config)
            today = timezone.now().astimezone(config.time_zone).date()
            backup: BackupFile | None = None
            made_today = last is not None and last.astimezone(config.time_zone).date() == today
            if made_today:
                logger.info("A backup of %s already exists for %s", config.database_path, today)
            if not made_today or not verifying.check_newest_in_full(config):
                backup = backing_up.back_up(config, "daily", progress)
    except BackupFailed as exc:
        backing_up.record_failure(config, "daily", str(exc), exc.problem, raised=True)
        raise
    # Copies the new backup, and any that an upload in the background did not finish; with
    # no new backup, only the daily job looks at the storage, and only if it is behind.
    copied = True
    if backup is not None or daily_job:
        copied = offsite.catch_up(config, backup)
    intact = not daily_job or verifying.reverify_oldest(config, REVERIFY_EACH_DAY, backup)
    damaged = state.read_datetime(config.state_file, state.LIVE_DAMAGED_AT) is not None
    replicating = not daily_job or _replication_keeps_up(config)
    if daily_job and copied and intact and not damaged and replicating:
        # The day has a backup that passed its checks, its off-site copies are made, and
        # the replica (if any) keeps up.
        notify.daily_succeeded()
    return backup


def _replication_keeps_up(config: Config) -> bool:
    # The daily job also looks at the replication: a `replicate` that stopped would
    # otherwise go unnoticed until the day a moment is needed.
    try:
        settings = get_replication_config(config.alias)
    except ImproperlyConfigured as exc:
        reason = f"Replication cannot run: {exc}"
    else:
        if settings is None:
            return True
        found = replication.trouble(config, settings)
        if found is None:
            return True
        reason = f"Replication is failing: {found}"
    logger.error("%s", reason)
    signals.send(signals.backup_failed, kind="replication", reason=reason, using=config.alias)
    notify.failure("replication", reason, database=config.database_path)
    return False


def backups(*, using: str | None = None) -> list[BackupFile]:
    """Every backup, newest first (by the time it was made)."""
    config = get_config(using)
    return archive.list_backup_files(config.directory, config.time_zone)


def find_backup(name_or_path: Path | str, *, using: str | None = None) -> BackupFile:
    """The listed backup called ``name_or_path``; ``BackupNotFound`` for anything else."""
    return backing_up.find(get_config(using), name_or_path)


# What "the latest backup" never is: a copy of a damaged database, or a safety backup, which
# holds the data a restore replaced (a second `restore_backup --latest` would undo the first).
NOT_LATEST = frozenset({"damaged", retention.SAFETY})


def latest_backup(*, using: str | None = None) -> BackupFile:
    """The newest backup to restore: one with a manifest that has not failed a check, and
    neither a safety backup nor a copy of a damaged database; ``BackupNotFound`` when there
    is none."""
    for backup in backups(using=using):
        if backup.sound and backup.kind not in NOT_LATEST:
            return backup
    raise BackupNotFound("There is no backup to restore yet.")


def latest_offsite_copy(*, using: str | None = None) -> offsite.OffsiteCopy:
    """The newest off-site copy to restore, by the rule of ``latest_backup``;
    ``BackupNotFound`` when there is none."""
    for copy in offsite_copies(using=using):
        if copy.kind not in NOT_LATEST:
            return copy
    raise BackupNotFound("There is no off-site copy to restore yet.")


def growth_warning(*, using: str | None = None) -> str | None:
    """Why the newest backup's size is unusual, or None while it is not (see ``growth``)."""
    config = get_config(using)
    found = growth.unusual_growth(
        archive.list_backup_files(config.directory, config.time_zone), config.growth_warning
    )
    return growth.describe(found) if found is not None else None


def last_backup_at(*, using: str | None = None) -> datetime | None:
    return backing_up.last_backup_at(get_config(using))


def last_regular_backup_at(*, using: str | None = None) -> datetime | None:
    """When the newest daily or manual backup (or one put back from off-site) was made: what
    a schedule makes. Pre-migrate and safety backups do not count."""
    config = get_config(using)
    return next(
        (
            b.created_at
            for b in archive.list_backup_files(config.directory, config.time_zone)
            if b.kind in retention.REGULAR
        ),
        None,
    )


def last_failure(*, using: str | None = None) -> Failure | None:
    """The last failed backup attempt, if it came after the last successful backup."""
    config = get_config(using)
    return state.last_failure(
        config.state_file, state.BACKUP, lambda: backing_up.last_backup_at(config)
    )


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
    return Damage(damaged_at, reason, backing_up.newest_verified(config))


def in_wal_mode(*, using: str | None = None) -> bool | None:
    """Whether the live database is in WAL mode; None while there is no database."""
    config = get_config(using)
    try:
        return engine.is_wal(engine.read_live_header(config.database_path))
    except (engine.NotADatabase, OSError):
        return None


def can_lock_files() -> bool:
    """Whether this Python can lock files (fcntl); without, backups are refused."""
    return locking.LOCKS_AVAILABLE


def has_wal_reset_bug() -> bool:
    """Whether this Python's SQLite has the WAL-reset bug (see
    ``engine_restore.has_wal_reset_bug``)."""
    return engine_restore.HAS_WAL_RESET_BUG


def backups_left_beside_a_link(*, using: str | None = None) -> Path | None:
    """The folder where versions before 0.2 put the backups of a database reached through a
    symlink (beside the link, not the real file), if it holds any; None otherwise."""
    config = get_config(using)
    name = connections[config.alias].settings_dict["NAME"]
    if conf.user_settings()["DIRECTORY"] or str(name).startswith("file:"):
        return None
    old = Path(name).absolute().parent / "backups"
    try:
        if os.path.realpath(old) == os.path.realpath(config.directory):
            return None
        return old if archive.list_backup_files(old) else None
    except OSError:  # a folder that cannot be read (a symlink loop): nothing to point out
        return None


def record_failure(reason: str, *, kind: str, using: str | None = None) -> None:
    """Log, record in the state file and signal a failed attempt to back up.

    The functions above do this for the failures they raise; callers that catch something
    else (a cron job, a project's own scheduler) use this so the failure is still seen.
    """
    backing_up.record_failure(get_config(using), kind, reason)


def restore(
    name_or_path: Path | str,
    *,
    using: str | None = None,
    progress: engine.Progress | None = None,
    copy_in_background: bool = False,
) -> RestoreReport:
    """Restore a listed backup onto the live database, after a safety backup of it.

    Raises ``RestoreFailed`` with the live database as it was, and every backup kept.
    ``copy_in_background``: as for ``backup_now``, for the safety backup's off-site copy.
    """
    return restoring.restore(
        get_config(using), name_or_path, progress, copy_in_background=copy_in_background
    )


def replication_configured(*, using: str | None = None) -> bool:
    return replicated(using or conf.user_settings()["DATABASE"])


def replication_status(*, using: str | None = None) -> replication.Status:
    """Whether `manage.py replicate` runs, the moments the replica can restore, and its lag;
    ``ReplicationFailed`` when it is not configured or Litestream cannot be asked."""
    config = get_config(using)
    return replication.status(config, _replication(using))


def replication_running(*, using: str | None = None) -> bool:
    """Whether `manage.py replicate` runs for the database (from its lock; no network)."""
    return replication.is_running(get_config(using))


def replication_host_key_unchecked(*, using: str | None = None) -> bool:
    """Whether the replica is on an SFTP server whose host key Litestream would not check."""
    settings = _replication(using)
    return settings.url.startswith("sftp:") and not settings.options.get("host-key")


def replication_trouble(*, using: str | None = None) -> str | None:
    """Why the replica is not keeping up, or None (asks Litestream: a network call)."""
    return replication.trouble(get_config(using), _replication(using))


def litestream(*, using: str | None = None) -> str:
    """The litestream program replication uses; ``ReplicationFailed`` when there is none."""
    return replication.executable(_replication(using))


def replication_seen(*, using: str | None = None) -> ReplicationSeen:
    """Whether `manage.py replicate` runs, and the window and lag it last recorded, without
    asking Litestream (no network); ``ImproperlyConfigured`` for wrong settings."""
    config = get_config(using)
    settings = _replication(using)
    return replication_record.seen(
        config, running=replication.is_running(config), lag_warning=settings.lag_warning
    )


def time_zone(*, using: str | None = None) -> tzinfo:
    """The studio's time zone, in which the app shows times and reads naive ones."""
    return get_config(using).time_zone


def parse_moment(text: str, *, using: str | None = None) -> datetime | None:
    """A moment to restore from ISO 8601 ``text`` (naive: in the studio's time zone); None
    for "latest". ``BadMoment`` (a ``RestoreFailed``) for anything else."""
    return point_in_time.parse_moment(text, get_config(using).time_zone)


def restore_to_moment(
    moment: datetime | None,
    *,
    using: str | None = None,
    progress: engine.Progress | None = None,
    copy_in_background: bool = False,
) -> RestoreReport:
    """Restore the live database to how it was at ``moment`` (None: the replica's newest):
    fetched from Litestream's replica as a "point-in-time" backup, then restored as any
    backup is, after a safety backup. ``BadMoment`` for a moment the replica cannot give,
    ``RestoreFailed`` for the rest, with the live database as it was."""
    backup = fetch_moment(moment, using=using)
    return restoring.restore(
        get_config(using), backup.name, progress, copy_in_background=copy_in_background
    )


def fetch_moment(moment: datetime | None, *, using: str | None = None) -> BackupFile:
    """The database as it was at ``moment`` (None: the replica's newest), fetched from the
    replica into the backup folder as a backup of kind "point-in-time", to restore."""
    return point_in_time.fetch_backup(get_config(using), _replication(using), moment)


def replicate(*, using: str | None = None) -> int:
    """Run Litestream in the foreground until SIGTERM or SIGINT; its exit status."""
    return replication.replicate(get_config(using), _replication(using))


def _replication(using: str | None) -> ReplicationConfig:
    settings = get_replication_config(using)
    if settings is None:
        raise ReplicationFailed(
            "Replication is not configured: set STUDIO_BACKUPS['REPLICATION'] (see the README)"
        )
    return settings


Change = restoring.Change


def row_changes(backup: BackupFile, *, using: str | None = None) -> list[Change]:
    """What restoring ``backup`` would change: for each model whose row count differs, the
    rows the live database holds and the backup's, most rows lost first. ``RestoreFailed``
    if either cannot be read. Counting takes a moment per GiB (see bench/)."""
    return restoring.row_changes(get_config(using), backup)


def migration_difference(
    backup: BackupFile,
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(migrations the code has and the backup lacks, migrations only the backup has);
    ``RestoreFailed`` if the backup cannot be read."""
    return restoring.migration_difference(backup)


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


def offsite_status(*, using: str | None = None) -> OffsiteStatus:
    """What the last uploads and syncs recorded of each backup's copy, read from the state
    file without asking the storage: for pages that must not wait on the network."""
    return offsite_record.status(using=using)


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
        backup = backing_up.find(config, backup)
    return verifying.verify(config, backup, full)[0]


def delete_backup(name_or_path: Path | str, *, using: str | None = None) -> BackupFile:
    """Delete a listed backup and its manifest; raises ``BackupNotFound`` or ``DeleteFailed``."""
    config = get_config(using)
    # Under the lock, so that a restore or a backup never reads a half-deleted folder.
    with backing_up.exclusive(config, DeleteFailed):
        backup = backing_up.find(config, name_or_path)
        backing_up.delete(backup, DeleteFailed)
    logger.info("Deleted the backup %s", backup.name)
    return backup


# Internals -----------------------------------------------------------------------------
