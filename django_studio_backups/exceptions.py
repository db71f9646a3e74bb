from __future__ import annotations


class BackupError(Exception):
    """An expected failure of a backup, restore or check; the message says why."""


class BackupFailed(BackupError):
    pass


class RestoreFailed(BackupError):
    pass


class BackupNotFound(RestoreFailed):
    pass


class DeleteFailed(BackupError):
    pass


class OffsiteFailed(BackupError):
    """An off-site copy that could not be made, listed or fetched; local backups are intact."""
