"""Signals sent by the service, for projects that want to react (mail on failure, ...).

- ``backup_created(sender, backup: BackupFile, using: str)``
- ``backup_failed(sender, kind: str, reason: str, using: str)``
- ``backup_restored(sender, backup: BackupFile, safety_backup: BackupFile | None, using: str)``

``sender`` is the ``django_studio_backups.services`` module.
"""

from __future__ import annotations

from django.dispatch import Signal

backup_created = Signal()
backup_failed = Signal()
backup_restored = Signal()
