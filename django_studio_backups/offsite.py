"""Off-site copies of the backups, in any Django storage (``STUDIO_BACKUPS["OFFSITE"]``).

What is done off-site and when: copying a new backup, ``sync``, ``download``, pruning the
copies that retention lets go (``offsite_retention`` says which), and the records of what
failed. ``offsite_storage`` lays the copies out in the storage and keeps the rule that **a
copy exists exactly when its manifest does**.

Off-site work on one backup folder is serialised by a lock beside the backup lock, so a long
upload never holds up local backups. One project writes to a storage: two would take each
other's uploads in progress for leftovers.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.files.storage import Storage
from django.utils import timezone

from . import (
    archive,
    background,
    codec,
    engine,
    locking,
    notify,
    offsite_record,
    retention,
    signals,
    state,
)
from .archive import BackupFile
from .conf import Config, get_config
from .exceptions import OFFSITE as OFFSITE_PROBLEM
from .exceptions import RAISED, OffsiteFailed
from .offsite_conf import OffsiteConfig, get_offsite_config
from .offsite_retention import COPY_TRAITS, wanted

# OffsiteCopy is part of this module's API: copies() and sync() return it.
from .offsite_storage import OffsiteCopy as OffsiteCopy
from .offsite_storage import (
    complete_copies,
    delete,
    delete_copy,
    fetch,
    leftovers_among,
    listing,
    newest_first,
    opened,
    upload,
)

logger = logging.getLogger("django_studio_backups")

LOCK_NAME = ".offsite-lock"
UPLOADED_AT = state.OFFSITE_UPLOADED_AT


@dataclass(frozen=True)
class SyncReport:
    uploaded: list[OffsiteCopy]
    failed: dict[str, str]
    # Copies past MAX_BACKUPS and leftovers of interrupted uploads.
    deleted: list[str]


def copies(*, using: str | None = None) -> list[OffsiteCopy]:
    """The complete off-site copies, newest first."""
    __, offsite = _settings(using)
    with opened(offsite) as storage:
        return newest_first(complete_copies(storage, listing(storage)).values())


def names(*, using: str | None = None) -> set[str]:
    """The names of the backups that have an off-site copy; empty without OFFSITE."""
    if get_offsite_config(using) is None:
        return set()
    return {copy.name for copy in copies(using=using)}


def copy_new_backup(backup: BackupFile, config: Config, *, in_background: bool = False) -> bool:
    """Upload a copy of a backup just made, then apply off-site retention; False if that
    failed (or cannot be known yet: ``in_background``), True if it was done or is not wanted.

    Never raises: the local backup stands whatever happens off-site. A failure is logged,
    recorded in the state file and notified; ``sync`` makes the copy later. In the background
    (the admin: a request never waits on the network) the backup shows as pending meanwhile.
    """
    try:
        offsite = get_offsite_config(config.alias)
    except ImproperlyConfigured as exc:
        _record_failure(config, f"No off-site copy of {backup.name}: {exc}", [backup.name])
        return False
    if offsite is None:
        return True
    offsite_record.note(config, pending=[backup.name])
    if in_background:
        background.start(
            f"copying {backup.name} off-site", _copy, config, offsite, backup, wait_at_exit=False
        )
        return False
    return _copy(config, offsite, backup)


def _copy(config: Config, offsite: OffsiteConfig, backup: BackupFile) -> bool:
    uploaded = False
    try:
        with _lock(config), opened(offsite) as storage:
            files = listing(storage)
            # While this waited for the lock, a sync may have copied the backup (uploading it
            # again would first delete that good copy), or retention deleted it.
            present = complete_copies(storage, files).get(backup.name)
            if present is not None and present.sha256 == backup.sha256:
                offsite_record.note(config, done=[backup.name])
                return True
            if not backup.path.exists():
                logger.info("Not copying %s off-site: it was deleted meanwhile", backup.name)
                return True
            copy = upload(config, offsite, storage, backup, files)
            _record_upload(config, offsite, copy)
            uploaded = True
            _prune(config, offsite, storage, keep={copy.name})
    except OffsiteFailed as exc:
        # (A failure after the upload, in retention, leaves the copy made.)
        _record_failure(config, str(exc), [] if uploaded else [backup.name])
        return False
    return True


def sync(*, using: str | None = None) -> SyncReport:
    """Upload the local backups that lack an off-site copy, then apply retention.

    Only backups that retention would keep are uploaded: the newest ``MAX_BACKUPS`` among
    the local backups and the copies. Every failure is recorded and notified, and raised
    (``OffsiteFailed``) unless it concerns single backups, which the report lists.
    """
    config, offsite = _settings(using)
    return _sync(config, offsite, raised=True)


def catch_up(config: Config, new: BackupFile | None = None) -> bool:
    """The daily job's off-site work: ``sync``, which also copies what an upload in the
    background could not finish. Never raises; False if anything failed (recorded).

    Without a ``new`` backup to copy, it does nothing, without the network, unless a copy is
    recorded as pending or failed, or nothing is known of the copies yet.
    """
    try:
        offsite = get_offsite_config(config.alias)
    except ImproperlyConfigured as exc:
        _record_failure(config, f"No off-site copies: {exc}")
        return False
    if offsite is None:
        return True
    if new is None:
        known = offsite_record.status(using=config.alias)
        if known.copied is not None and not known.pending and not known.failed:
            return True
    try:
        return not _sync(config, offsite, raised=False, new=new).failed
    except OffsiteFailed:
        return False


def _sync(
    config: Config, offsite: OffsiteConfig, *, raised: bool, new: BackupFile | None = None
) -> SyncReport:
    """``sync``; ``raised``: the caller reports the failures it raises or returns; ``new``:
    a backup just made, which is certainly not copied yet."""
    uploaded: list[OffsiteCopy] = []
    failed: dict[str, str] = {}
    missing: list[str] = []
    if new is not None:
        missing = [new.name]
        offsite_record.note(config, pending=missing)
    try:
        with _lock(config), opened(offsite) as storage:
            files = listing(storage)
            present = complete_copies(storage, files)
            local = {
                b.name: b for b in archive.list_backup_files(config.directory, config.time_zone)
            }
            # What is missing is what off-site retention would keep of the local backups
            # and the copies together, and is local only.
            missing = sorted(
                set(wanted(config, offsite, local.values(), present.values())) - set(present),
                key=archive.name_order,
            )
            # A copy found is neither on its way nor failed, whatever was recorded.
            offsite_record.note(config, pending=missing, done=list(present))
            for name in missing:
                try:
                    copy = upload(config, offsite, storage, local[name], files)
                    _record_upload(config, offsite, copy)
                except OffsiteFailed as exc:
                    if not local[name].path.exists():
                        logger.info("Not copying %s off-site: it was deleted meanwhile", name)
                        continue
                    failed[name] = str(exc)
                    offsite_record.note(config, failed={name: str(exc)})
                else:
                    uploaded.append(copy)
                    present[name] = copy
            # What was uploaded is what retention keeps: nothing needs protecting.
            deleted = _prune(config, offsite, storage, keep=set())
    except OffsiteFailed as exc:
        done = {*failed, *(c.name for c in uploaded)}
        # Before the storage was listed, what is missing is what was not known as copied.
        missing = missing or _not_copied(config, offsite)
        _record_failure(config, str(exc), [n for n in missing if n not in done], raised=raised)
        raise
    if failed:
        # One record, mail and ping that names every copy that failed.
        _record_failure(config, "\n".join(failed.values()), failed, raised=raised)
    return SyncReport(uploaded, failed, deleted)


def download(
    name: str, *, identity: Path | str | None = None, using: str | None = None
) -> BackupFile:
    """Fetch an off-site copy into the backup folder, checked against its manifest.

    A local backup with the same name and SHA-256 is used as it is. Otherwise the copy is
    decrypted with the identity file, decompressed, and published only if its SHA-256 matches
    the manifest; it gets the next free ``_N`` name if the original name is taken.
    """
    config, offsite = _settings(using)
    with opened(offsite) as storage:
        return _download(config, offsite, storage, name, identity)


def _download(
    config: Config,
    offsite: OffsiteConfig,
    storage: Storage,
    name: str,
    identity: Path | str | None,
) -> BackupFile:
    copy = complete_copies(storage, listing(storage)).get(name)
    if copy is None:
        raise OffsiteFailed(f"There is no off-site copy called {name!r} in {offsite.storage!r}")
    identities: list[Any] = []
    if copy.encrypted:
        if identity is None:
            raise OffsiteFailed(
                f"The off-site copy of {name} is encrypted; give the age identity file "
                "(the key made by age-keygen) to decrypt it"
            )
        try:
            identities = codec.read_identities(Path(identity))
        except codec.CodecError as exc:
            raise OffsiteFailed(str(exc)) from exc
    # The backup lock: temporary files in the folder belong to whoever holds it.
    with _lock(config, locking.LOCK_NAME):
        for backup in archive.list_backup_files(config.directory, config.time_zone):
            if backup.name == name and _hash_of(backup.path) == copy.sha256:
                logger.info("%s is already in %s; not downloading it", name, config.directory)
                return backup
        path = fetch(config, storage, copy, identities)
    return archive.backup_file(path)


def last_failure(*, using: str | None = None) -> state.Failure | None:
    """When and why the last off-site copy failed, if no copy was made since."""
    config = get_config(using)
    return state.last_failure(
        config.state_file,
        state.OFFSITE,
        lambda: state.read_datetime(config.state_file, UPLOADED_AT),
    )


# Internals -----------------------------------------------------------------------------


def _settings(using: str | None) -> tuple[Config, OffsiteConfig]:
    config = get_config(using)
    offsite = get_offsite_config(config.alias)
    if offsite is None:
        raise OffsiteFailed(
            f"Off-site copies are not configured for the database {config.alias!r}: "
            "set STUDIO_BACKUPS['OFFSITE']"
        )
    return config, offsite


def _lock(config: Config, name: str = LOCK_NAME) -> contextlib.AbstractContextManager[None]:
    return archive.locked(config.directory, name, config.lock_timeout, OffsiteFailed)


def _record_upload(config: Config, offsite: OffsiteConfig, copy: OffsiteCopy) -> None:
    # A success ends the failure, as it does for backups (times are kept to the second).
    state.update(
        config.state_file, remove=state.OFFSITE.keys, **{UPLOADED_AT: copy.manifest["uploaded_at"]}
    )
    offsite_record.note(config, done=[copy.name], added=[copy.name])
    logger.info(
        "Copied %s to %r as %s (%d bytes)",
        copy.name,
        offsite.storage,
        copy.object_name,
        copy.size,
    )


def _prune(config: Config, offsite: OffsiteConfig, storage: Storage, keep: set[str]) -> list[str]:
    """Delete copies past MAX_BACKUPS (``keep`` stays and counts) and upload leftovers, and
    record the copies that remain."""
    files = listing(storage)
    present = newest_first(complete_copies(storage, files).values())
    deleted = []
    doomed = retention.expired(
        present, offsite.policy, COPY_TRAITS, config.time_zone, protected=keep
    )
    for copy in doomed:
        delete_copy(storage, copy)
        deleted.append(copy.name)
        logger.info("Deleted the old off-site copy %s", copy.object_name)
    complete = {c.name for c in present}
    leftovers = leftovers_among(files, complete)
    if leftovers:
        delete(storage, leftovers)
        logger.info("Deleted leftovers of interrupted off-site uploads: %s", ", ".join(leftovers))
    offsite_record.note(config, copies=complete - set(deleted))
    return deleted + sorted(leftovers)


def _hash_of(path: Path) -> str | None:
    try:
        return engine.sha256_of(path)
    except OSError:  # pragma: no cover - the file was listed a moment ago
        return None


def _record_failure(
    config: Config, reason: str, names: Iterable[str] = (), *, raised: bool = False
) -> None:
    logger.error("%s", reason, extra=RAISED if raised else None)
    now = timezone.now().astimezone(config.time_zone)
    state.record_failure(config.state_file, state.OFFSITE, reason, now, OFFSITE_PROBLEM)
    offsite_record.note(config, failed=dict.fromkeys(names, reason))
    signals.send(signals.backup_failed, kind="offsite", reason=reason, using=config.alias)
    notify.failure("offsite", reason, database=config.database_path)


def _not_copied(config: Config, offsite: OffsiteConfig) -> list[str]:
    """The newest local backups that retention keeps off-site and no upload recorded."""
    copied = offsite_record.status(using=config.alias).copied
    if copied is None:
        return []  # nothing is known of the storage: no copy is known to be missing
    local = archive.list_backup_files(config.directory, config.time_zone)
    return [n for n in wanted(config, offsite, local, ()) if n not in copied]
