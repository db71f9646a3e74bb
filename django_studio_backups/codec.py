"""The form a backup takes off-site: compressed (zstd or gzip), then encrypted with age.

Everything streams: data moves in chunks of at most ``CHUNK`` bytes, so encoding or decoding
a database of any size needs a few MB of memory. The output of ``encode`` is exactly what the
``age`` and ``zstd``/``gzip`` command-line tools read: ``age -d -i key | zstd -d`` gives the
database back without this code. Nothing here knows about Django.

zstandard and pyrage are the ``offsite`` extra; they are imported when first needed, so the
rest of the app works without them.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import threading
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol

ENCRYPTED_SUFFIX = ".age"
CHUNK = 1024 * 1024
ZSTD_LEVEL = 3
GZIP_LEVEL = 6
# zstd's worker threads would nearly double the speed on two cores, but each holds its own
# job buffers, and an upload's memory then more than tripled (see bench/RESULTS.md). Bounded
# memory wins; the upload link is usually slower than one core anyway.
ZSTD_THREADS = 0


class CodecError(Exception):
    """Data that cannot be encoded or decoded; the message says why."""


class Writable(Protocol):
    def write(self, data: bytes, /) -> int | None: ...


class Readable(Protocol):
    def read(self, size: int = ..., /) -> bytes: ...


class _Compressor(Protocol):
    def compress(self, data: bytes, /) -> bytes: ...

    def flush(self) -> bytes: ...


def suffix(compression: str | None, encrypted: bool) -> str:
    """What an encoded file's name adds to the backup's name: ``.zst.age``, ``.gz``, ..."""
    return COMPRESSIONS[compression].suffix + (ENCRYPTED_SUFFIX if encrypted else "")


def missing_packages(compression: str | None, encrypted: bool) -> list[str]:
    """The Python packages these options need that are not installed."""
    known = COMPRESSIONS.get(compression)
    needed = [known.package] if known is not None and known.package else []
    needed += ["pyrage"] if encrypted else []
    missing = []
    for package in needed:
        try:
            __import__(package)
        except ImportError:
            missing.append(package)
    return missing


def parse_recipient(text: str) -> Any:
    """An age recipient (``age1...``) or an SSH public key (``ssh-ed25519 ...``)."""
    import pyrage

    cleaned = text.strip()
    kind = pyrage.ssh.Recipient if cleaned.startswith("ssh-") else pyrage.x25519.Recipient
    try:
        return kind.from_str(cleaned)
    except pyrage.RecipientError as exc:
        raise CodecError(f"{text!r} is not an age recipient: {exc}") from None


def read_identities(path: Path) -> list[Any]:
    """The identities in an ``age-keygen`` key file, or an unencrypted SSH private key."""
    import pyrage

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CodecError(f"Cannot read the identity file {path}: {exc}") from exc
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return [pyrage.ssh.Identity.from_buffer(data)]
        identities = [
            pyrage.x25519.Identity.from_str(line.strip())
            for line in data.decode("utf-8").splitlines()
            if line.strip() and not line.lstrip().startswith("#")
        ]
    except (pyrage.IdentityError, UnicodeDecodeError) as exc:
        raise CodecError(f"{path} is not an age identity file: {exc}") from None
    if not identities:
        raise CodecError(f"{path} holds no age identity")
    return identities


class Digest:
    """The size and SHA-256 of the bytes that went through a stream."""

    def __init__(self) -> None:
        self.size = 0
        self._hash = hashlib.sha256()

    def update(self, data: bytes | memoryview) -> None:
        self.size += len(data)
        self._hash.update(data)

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()


class HashingReader(io.RawIOBase):
    def __init__(self, source: BinaryIO | Readable) -> None:
        self._source = source
        self.digest = Digest()

    def readinto(self, buffer: Any) -> int:
        data = self._source.read(len(buffer))
        buffer[: len(data)] = data
        self.digest.update(data)
        return len(data)


class HashingWriter:
    def __init__(self, sink: Writable) -> None:
        self._sink = sink
        self.digest = Digest()

    def write(self, data: bytes) -> int:
        self._sink.write(data)
        self.digest.update(data)
        return len(data)


def encode(
    source: BinaryIO | Readable,
    sink: Writable,
    compression: str | None,
    recipients: Sequence[Any] = (),
) -> None:
    """Write ``source`` to ``sink``, compressed, then encrypted to ``recipients`` if any."""
    reader = _CompressingReader(source, _compressor(compression))
    if recipients:
        import pyrage

        try:
            pyrage.encrypt_io(reader, sink, list(recipients))
        except pyrage.EncryptError as exc:
            raise CodecError(f"Encryption failed: {exc}") from exc
    else:
        while data := reader.read(CHUNK):
            sink.write(data)


def decode(
    source: BinaryIO | Readable,
    sink: Writable,
    compression: str | None,
    identities: Sequence[Any] = (),
) -> None:
    """Undo ``encode``: decrypt with ``identities`` (if given), decompress, write to ``sink``."""
    writer = _decompressor(compression, sink)
    if identities:
        import pyrage

        try:
            pyrage.decrypt_io(source, writer, list(identities))
        except pyrage.DecryptError as exc:
            raise CodecError(f"Decryption failed: {exc}") from exc
        except OSError as exc:
            # A chunk that fails authentication comes out as a bare OSError; errors of the
            # source or the sink keep their errno and stay what they are.
            if exc.errno is not None:
                raise
            raise CodecError(f"Decryption failed, the data is damaged: {exc}") from exc
    else:
        while data := source.read(CHUNK):
            writer.write(data)
    writer.finish()


class EncodedStream(io.RawIOBase):
    """The encoded form of ``source``, to read like a file, e.g. by ``Storage.save()``.

    Storages pull from the file they save and pyrage pushes what it encrypts, so a thread
    encodes into a pipe that this object reads: the pipe's few kilobytes are all the
    memory between them. An encoding failure surfaces as an ``OSError`` from ``read()``
    instead of an early end of file, so a storage never saves a truncated stream as
    complete. Closing the stream stops the thread.
    """

    def __init__(
        self, source: BinaryIO | Readable, compression: str | None, recipients: Sequence[Any] = ()
    ) -> None:
        super().__init__()
        read_fd, write_fd = os.pipe()
        self._pipe = open(read_fd, "rb", buffering=0)  # noqa: SIM115 - closed in close()
        self._write_fd = write_fd
        self.plain = HashingReader(source)
        self.encoded = Digest()
        self._error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._produce,
            args=(compression, recipients),
            name="studio-backups-encode",
            daemon=True,
        )
        self._thread.start()

    def _produce(self, compression: str | None, recipients: Sequence[Any]) -> None:
        try:
            encode(self.plain, _PipeWriter(self._write_fd, self.encoded), compression, recipients)
        except BaseException as exc:
            self._error = exc
        finally:
            os.close(self._write_fd)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        count = self._pipe.readinto(buffer)
        if not count:
            self._thread.join()
            if self._error is not None:
                raise OSError(f"Could not encode the backup: {self._error}") from self._error
        return count or 0

    def close(self) -> None:
        if not self.closed:
            # The producer's next write then fails with EPIPE, and it ends.
            self._pipe.close()
            self._thread.join()
        super().close()


class _PipeWriter:
    def __init__(self, fd: int, digest: Digest) -> None:
        self._fd = fd
        self._digest = digest

    def write(self, data: bytes) -> int:
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            self._digest.update(view[:written])
            view = view[written:]
        return len(data)


class _Passthrough:
    def compress(self, data: bytes) -> bytes:
        return data

    def flush(self) -> bytes:
        return b""


def _compressor(compression: str | None) -> _Compressor:
    return _known(compression).compressor()


def _known(compression: str | None) -> Compression:
    try:
        return COMPRESSIONS[compression]
    except KeyError:
        raise CodecError(f"Unknown compression {compression!r}") from None


def _zstd_compressor() -> _Compressor:
    import zstandard

    return zstandard.ZstdCompressor(level=ZSTD_LEVEL, threads=ZSTD_THREADS).compressobj()


def _gzip_compressor() -> _Compressor:
    # wbits 31: the gzip container, so that gunzip reads the file.
    return zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)


class _CompressingReader(io.RawIOBase):
    def __init__(self, source: BinaryIO | Readable, compressor: _Compressor) -> None:
        super().__init__()
        self._source = source
        self._compressor = compressor
        self._pending = memoryview(b"")
        self._done = False

    def readinto(self, buffer: Any) -> int:
        while not self._pending and not self._done:
            data = self._source.read(CHUNK)
            if data:
                self._pending = memoryview(self._compressor.compress(data))
            else:
                self._pending = memoryview(self._compressor.flush())
                self._done = True
        count = min(len(buffer), len(self._pending))
        buffer[:count] = self._pending[:count]
        self._pending = self._pending[count:]
        return count


class _Decompressor(Protocol):
    def write(self, data: bytes, /) -> int: ...

    def finish(self) -> None: ...


def _decompressor(compression: str | None, sink: Writable) -> _Decompressor:
    return _known(compression).decompressor(sink)


class _PlainWriter:
    def __init__(self, sink: Writable) -> None:
        self._sink = sink

    def write(self, data: bytes) -> int:
        self._sink.write(data)
        return len(data)

    def finish(self) -> None:
        pass


class _ZstdWriter(_PlainWriter):
    def __init__(self, sink: Writable) -> None:
        import zstandard

        # A free page of zeros compresses a thousandfold: stream_writer() hands the output
        # on in CHUNK pieces, where decompress() would build it whole in memory.
        self._writer = zstandard.ZstdDecompressor().stream_writer(
            sink,  # type: ignore[arg-type]
            write_size=CHUNK,
            write_return_read=True,
            closefd=False,
        )
        self._error: type[Exception] = zstandard.ZstdError

    def write(self, data: bytes) -> int:
        try:
            return self._writer.write(data)
        except self._error as exc:
            raise CodecError(f"The zstd stream is damaged: {exc}") from None

    def finish(self) -> None:
        self._writer.close()  # type: ignore[no-untyped-call]


class _GzipWriter(_PlainWriter):
    def __init__(self, sink: Writable) -> None:
        super().__init__(sink)
        self._inflater = zlib.decompressobj(31)

    def write(self, data: bytes) -> int:
        pending = data
        try:
            while pending and not self._inflater.eof:
                self._sink.write(self._inflater.decompress(pending, CHUNK))
                pending = self._inflater.unconsumed_tail
        except zlib.error as exc:
            raise CodecError(f"The gzip stream is damaged: {exc}") from None
        return len(data)

    def finish(self) -> None:
        if not self._inflater.eof:
            raise CodecError("The gzip stream ends early")


@dataclass(frozen=True)
class Compression:
    # What it adds to a backup's name, and the Python package it needs (None: the stdlib).
    suffix: str
    package: str | None
    compressor: Callable[[], _Compressor]
    decompressor: Callable[[Writable], _Decompressor]


# The one registry of compressions: settings, file names and cleanup all derive from it.
COMPRESSIONS: dict[str | None, Compression] = {
    "zstd": Compression(".zst", "zstandard", _zstd_compressor, _ZstdWriter),
    "gzip": Compression(".gz", None, _gzip_compressor, _GzipWriter),
    None: Compression("", None, _Passthrough, _PlainWriter),
}
# A regex fragment for whatever encoding adds to a backup's name.
SUFFIXES = (
    "(?:"
    + "|".join(re.escape(c.suffix) for c in COMPRESSIONS.values() if c.suffix)
    + f")?(?:{re.escape(ENCRYPTED_SUFFIX)})?"
)
