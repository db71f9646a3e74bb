"""Which backups to keep: the newest ``MAX_BACKUPS``, and never one that is in use."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from pathlib import Path

from .archive import BackupFile


def expired(
    backups: Sequence[BackupFile], keep: int, protected: Collection[Path] = ()
) -> list[BackupFile]:
    """The backups to delete from ``backups`` (newest first) so that ``keep`` remain.

    Protected files (the backup just made, the one being restored) always stay and count
    towards ``keep``.
    """
    protected_paths = set(protected)
    survivors = [b for b in backups if b.path in protected_paths]
    doomed = []
    for backup in backups:
        if backup.path in protected_paths:
            continue
        if len(survivors) < keep:
            survivors.append(backup)
        else:
            doomed.append(backup)
    return doomed
