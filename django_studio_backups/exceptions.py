from __future__ import annotations

import errno
import sqlite3

# What kind of trouble a failure is: the admin tells people what happened and what to do
# from this, and keeps the message, meant for whoever runs the server, as the detail.
FOLDER = "folder"  # the backup folder cannot be written (permissions, a read-only disk)
SPACE = "space"  # the disk is full
BUSY = "busy"  # the database or the backup folder stayed locked
DAMAGED = "damaged"  # SQLite found damage, or a file is not what its checksum says
SETTINGS = "settings"  # the settings stop it
OFFSITE = "offsite"  # the off-site storage could not be used
OTHER = "other"

# The ``extra`` of a log record about a failure that is also raised: a management command
# prints the exception itself, and leaves such a record out of its own output.
RAISED = {"studio_backups_raised": True}

_NO_ROOM = {errno.ENOSPC, errno.EDQUOT}
# (ENOTDIR, EISDIR: a file stands where the folder should be, or the reverse.)
_NOT_WRITABLE = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EISDIR}


class BackupError(Exception):
    """An expected failure of a backup, restore or check; the message says why.

    ``problem`` is one of the kinds above: the one given, or found in the chain of causes
    (an error there may carry a ``problem`` of its own, as the engine's checks do).
    """

    def __init__(self, message: str, *, problem: str | None = None) -> None:
        super().__init__(message)
        self._problem = problem

    @property
    def problem(self) -> str:
        return self._problem or problem_of(self.__cause__ or self.__context__)


class BackupFailed(BackupError):
    pass


class RestoreFailed(BackupError):
    """A restore that did not happen, or did not stand.

    ``database_changed`` is False when the live database holds the data it held before the
    restore (the message says where anything written meanwhile went).
    """

    def __init__(
        self, message: str, *, database_changed: bool = False, problem: str | None = None
    ) -> None:
        super().__init__(message, problem=problem)
        self.database_changed = database_changed


class BackupNotFound(BackupError):
    """A name that is not a listed backup (raised when restoring, verifying or deleting)."""


class DeleteFailed(BackupError):
    pass


class ReplicationFailed(BackupError):
    """Litestream could not run, list or fetch the replica; backups are untouched."""


class OffsiteFailed(BackupError):
    """An off-site copy that could not be made, listed or fetched; local backups are intact."""


def problem_of(error: BaseException | None) -> str:
    """The kind of trouble behind ``error``, from it and its causes: what the system said
    (a full disk, a lock held) at the bottom of the chain wins over what a wrapper says
    (a check that failed because the database was busy is no sign of damage)."""
    seen: set[int] = set()
    given: str | None = None
    found: str | None = None
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        found = _told_by_the_system(error) or found
        value = getattr(error, "problem", None)  # any exception may carry one
        if given is None and isinstance(value, str):
            given = value
        error = error.__cause__ or error.__context__
    return found or given or OTHER


def _told_by_the_system(error: BaseException) -> str | None:
    if isinstance(error, OSError) and error.errno in _NO_ROOM:
        return SPACE
    if isinstance(error, OSError) and error.errno in _NOT_WRITABLE:
        return FOLDER
    if isinstance(error, sqlite3.DatabaseError):
        text = str(error)
        if "locked" in text or "busy" in text:
            return BUSY
        if "full" in text:
            return SPACE
        if "malformed" in text or "not a database" in text:
            return DAMAGED
    return None
