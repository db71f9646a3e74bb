"""Which backups to keep: the newest ``MAX_BACKUPS``, and never one that is in use."""

from __future__ import annotations

from collections.abc import Callable, Collection, Hashable, Sequence
from typing import TypeVar

from .archive import BackupFile

Item = TypeVar("Item")


def _path(backup: BackupFile) -> Hashable:
    return backup.path


def expired(
    items: Sequence[Item],
    keep: int,
    protected: Collection[Hashable] = (),
    *,
    key: Callable[[Item], Hashable] = _path,  # type: ignore[assignment]
) -> list[Item]:
    """The items to delete from ``items`` (newest first) so that ``keep`` remain.

    Protected items (the backup just made, the one being restored; ``key`` names them,
    a backup's path by default) always stay and count towards ``keep``.
    """
    protected_keys = set(protected)
    survivors = sum(1 for item in items if key(item) in protected_keys)
    doomed = []
    for item in items:
        if key(item) in protected_keys:
            continue
        if survivors < keep:
            survivors += 1
        else:
            doomed.append(item)
    return doomed
