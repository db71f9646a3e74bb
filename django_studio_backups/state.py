"""The state file (``settings.json`` beside the database) that records ``last_backup_at``.

The file may belong to the application too: every write keeps the keys it did not set,
and a file that cannot be parsed is left exactly as it is.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from . import archive, locking

logger = logging.getLogger("django_studio_backups")

LAST_BACKUP_AT = "last_backup_at"
LAST_FAILURE_AT = "last_backup_failed_at"
LAST_FAILURE_REASON = "last_backup_error"
LAST_FAILURE_PROBLEM = "last_backup_problem"
OFFSITE_UPLOADED_AT = "offsite_uploaded_at"
OFFSITE_FAILED_AT = "offsite_failed_at"
OFFSITE_ERROR = "offsite_error"
OFFSITE_PROBLEM = "offsite_problem"
# What the admin shows of the off-site copies, without asking the storage: the copies found
# by the last upload or sync, and the backups whose copy is under way or failed.
OFFSITE_COPIES = "offsite_copies"
OFFSITE_PENDING = "offsite_pending"
OFFSITE_FAILED_COPIES = "offsite_failed_copies"
# Set when a fresh copy of the live database failed SQLite's check: the database itself is
# damaged. Cleared by a later copy that passes integrity_check, or by a checked restore.
LIVE_DAMAGED_AT = "live_database_damaged_at"
LIVE_DAMAGED_REASON = "live_database_damage"
# What the running `replicate` last learnt from Litestream (replication_record).
REPLICATION_SEEN = "replication_seen"
LOCK_TIMEOUT = 10.0


class UnreadableState(Exception):
    pass


@dataclass(frozen=True)
class Failure:
    at: datetime
    reason: str
    # The kind of trouble (exceptions.FOLDER, SPACE, ...), for the people who must act on it.
    problem: str = "other"


@dataclass(frozen=True)
class Record:
    """Where the state file keeps the last failure of one kind of work."""

    failed_at: str
    reason: str
    problem: str

    @property
    def keys(self) -> tuple[str, str, str]:
        return (self.failed_at, self.reason, self.problem)


BACKUP = Record(LAST_FAILURE_AT, LAST_FAILURE_REASON, LAST_FAILURE_PROBLEM)
OFFSITE = Record(OFFSITE_FAILED_AT, OFFSITE_ERROR, OFFSITE_PROBLEM)


def record_failure(
    path: Path, record: Record, reason: str, at: datetime, problem: str = "other"
) -> None:
    update(
        path, **{record.failed_at: isoformat(at), record.reason: reason, record.problem: problem}
    )


def last_failure(
    path: Path, record: Record, succeeded_at: Callable[[], datetime | None]
) -> Failure | None:
    """The failure recorded under ``record``, unless work succeeded after it (times are kept
    to the second: a success in the same second does not hide the failure).
    ``succeeded_at`` is asked only when a failure is recorded."""
    failed_at = read_datetime(path, record.failed_at)
    if failed_at is None:
        return None
    succeeded = succeeded_at()
    if succeeded is not None and succeeded > failed_at:
        return None
    try:
        data = read(path)
    except UnreadableState:  # pragma: no cover - read_datetime above just parsed it
        data = {}
    return Failure(
        at=failed_at,
        reason=str(data.get(record.reason, "")),
        problem=str(data.get(record.problem, "other")),
    )


def read(path: Path) -> dict[str, Any]:
    """The state file's contents; ``{}`` when it is missing. Raises ``UnreadableState``."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise UnreadableState(f"cannot read {path}: {exc}") from exc
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise UnreadableState(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise UnreadableState(f"{path} does not hold a JSON object")
    return data


def read_datetime(path: Path, key: str) -> datetime | None:
    """An aware datetime stored under ``key``; None (with a warning) if absent or bad."""
    try:
        value = read(path).get(key)
    except UnreadableState as exc:
        logger.warning("Ignoring the state file: %s", exc)
        return None
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        logger.warning("Ignoring %s in %s: %r is not an ISO 8601 time", key, path, value)
        return None
    if moment.tzinfo is None:
        logger.warning("Ignoring %s in %s: %r has no UTC offset", key, path, value)
        return None
    if not archive.EARLIEST <= moment <= archive.LATEST:
        logger.warning("Ignoring %s in %s: %r is not a plausible time", key, path, value)
        return None
    return moment


def update(path: Path, *, remove: Collection[str] = (), **changes: Any) -> bool:
    """Set ``changes`` (and drop ``remove``) in the state file, keeping every other key.

    False if it could not.
    """

    def change_keys(data: dict[str, Any]) -> None:
        for key in remove:
            data.pop(key, None)
        data.update(changes)

    return change(path, change_keys)


def change(path: Path, changer: Callable[[dict[str, Any]], None]) -> bool:
    """Let ``changer`` change the state file's contents in place, with no other write
    between its read and its write; False if it could not."""
    try:
        # The lock is on the folder: the file itself is replaced by rename on every write.
        with locking.exclusive(path.parent, LOCK_TIMEOUT):
            data = read(path)
            changer(data)
            try:
                mode = path.stat().st_mode & 0o777
            except FileNotFoundError:
                mode = 0o600
            archive.replace_json(path, data, mode=mode)
    except UnreadableState as exc:
        logger.error("Not updating the state file, to keep what it holds: %s", exc)
        return False
    except (OSError, locking.LockTimeout) as exc:
        logger.error("Could not update the state file %s: %s", path, exc)
        return False
    return True


def isoformat(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")
