from __future__ import annotations


class BackupError(Exception):
    """An expected failure of a backup, restore or check; the message says why."""


class BackupFailed(BackupError):
    pass


class RestoreFailed(BackupError):
    """A restore that did not happen, or did not stand.

    ``database_changed`` is False when the live database holds the data it held before the
    restore (the message says where anything written meanwhile went).
    """

    def __init__(self, message: str, *, database_changed: bool = False) -> None:
        super().__init__(message)
        self.database_changed = database_changed


class BackupNotFound(BackupError):
    """A name that is not a listed backup (raised when restoring, verifying or deleting)."""


class DeleteFailed(BackupError):
    pass


class OffsiteFailed(BackupError):
    """An off-site copy that could not be made, listed or fetched; local backups are intact."""
