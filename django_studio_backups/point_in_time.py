"""Point-in-time restores: the database as it was at a moment, fetched from Litestream's
replica into the backup folder as a backup of kind "point-in-time", and then restored like
any other backup (its checks, the safety backup, one transaction)."""

from __future__ import annotations

import logging
import sqlite3
from datetime import datetime, tzinfo

from django.utils import timezone

from . import archive, backing_up, engine, notify, replication, signals, state
from .archive import BackupFile
from .conf import Config
from .exceptions import RAISED, ReplicationFailed, RestoreFailed
from .replication_conf import ReplicationConfig

logger = logging.getLogger("django_studio_backups")

KIND = "point-in-time"
LATEST = "latest"


class BadMoment(RestoreFailed):
    """A moment that cannot be restored (unreadable, in the future, before the replica's
    oldest); nothing was done."""


def parse_moment(text: str, zone: tzinfo) -> datetime | None:
    """ISO 8601 ``text`` as an aware time (a naive one is in ``zone``, the studio's); None
    for "latest"."""
    if text.strip().lower() == LATEST:
        return None
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise BadMoment(
            f"{text!r} is not a time: give it in ISO 8601 (2026-12-01T17:55, or "
            "2026-12-01T17:55:00-07:00), or 'latest'"
        ) from None
    if timezone.is_naive(moment):
        moment = moment.replace(tzinfo=zone)
    return moment


def check_moment(window: replication.Window | None, moment: datetime | None, zone: tzinfo) -> None:
    """Raise ``BadMoment`` unless the replica can restore ``moment`` (None: its newest)."""
    if window is None:
        raise BadMoment("The replica holds nothing yet: is `manage.py replicate` running?")
    if moment is None:
        return
    if moment > timezone.now():
        raise BadMoment(f"{archive.display(moment, zone)} has not happened yet")
    if moment < window.start:
        raise BadMoment(
            f"{archive.display(moment, zone)} is before the oldest moment the replica can "
            f"restore, {archive.display(window.start, zone)}"
        )


def fetch_backup(
    config: Config, settings: ReplicationConfig, moment: datetime | None
) -> BackupFile:
    """The database at ``moment`` (None: the replica's newest), published as a backup."""
    try:
        found = replication.window(config, settings)
    except ReplicationFailed as exc:
        raise _reported(config, RestoreFailed(f"Could not read the replica: {exc}")) from exc
    check_moment(found, moment, config.time_zone)
    assert found is not None  # (check_moment refuses an empty replica)
    # The data is as it was at the replica's last change before the moment: labelled with
    # the moment, a replica that stopped yesterday passed for the data of today.
    at = (found.end if moment is None else min(moment, found.end)).astimezone(config.time_zone)
    try:
        with backing_up.exclusive(config, RestoreFailed):
            temporary = archive.temporary_path(config.directory)
            try:
                replication.fetch(config, settings, moment, temporary)
                manifest = backing_up.checked_manifest(
                    config, temporary, KIND, timezone.now().astimezone(config.time_zone), False
                )
                manifest["created_at"] = state.isoformat(at)
                manifest["replica"] = {
                    "url": settings.url,
                    "moment": state.isoformat(moment) if moment is not None else LATEST,
                }
                path = archive.publish(temporary, config.directory, archive.stamp(at), manifest)
            finally:
                temporary.unlink(missing_ok=True)
            backing_up.prune(config, protected={path}, kinds={KIND})
    except (ReplicationFailed, engine.EngineError, sqlite3.Error, OSError) as exc:
        failure = RestoreFailed(f"Could not fetch the database as it was at {_when(at)}: {exc}")
        raise _reported(config, failure) from exc
    except RestoreFailed as exc:
        _reported(config, exc)
        raise
    backup = archive.backup_file(path, config.time_zone)
    logger.info("Fetched %s from the replica as %s", _when(at), backup.name)
    return backup


def _when(at: datetime) -> str:
    return at.isoformat(timespec="seconds")


def _reported(config: Config, exc: RestoreFailed) -> RestoreFailed:
    logger.error("Restore into %s failed: %s", config.database_path, exc, extra=RAISED)
    signals.send(signals.backup_failed, kind="restore", reason=str(exc), using=config.alias)
    notify.failure("restore", str(exc), database=config.database_path)
    return exc
