"""Unusual growth: a backup much larger than the backups made before it.

A studio's database grows slowly and steadily; a backup far larger than the usual ones
means something is piling up (logs, uploaded files stored in the database, a runaway job)
and deserves a look before the disk fills. The median, not the mean, of the previous
backups is the yardstick, so one odd backup among them does not move it.
"""

from __future__ import annotations

import logging
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.dispatch import receiver
from django.template.defaultfilters import filesizeformat
from django.utils.translation import gettext

from . import archive, signals
from .archive import BackupFile
from .conf import get_config

logger = logging.getLogger("django_studio_backups")

# How many earlier backups the newest one is compared with.
WINDOW = 7


@dataclass(frozen=True)
class Growth:
    backup: BackupFile
    median: float
    # 0.62 means 62% larger than the median.
    ratio: float


def growth(size: int, previous: Sequence[int]) -> tuple[float, float] | None:
    """(median of ``previous``, how much larger ``size`` is as a fraction of it).

    None until there are ``WINDOW`` previous sizes: the first backups of a new project grow
    fast as the studio enters its data, and that is not worth a warning.
    """
    if len(previous) < WINDOW:
        return None
    median = float(statistics.median(previous[:WINDOW]))
    # A backup is at least one SQLite page; max() only keeps a damaged 0-byte file in the
    # folder from dividing by zero.
    return median, size / max(median, 1.0) - 1.0


def unusual_growth(listed: Sequence[BackupFile], threshold: float) -> Growth | None:
    """The newest backup's growth, if it is more than ``threshold`` over the median.

    ``listed`` is newest first, as ``archive.list_backup_files`` returns it.
    """
    if not listed:
        return None
    newest = listed[0]
    found = growth(newest.size, [b.size for b in listed[1:]])
    if found is None or found[1] <= threshold:
        return None
    return Growth(newest, *found)


def describe(found: Growth) -> str:
    return gettext(
        "The newest backup, %(name)s (%(size)s), is %(percent)d%% larger than the median of "
        "the %(count)d backups before it (%(median)s)."
    ) % {
        "name": found.backup.name,
        "size": filesizeformat(found.backup.size),
        "percent": round(found.ratio * 100),
        "count": WINDOW,
        "median": filesizeformat(round(found.median)),
    }


HINT = (
    "If the studio did not add much data lately, ask whoever looks after the system to check "
    "what fills the database."
)


@receiver(signals.backup_created, dispatch_uid="django_studio_backups.growth")
def warn_on_growth(sender: object, *, backup: BackupFile, using: str, **kwargs: Any) -> None:
    config = get_config(using)
    found = unusual_growth(
        archive.list_backup_files(config.directory, config.time_zone), config.growth_warning
    )
    # The new backup is the newest while the service still holds the folder's lock; the
    # comparison keeps a warning about some other backup from being sent under its name.
    if found is None or found.backup.path != backup.path:
        return
    logger.warning("%s %s", describe(found), HINT)
    signals.send(
        signals.backup_growth, backup=backup, median=found.median, growth=found.ratio, using=using
    )
