"""Off-site copies of the backups, in any Django storage (``STUDIO_BACKUPS["OFFSITE"]``).

A copy of ``backup_20260304_153045.db`` is two objects at the root of the storage:

- ``backup_20260304_153045.db.zst.age``: the database, compressed then encrypted (``codec``);
- ``backup_20260304_153045.db.json``: its manifest, which carries the SHA-256 of the plain
  database and the local manifest.

The manifest is written only once the data object is complete, and deleted before it: **a copy
exists exactly when its manifest does**. Storages differ in what others see during an upload
(S3 shows an object only once it is complete; a folder or an SFTP server shows a growing
file), and this rule is what keeps an interrupted upload out of every listing. A data object
without a manifest is a leftover, which the next upload of that backup or ``sync`` deletes.

Off-site work on one backup folder is serialised by a lock beside the backup lock, so a long
upload never holds up local backups. One project writes to a storage: two would take each
other's uploads in progress for leftovers.
"""

from __future__ import annotations

import contextlib
import copy as copying
import io
import json
import logging
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO, cast

from django.core.exceptions import ImproperlyConfigured
from django.core.files import File
from django.core.files.base import ContentFile
from django.core.files.storage import Storage, storages
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
from .conf import Config, OffsiteConfig, get_config, get_offsite_config
from .exceptions import OFFSITE as OFFSITE_PROBLEM
from .exceptions import RAISED, OffsiteFailed

logger = logging.getLogger("django_studio_backups")

LOCK_NAME = ".offsite-lock"
MANIFEST_SUFFIX = ".json"
FORMAT = 1
UPLOADED_AT = state.OFFSITE_UPLOADED_AT
# A data object: a backup's name followed by the codec's suffixes.
DATA_NAME = re.compile(f"^{archive.NAME}{codec.SUFFIXES}$")
# Parts of a multipart S3 upload held in memory at once (see _limit_upload_buffers).
UPLOAD_BUFFERS = 2
MANIFEST_NAME = re.compile(f"^{archive.NAME}{re.escape(MANIFEST_SUFFIX)}$")


@dataclass(frozen=True)
class OffsiteCopy:
    name: str
    manifest: dict[str, Any] = field(compare=False, repr=False)

    @property
    def object_name(self) -> str:
        return str(self.manifest["object"]["name"])

    @property
    def size(self) -> int:
        """Bytes stored off-site."""
        return int(self.manifest["object"]["size"])

    @property
    def compression(self) -> str | None:
        value = self.manifest["object"]["compression"]
        return str(value) if value is not None else None

    @property
    def encrypted(self) -> bool:
        return bool(self.manifest["object"]["encryption"] == "age")

    @property
    def sha256(self) -> str:
        """The SHA-256 of the plain database."""
        return str(self.manifest["sha256"])

    @property
    def database_size(self) -> int:
        return int(self.manifest["size"])

    @property
    def created_at(self) -> datetime:
        """From the manifest, else from the name (as ``BackupFile.created_at``, in UTC)."""
        return archive.BackupFile(
            Path(self.name), 0, archive.EARLIEST, {"created_at": self.manifest.get("created_at")}
        ).created_at

    @property
    def kind(self) -> str:
        return str(self.manifest.get("kind", "unknown"))

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "object": self.object_name,
            "created_at": self.created_at,
            "display": archive.display(self.created_at, self.created_at.tzinfo),
            "size": self.size,
            "database_size": self.database_size,
            "compression": self.compression,
            "encrypted": self.encrypted,
            "kind": self.kind,
            "sha256": self.sha256,
        }


@dataclass(frozen=True)
class SyncReport:
    uploaded: list[OffsiteCopy]
    failed: dict[str, str]
    # Copies past MAX_BACKUPS and leftovers of interrupted uploads.
    deleted: list[str]


def copies(*, using: str | None = None) -> list[OffsiteCopy]:
    """The complete off-site copies, newest first."""
    __, offsite = _settings(using)
    with _opened(offsite) as storage:
        return _sorted(_complete(storage, _listing(storage)).values())


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
        with _lock(config), _opened(offsite) as storage:
            files = _listing(storage)
            # While this waited for the lock, a sync may have copied the backup (uploading it
            # again would first delete that good copy), or retention deleted it.
            present = _complete(storage, files).get(backup.name)
            if present is not None and present.sha256 == backup.sha256:
                offsite_record.note(config, done=[backup.name])
                return True
            if not backup.path.exists():
                logger.info("Not copying %s off-site: it was deleted meanwhile", backup.name)
                return True
            copy = _upload(config, offsite, storage, backup, files)
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
        with _lock(config), _opened(offsite) as storage:
            files = _listing(storage)
            present = _complete(storage, files)
            local = {
                b.name: b for b in archive.list_backup_files(config.directory, config.time_zone)
            }
            # What is missing is what off-site retention would keep of the local backups
            # and the copies together, and is local only.
            missing = sorted(
                set(_wanted(config, offsite, local.values(), present.values())) - set(present),
                key=archive.name_order,
            )
            # A copy found is neither on its way nor failed, whatever was recorded.
            offsite_record.note(config, pending=missing, done=list(present))
            for name in missing:
                try:
                    copy = _upload(config, offsite, storage, local[name], files)
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
    with _opened(offsite) as storage:
        return _download(config, offsite, storage, name, identity)


def _download(
    config: Config,
    offsite: OffsiteConfig,
    storage: Storage,
    name: str,
    identity: Path | str | None,
) -> BackupFile:
    copy = _complete(storage, _listing(storage)).get(name)
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
        path = _fetch(config, storage, copy, identities)
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


@contextlib.contextmanager
def _opened(offsite: OffsiteConfig) -> Iterator[Storage]:
    # A storage of its own for each run, closed after it, instead of the shared instance in
    # django.core.files.storage.storages: SFTPStorage keeps its connection, and once a
    # reconnection has failed (the server was down) that instance fails for good, with
    # "'NoneType' object has no attribute 'is_active'", until the process restarts.
    try:
        params = cast(dict[str, Any], storages.backends[offsite.storage])
        storage = storages.create_storage(params)
    except Exception as exc:  # a backend's __init__ may raise anything (missing package, ...)
        raise OffsiteFailed(f"Cannot open the storage {offsite.storage!r}: {exc}") from exc
    _limit_upload_buffers(storage)
    try:
        yield storage
    finally:
        close = getattr(storage, "close", None)
        if close is not None:
            with contextlib.suppress(Exception):
                close()


def _limit_upload_buffers(storage: Storage) -> None:
    config = getattr(storage, "transfer_config", None)
    if config is not None and hasattr(config, "max_in_memory_upload_chunks"):
        # S3Storage uploads a stream of unknown size through s3transfer, which keeps up to
        # max_in_memory_upload_chunks (10) parts of 8 MB in memory, so an upload's memory
        # grew with its size (see bench/RESULTS.md). Two parts in flight bound it. This
        # changes a copy, on this run's own instance.
        config = copying.copy(config)
        config.max_in_memory_upload_chunks = UPLOAD_BUFFERS
        storage.transfer_config = config  # type: ignore[attr-defined]


def _lock(config: Config, name: str = LOCK_NAME) -> contextlib.AbstractContextManager[None]:
    return archive.locked(config.directory, name, config.lock_timeout, OffsiteFailed)


@contextlib.contextmanager
def _remote(what: str) -> Iterator[None]:
    # Storage backends raise whatever their transport raises (OSError, botocore's
    # ClientError, paramiko's SSHException, EOFError...): at this boundary all of them mean
    # the remote side failed, and become one error that says what was being done.
    try:
        yield
    except (OffsiteFailed, codec.CodecError):
        raise
    except Exception as exc:
        raise OffsiteFailed(f"{what} failed: {type(exc).__name__}: {exc}") from exc


def _listing(storage: Storage) -> set[str]:
    with _remote("Listing the off-site storage"):
        try:
            return set(storage.listdir("")[1])
        except FileNotFoundError:
            return set()  # nothing was uploaded yet: the folder comes with the first copy


def _complete(storage: Storage, files: set[str]) -> dict[str, OffsiteCopy]:
    found = {}
    for file_name in files:
        match = MANIFEST_NAME.match(file_name)
        if match is None:
            continue
        manifest = _read_manifest(storage, file_name)
        if manifest is None or manifest.get("object", {}).get("name") not in files:
            continue
        found[match.group(1)] = OffsiteCopy(match.group(1), manifest)
    return found


def _read_manifest(storage: Storage, file_name: str) -> dict[str, Any] | None:
    with _remote(f"Reading {file_name}"), storage.open(file_name, "rb") as f:
        data = f.read()
    try:
        manifest = json.loads(data)
        if manifest["format"] == FORMAT and isinstance(manifest["object"]["name"], str):
            return cast(dict[str, Any], manifest)
    except (ValueError, KeyError, TypeError):
        pass
    # An interrupted write of the manifest itself: the copy is incomplete.
    logger.warning("Ignoring the off-site manifest %s: it is not complete", file_name)
    return None


def _sorted(found: Iterable[OffsiteCopy]) -> list[OffsiteCopy]:
    return sorted(found, key=lambda c: archive.name_order(c.name), reverse=True)


def _upload(
    config: Config,
    offsite: OffsiteConfig,
    storage: Storage,
    backup: BackupFile,
    files: set[str],
) -> OffsiteCopy:
    object_name = backup.name + codec.suffix(offsite.compression, bool(offsite.recipients))
    manifest_name = backup.name + MANIFEST_SUFFIX
    recipients = [codec.parse_recipient(r) for r in offsite.recipients]
    # Storages that keep existing names (FileSystemStorage) would save under a new one.
    _delete(storage, [manifest_name, *_leftovers_of(backup.name, files)])
    try:
        with open(backup.path, "rb") as source:
            stream = codec.EncodedStream(source, offsite.compression, recipients)
            try:
                with _remote(f"Uploading {object_name} to {offsite.storage!r}"):
                    # Buffered, read(n) returns n bytes until the end: s3transfer takes a
                    # short first read for a small file, and then reads all the rest into
                    # memory for one PUT instead of a multipart upload.
                    content = File(io.BufferedReader(stream, codec.CHUNK), name=object_name)
                    saved = storage.save(object_name, content)
            finally:
                stream.close()
        _check_saved(storage, saved, object_name)
        if backup.sha256 is not None and stream.plain.digest.sha256 != backup.sha256:
            problem = f"{backup.name} does not match the SHA-256 in its manifest"
            # Known from now on: listed as damaged, and never offered for upload again.
            archive.record_check(
                backup,
                ok=False,
                check="sha256",
                at=state.isoformat(timezone.now().astimezone(config.time_zone)),
                problems=[problem],
            )
            raise OffsiteFailed(f"{problem}; not copying it")
        uploaded_at = state.isoformat(timezone.now().astimezone(config.time_zone))
        manifest = {
            "format": FORMAT,
            "name": backup.name,
            "sha256": stream.plain.digest.sha256,
            "size": stream.plain.digest.size,
            "created_at": backup.manifest.get(
                "created_at", state.isoformat(backup.modified_at.astimezone(config.time_zone))
            ),
            "kind": backup.kind,
            "uploaded_at": uploaded_at,
            "object": {
                "name": object_name,
                "size": stream.encoded.size,
                "sha256": stream.encoded.sha256,
                "compression": offsite.compression,
                "encryption": "age" if recipients else None,
                "recipients": list(offsite.recipients),
            },
            "manifest": backup.manifest,
        }
        data = json.dumps(manifest, indent=2, sort_keys=True, default=str).encode()
        with _remote(f"Uploading {manifest_name} to {offsite.storage!r}"):
            saved = storage.save(manifest_name, ContentFile(data, name=manifest_name))
        _check_saved(storage, saved, manifest_name)
    except BaseException as exc:
        # Nothing half-made stays behind; if the storage is unreachable, the leftover has no
        # manifest, is never listed, and the next upload or sync deletes it.
        with contextlib.suppress(Exception):
            _delete(storage, [object_name])
        if isinstance(exc, OSError):
            raise OffsiteFailed(f"Cannot read {backup.path}: {exc}") from exc
        raise
    # A success ends the failure, as it does for backups (times are kept to the second).
    state.update(config.state_file, remove=state.OFFSITE.keys, **{UPLOADED_AT: uploaded_at})
    offsite_record.note(config, done=[backup.name], added=[backup.name])
    files.update({object_name, manifest_name})
    logger.info(
        "Copied %s to %r as %s (%d bytes)",
        backup.name,
        offsite.storage,
        object_name,
        stream.encoded.size,
    )
    return OffsiteCopy(backup.name, manifest)


@dataclass(frozen=True)
class _Candidate:
    """A local backup or an off-site copy, as off-site retention weighs it."""

    name: str
    kind: str
    created_at: datetime
    good: bool


CANDIDATE_TRAITS: retention.Traits[_Candidate] = retention.Traits(
    key=lambda c: c.name,
    kind=lambda c: c.kind,
    time=lambda c: c.created_at,
    good=lambda c: c.good,
)


def _wanted(
    config: Config,
    offsite: OffsiteConfig,
    local: Iterable[BackupFile],
    present: Iterable[OffsiteCopy],
) -> list[str]:
    """The names that off-site retention keeps among the local backups and the copies. A
    local backup known to be damaged (reported when it was found) is never wanted, nor one
    that retention does not count (one without a manifest, a copy of a damaged database).
    One changed since its last check is: its upload compares it with its SHA-256."""
    candidates = {
        b.name: _Candidate(b.name, b.kind, b.created_at, bool(b.manifest) and not b.failed_check)
        for b in local
    }
    candidates.update({c.name: _Candidate(c.name, c.kind, c.created_at, True) for c in present})
    pools = retention.REGULAR | {retention.SAFETY, retention.PRE_MIGRATE}
    counted = [c for c in candidates.values() if c.good and c.kind in pools]
    doomed = {
        c.name
        for c in retention.expired(counted, offsite.policy, CANDIDATE_TRAITS, config.time_zone)
    }
    return [c.name for c in counted if c.name not in doomed]


# How retention reads an off-site copy: only complete copies are listed, and each is good.
COPY_TRAITS: retention.Traits[OffsiteCopy] = retention.Traits(
    key=lambda c: c.name,
    kind=lambda c: c.kind,
    time=lambda c: c.created_at,
    good=lambda c: True,
)


def _check_saved(storage: Storage, saved: str, wanted: str) -> None:
    if saved != wanted:
        _delete(storage, [saved])
        raise OffsiteFailed(
            f"The storage saved {wanted} as {saved}; configure it to overwrite existing names"
        )


def _leftovers_of(name: str, files: Iterable[str]) -> list[str]:
    return [f for f in files if (m := DATA_NAME.match(f)) is not None and m.group(1) == name]


def _prune(config: Config, offsite: OffsiteConfig, storage: Storage, keep: set[str]) -> list[str]:
    """Delete copies past MAX_BACKUPS (``keep`` stays and counts) and upload leftovers, and
    record the copies that remain."""
    files = _listing(storage)
    present = _sorted(_complete(storage, files).values())
    deleted = []
    doomed = retention.expired(
        present, offsite.policy, COPY_TRAITS, config.time_zone, protected=keep
    )
    for copy in doomed:
        # The manifest goes first: a copy half-deleted is a leftover, never a listed copy.
        _delete(storage, [copy.name + MANIFEST_SUFFIX, copy.object_name])
        deleted.append(copy.name)
        logger.info("Deleted the old off-site copy %s", copy.object_name)
    complete = {c.name for c in present}
    leftovers = [
        f
        for f in files
        if (m := DATA_NAME.match(f) or MANIFEST_NAME.match(f)) is not None
        and m.group(1) not in complete
    ]
    if leftovers:
        _delete(storage, leftovers)
        logger.info("Deleted leftovers of interrupted off-site uploads: %s", ", ".join(leftovers))
    offsite_record.note(config, copies=complete - set(deleted))
    return deleted + sorted(leftovers)


def _delete(storage: Storage, names: Iterable[str]) -> None:
    for name in names:
        with _remote(f"Deleting {name}"):
            storage.delete(name)


def _open_object(storage: Storage, name: str) -> BinaryIO:
    bucket = getattr(storage, "bucket", None)
    if bucket is not None and hasattr(storage, "_normalize_name"):
        # S3Storage.open() downloads the whole object into a SpooledTemporaryFile that, with
        # the default AWS_S3_MAX_MEMORY_SIZE of 0, never spills to disk: a 1 GB copy would sit
        # in memory. The object's body reads as a stream instead.
        from storages.utils import clean_name

        key = storage._normalize_name(clean_name(name))
        return cast(BinaryIO, bucket.Object(key).get()["Body"])
    return cast(BinaryIO, storage.open(name, "rb"))


def _fetch(config: Config, storage: Storage, copy: OffsiteCopy, identities: list[Any]) -> Path:
    temporary = archive.temporary_path(config.directory)
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, archive.PRIVATE_FILE)
        with os.fdopen(fd, "wb") as sink:
            writer = codec.HashingWriter(sink)
            with _remote(f"Downloading {copy.object_name}"):
                source = _open_object(storage, copy.object_name)
                try:
                    codec.decode(source, writer, copy.compression, identities)
                finally:
                    source.close()
            sink.flush()
            os.fsync(sink.fileno())
        if (writer.digest.size, writer.digest.sha256) != (copy.database_size, copy.sha256):
            raise OffsiteFailed(
                f"The off-site copy of {copy.name} does not match its manifest "
                f"({writer.digest.size} bytes, SHA-256 {writer.digest.sha256}); it was damaged "
                "or changed after it was uploaded"
            )
        manifest = {
            **copy.manifest["manifest"],
            "downloaded": {"object": copy.object_name, "at": state.isoformat(timezone.now())},
        }
        verification = manifest.get("verification")
        if isinstance(verification, dict):
            # The SHA-256 just matched: the file is the one that passed its check, in a new file.
            manifest["verification"] = {
                **verification,
                "mtime_ns": temporary.stat().st_mtime_ns,
            }
        return archive.publish(
            temporary, config.directory, archive.name_order(copy.name)[0], manifest
        )
    except codec.CodecError as exc:
        raise OffsiteFailed(f"Cannot decode the off-site copy of {copy.name}: {exc}") from exc
    except OSError as exc:  # pragma: no cover - creating, syncing or linking the new file
        raise OffsiteFailed(f"Cannot write {temporary}: {exc}") from exc
    finally:
        temporary.unlink(missing_ok=True)
        archive.manifest_path_for(temporary).unlink(missing_ok=True)


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
    return [n for n in _wanted(config, offsite, local, ()) if n not in copied]
