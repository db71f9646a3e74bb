"""Signals sent by the service, for projects that want to react (mail on failure, ...).

- ``backup_created(sender, backup: BackupFile, using: str)``
- ``backup_failed(sender, kind: str, reason: str, using: str)``
- ``backup_restored(sender, backup: BackupFile, safety_backup: BackupFile | None, using: str)``
- ``backup_growth(sender, backup: BackupFile, median: float, growth: float, using: str)``: the
  new backup is more than ``STUDIO_BACKUPS["GROWTH_WARNING"]`` (``growth``, 0.5 = 50%) larger
  than the median size in bytes of the seven backups before it.

``sender`` is ``django_studio_backups.archive.BackupFile``. A receiver that raises is logged
(logger ``django_studio_backups``) and does not change the outcome of the backup or restore.
"""

from __future__ import annotations

import logging
from typing import Any

from django.dispatch import Signal

from .archive import BackupFile

logger = logging.getLogger("django_studio_backups")

backup_created = Signal()
backup_failed = Signal()
backup_restored = Signal()
backup_growth = Signal()


def send(signal: Signal, **kwargs: Any) -> None:
    # A project's receiver that fails (a mail server that is down) must neither hide the
    # outcome of a backup nor turn a success into an error.
    for receiver, result in signal.send_robust(sender=BackupFile, **kwargs):
        if isinstance(result, Exception):
            logger.error(
                "A receiver of a django_studio_backups signal failed: %r",
                receiver,
                exc_info=result,
            )
