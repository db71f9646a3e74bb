"""How an off-site copy lies in a Django storage, and the only code that reads or writes it:
opening the storage, listing, reading manifests, uploading and fetching one copy. Whatever a
storage backend raises becomes ``OffsiteFailed`` here, saying what was being done.

A copy of ``backup_20260304_153045.db`` is two objects at the root of the storage:

- ``backup_20260304_153045.db.zst.age``: the database, compressed then encrypted (``codec``);
- ``backup_20260304_153045.db.json``: its manifest, which carries the SHA-256 of the plain
  database and the local manifest.

The manifest is written only once the data object is complete, and deleted before it: **a copy
exists exactly when its manifest does**. Storages differ in what others see during an upload
(S3 shows an object only once it is complete; a folder or an SFTP server shows a growing
file), and this rule is what keeps an interrupted upload out of every listing. A data object
without a manifest is a leftover, which the next upload of that backup or ``offsite.sync``
deletes.
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

from django.core.files import File
from django.core.files.base import ContentFile
from django.core.files.storage import Storage, storages
from django.utils import timezone

from . import archive, codec, state
from .archive import BackupFile
from .conf import Config
from .exceptions import OffsiteFailed
from .offsite_conf import OffsiteConfig

logger = logging.getLogger("django_studio_backups")

MANIFEST_SUFFIX = ".json"
FORMAT = 1
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


@contextlib.contextmanager
def opened(offsite: OffsiteConfig) -> Iterator[Storage]:
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


def listing(storage: Storage) -> set[str]:
    with _remote("Listing the off-site storage"):
        try:
            return set(storage.listdir("")[1])
        except FileNotFoundError:
            return set()  # nothing was uploaded yet: the folder comes with the first copy


def complete_copies(storage: Storage, files: set[str]) -> dict[str, OffsiteCopy]:
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


def newest_first(found: Iterable[OffsiteCopy]) -> list[OffsiteCopy]:
    return sorted(found, key=lambda c: archive.name_order(c.name), reverse=True)


def upload(
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
    delete(storage, [manifest_name, *_leftovers_of(backup.name, files)])
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
            delete(storage, [object_name])
        if isinstance(exc, OSError):
            raise OffsiteFailed(f"Cannot read {backup.path}: {exc}") from exc
        raise
    files.update({object_name, manifest_name})
    return OffsiteCopy(backup.name, manifest)


def _check_saved(storage: Storage, saved: str, wanted: str) -> None:
    if saved != wanted:
        delete(storage, [saved])
        raise OffsiteFailed(
            f"The storage saved {wanted} as {saved}; configure it to overwrite existing names"
        )


def _leftovers_of(name: str, files: Iterable[str]) -> list[str]:
    return [f for f in files if (m := DATA_NAME.match(f)) is not None and m.group(1) == name]


def delete_copy(storage: Storage, copy: OffsiteCopy) -> None:
    # The manifest goes first: a copy half-deleted is a leftover, never a listed copy.
    delete(storage, [copy.name + MANIFEST_SUFFIX, copy.object_name])


def leftovers_among(files: Iterable[str], complete: set[str]) -> list[str]:
    """The objects among ``files`` that belong to no ``complete`` copy: what interrupted
    uploads and deletions left."""
    return [
        f
        for f in files
        if (m := DATA_NAME.match(f) or MANIFEST_NAME.match(f)) is not None
        and m.group(1) not in complete
    ]


def delete(storage: Storage, names: Iterable[str]) -> None:
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


def fetch(config: Config, storage: Storage, copy: OffsiteCopy, identities: list[Any]) -> Path:
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
