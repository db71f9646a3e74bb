"""The public API: back up, list, verify, copy off-site and restore the project's database.

Two tiers:

- the simple API (``create_backup_now``, ``create_backup_if_needed``, ``list_backups``,
  ``restore_backup``, ``get_last_backup_display``) logs an expected failure and returns
  None/False;
- the raising API below it returns ``BackupFile`` objects and reports, and raises
  ``BackupError`` subclasses whose message says what went wrong. Management commands, the
  admin and the cron job use it, and call nothing else of the app.

Its questions about the state of the backups, its off-site part and its point-in-time part
are written in ``services_status``, ``services_offsite`` and ``services_replication``, and
imported here: faces take every name from this module.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import datetime, tzinfo
from pathlib import Path
from typing import Any

from django.utils import timezone

from . import (
    archive,
    backing_up,
    engine,
    growth,
    notify,
    offsite,
    offsite_record,
    point_in_time,
    replication,
    replication_record,
    restoring,
    state,
    verifying,
)

# BackupFile is part of this module's API: faces take the type from here.
from .archive import BackupFile as BackupFile
from .conf import get_config
from .exceptions import BackupError, BackupFailed, BackupNotFound, DeleteFailed
from .services_offsite import (
    download_offsite as download_offsite,
)
from .services_offsite import (
    latest_offsite_copy as latest_offsite_copy,
)
from .services_offsite import (
    offsite_configured as offsite_configured,
)
from .services_offsite import (
    offsite_copies as offsite_copies,
)
from .services_offsite import (
    offsite_failure as offsite_failure,
)
from .services_offsite import (
    offsite_names as offsite_names,
)
from .services_offsite import (
    offsite_status as offsite_status,
)

# The off-site and point-in-time parts of the API live in modules of their own.
from .services_offsite import (
    restore_offsite as restore_offsite,
)
from .services_offsite import (
    sync_offsite as sync_offsite,
)
from .services_replication import (
    fetch_moment as fetch_moment,
)
from .services_replication import (
    litestream as litestream,
)
from .services_replication import (
    parse_moment as parse_moment,
)
from .services_replication import (
    replicate as replicate,
)
from .services_replication import (
    replication_configured as replication_configured,
)
from .services_replication import (
    replication_host_key_unchecked as replication_host_key_unchecked,
)
from .services_replication import (
    replication_running as replication_running,
)
from .services_replication import (
    replication_seen as replication_seen,
)
from .services_replication import (
    replication_status as replication_status,
)
from .services_replication import (
    replication_trouble as replication_trouble,
)
from .services_replication import (
    restore_to_moment as restore_to_moment,
)
from .services_status import (
    Damage as Damage,
)
from .services_status import (
    backups_left_beside_a_link as backups_left_beside_a_link,
)
from .services_status import (
    can_lock_files as can_lock_files,
)
from .services_status import (
    growth_warning as growth_warning,
)
from .services_status import (
    has_wal_reset_bug as has_wal_reset_bug,
)
from .services_status import (
    in_wal_mode as in_wal_mode,
)
from .services_status import (
    last_backup_at as last_backup_at,
)
from .services_status import (
    last_failure as last_failure,
)
from .services_status import (
    last_regular_backup_at as last_regular_backup_at,
)
from .services_status import (
    live_damage as live_damage,
)

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


def time_zone(*, using: str | None = None) -> tzinfo:
    """The studio's time zone, in which the app shows times and reads naive ones."""
    return get_config(using).time_zone


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
    replicating = not daily_job or replication.keeps_up(config)
    if daily_job and copied and intact and not damaged and replicating:
        # The day has a backup that passed its checks, its off-site copies are made, and
        # the replica (if any) keeps up.
        notify.daily_succeeded()
    return backup


def backups(*, using: str | None = None) -> list[BackupFile]:
    """Every backup, newest first (by the time it was made)."""
    config = get_config(using)
    return archive.list_backup_files(config.directory, config.time_zone)


def find_backup(name_or_path: Path | str, *, using: str | None = None) -> BackupFile:
    """The listed backup called ``name_or_path``; ``BackupNotFound`` for anything else."""
    return backing_up.find(get_config(using), name_or_path)


def latest_backup(*, using: str | None = None) -> BackupFile:
    """The newest backup to restore: one with a manifest that has not failed a check, and
    neither a safety backup nor a copy of a damaged database; ``BackupNotFound`` when there
    is none."""
    for backup in backups(using=using):
        if backup.sound and backup.kind not in restoring.NOT_LATEST:
            return backup
    raise BackupNotFound("There is no backup to restore yet.")


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
