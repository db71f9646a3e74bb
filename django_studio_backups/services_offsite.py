"""The public API of off-site copies (see offsite.py); ``services`` re-exports it, and
faces import it from there. Each raises ``OffsiteFailed`` with the reason."""

from __future__ import annotations

from pathlib import Path

from . import engine, offsite, offsite_record, restoring, state
from .archive import BackupFile
from .conf import get_config
from .exceptions import BackupNotFound
from .offsite_conf import get_offsite_config


def restore_offsite(
    name: str,
    *,
    identity: Path | str | None = None,
    using: str | None = None,
    progress: engine.Progress | None = None,
) -> restoring.RestoreReport:
    """Fetch an off-site copy (``download_offsite``) and restore it like any other backup.

    Raises ``OffsiteFailed`` if the copy cannot be fetched, ``RestoreFailed`` as ``restore``.
    """
    backup = download_offsite(name, identity=identity, using=using)
    return restoring.restore(get_config(using), backup.name, progress)


def offsite_configured(*, using: str | None = None) -> bool:
    """Whether the backups of ``using`` get off-site copies (``ImproperlyConfigured`` names a
    mistake in ``OFFSITE``)."""
    return get_offsite_config(using) is not None


def offsite_copies(*, using: str | None = None) -> list[offsite.OffsiteCopy]:
    """The complete off-site copies, newest first."""
    return offsite.copies(using=using)


def offsite_names(*, using: str | None = None) -> set[str]:
    """The names of the backups that have an off-site copy; empty without ``OFFSITE``."""
    return offsite.names(using=using)


def offsite_status(*, using: str | None = None) -> offsite_record.Status:
    """What the last uploads and syncs recorded of each backup's copy, read from the state
    file without asking the storage: for pages that must not wait on the network."""
    return offsite_record.status(using=using)


def offsite_failure(*, using: str | None = None) -> state.Failure | None:
    """When and why the last off-site copy failed, if no copy was made since."""
    return offsite.last_failure(using=using)


def sync_offsite(*, using: str | None = None) -> offsite.SyncReport:
    """Upload the backups that lack an off-site copy, then apply off-site retention."""
    return offsite.sync(using=using)


def download_offsite(
    name: str, *, identity: Path | str | None = None, using: str | None = None
) -> BackupFile:
    """Fetch an off-site copy (decrypted with the ``identity`` file) into the backup folder,
    checked against its manifest, as a local backup."""
    return offsite.download(name, identity=identity, using=using)


def latest_offsite_copy(*, using: str | None = None) -> offsite.OffsiteCopy:
    """The newest off-site copy to restore, by the rule of ``latest_backup``;
    ``BackupNotFound`` when there is none."""
    for copy in offsite_copies(using=using):
        if copy.kind not in restoring.NOT_LATEST:
            return copy
    raise BackupNotFound("There is no off-site copy to restore yet.")
