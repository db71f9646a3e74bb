"""The public API of continuous replication and point-in-time restores (see
replication.py and point_in_time.py); ``services`` re-exports it, and faces import it from
there."""

from __future__ import annotations

from datetime import datetime

from . import conf, engine, point_in_time, replication, replication_record, restoring
from .archive import BackupFile
from .conf import get_config
from .exceptions import ReplicationFailed
from .replication_conf import ReplicationConfig, get_replication_config, replicated


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


def replication_seen(*, using: str | None = None) -> replication_record.Seen:
    """Whether `manage.py replicate` runs, and the window and lag it last recorded, without
    asking Litestream (no network); ``ImproperlyConfigured`` for wrong settings."""
    config = get_config(using)
    settings = _replication(using)
    return replication_record.seen(
        config, running=replication.is_running(config), lag_warning=settings.lag_warning
    )


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
) -> restoring.RestoreReport:
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
