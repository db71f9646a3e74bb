"""The public API's questions about the state of the backups: when the last one was made,
whether an attempt failed since, whether the live database is known to be damaged, and what
this machine's Python and SQLite can do. ``services`` re-exports it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from django.db import connections

from . import archive, backing_up, conf, engine, engine_restore, growth, locking, retention, state
from .archive import BackupFile
from .conf import get_config


@dataclass(frozen=True)
class Damage:
    """A fresh copy of the live database failed SQLite's check: the database is damaged."""

    at: datetime
    reason: str
    # The newest backup that passed integrity_check, the one to restore; None if none did.
    newest_good: BackupFile | None


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


def last_failure(*, using: str | None = None) -> state.Failure | None:
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
