"""Signals sent by the service, for projects that want to react (mail on failure, ...).

- ``backup_created(sender, backup: BackupFile, using: str)``
- ``backup_failed(sender, kind: str, reason: str, using: str)``
- ``backup_restored(sender, backup: BackupFile, safety_backup: BackupFile | None, using: str)``
- ``backup_growth(sender, backup: BackupFile, median: float, growth: float, using: str)``: the
  new backup is more than ``STUDIO_BACKUPS["GROWTH_WARNING"]`` (``growth``, 0.5 = 50%) larger
  than the median size in bytes of the seven backups before it.

``sender`` is the ``django_studio_backups.services`` module.
"""

from __future__ import annotations

from django.dispatch import Signal

backup_created = Signal()
backup_failed = Signal()
backup_restored = Signal()
backup_growth = Signal()
