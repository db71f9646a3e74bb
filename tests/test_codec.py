from __future__ import annotations

import errno
import gzip
import io
import os
import subprocess
import threading
from pathlib import Path

import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from django_studio_backups import codec

from .offsite_helpers import AgeKey, age_decrypt


def encoded(data: bytes, compression: str | None, recipients: list[object]) -> bytes:
    sink = io.BytesIO()
    codec.encode(io.BytesIO(data), sink, compression, recipients)
    return sink.getvalue()


def decoded(data: bytes, compression: str | None, identities: list[object]) -> bytes:
    sink = io.BytesIO()
    codec.decode(io.BytesIO(data), sink, compression, identities)
    return sink.getvalue()


@settings(max_examples=30, deadline=None)
@given(
    data=st.binary(max_size=3 * codec.CHUNK // 2) | st.just(b"\x00" * (3 * codec.CHUNK)),
    compression=st.sampled_from(["zstd", "gzip", None]),
    encrypt=st.booleans(),
)
def test_decode_undoes_encode(
    data: bytes, compression: str | None, encrypt: bool, age_key: AgeKey
) -> None:
    recipients = [codec.parse_recipient(age_key.recipient)] if encrypt else []
    identities = codec.read_identities(age_key.path) if encrypt else []
    assert decoded(encoded(data, compression, recipients), compression, identities) == data


def test_the_standard_tools_read_what_encode_writes(age_key: AgeKey, tmp_path: Path) -> None:
    data = os.urandom(100_000) + b"studio " * 200_000
    for compression, tool in [("zstd", ["zstd", "-d", "-c"]), ("gzip", ["gzip", "-d", "-c"])]:
        target = tmp_path / f"out{codec.suffix(compression, True)}"
        target.write_bytes(encoded(data, compression, [codec.parse_recipient(age_key.recipient)]))
        compressed = age_decrypt(target, age_key)
        plain = subprocess.run(tool, input=compressed, capture_output=True, check=True).stdout
        assert plain == data
    assert len(encoded(data, "zstd", [])) < len(data) // 2


def test_ssh_keys_work_as_recipient_and_identity(tmp_path: Path) -> None:
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    recipient = codec.parse_recipient(key.with_suffix(".pub").read_text())
    data = b"tattoo " * 1000
    assert decoded(encoded(data, "gzip", [recipient]), "gzip", codec.read_identities(key)) == data
    # The age CLI decrypts with the same SSH key.
    sealed = tmp_path / "sealed.age"
    sealed.write_bytes(encoded(data, None, [recipient]))
    out = subprocess.run(
        ["age", "-d", "-i", str(key), str(sealed)], capture_output=True, check=True
    ).stdout
    assert out == data


def test_suffixes() -> None:
    assert codec.suffix("zstd", True) == ".zst.age"
    assert codec.suffix("gzip", False) == ".gz"
    assert codec.suffix(None, True) == ".age"
    assert codec.suffix(None, False) == ""


def test_bad_recipients_and_identities_say_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(codec.CodecError, match="'age1nope' is not an age recipient"):
        codec.parse_recipient("age1nope")
    with pytest.raises(codec.CodecError, match="is not an age recipient"):
        codec.parse_recipient("ssh-ed25519 AAAAnope")
    with pytest.raises(codec.CodecError, match="Cannot read the identity file"):
        codec.read_identities(tmp_path / "missing.txt")
    bad = tmp_path / "bad.txt"
    bad.write_text("AGE-SECRET-KEY-1NOTAKEY\n")
    with pytest.raises(codec.CodecError, match="is not an age identity file"):
        codec.read_identities(bad)
    empty = tmp_path / "empty.txt"
    empty.write_text("# created: never\n\n")
    with pytest.raises(codec.CodecError, match="holds no age identity"):
        codec.read_identities(empty)
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"\xff\xfe")
    with pytest.raises(codec.CodecError, match="is not an age identity file"):
        codec.read_identities(binary)


def test_damaged_data_is_refused(age_key: AgeKey) -> None:
    data = os.urandom(50_000)
    with pytest.raises(codec.CodecError, match="gzip stream is damaged"):
        decoded(b"\x1f\x8b\x08\x00" + b"\xff" * 100, "gzip", [])
    with pytest.raises(codec.CodecError, match="gzip stream ends early"):
        decoded(gzip.compress(data)[:-20], "gzip", [])
    with pytest.raises(codec.CodecError, match="zstd stream is damaged"):
        decoded(b"\x28\xb5\x2f\xfd" + b"\xff" * 100, "zstd", [])
    sealed = bytearray(encoded(data, None, [codec.parse_recipient(age_key.recipient)]))
    sealed[len(sealed) // 2] ^= 0xFF
    with pytest.raises(codec.CodecError, match="Decryption failed"):
        decoded(bytes(sealed), None, codec.read_identities(age_key.path))
    with pytest.raises(codec.CodecError, match="Unknown compression 'xz'"):
        decoded(b"", "xz", [])
    with pytest.raises(codec.CodecError, match="Unknown compression 'xz'"):
        encoded(b"", "xz", [])


def test_gzip_output_of_a_decompression_bomb_is_handed_on_in_chunks() -> None:
    sizes: list[int] = []

    class Sink:
        def write(self, data: bytes) -> int:
            sizes.append(len(data))
            return len(data)

    codec.decode(io.BytesIO(gzip.compress(b"\x00" * (8 * codec.CHUNK))), Sink(), "gzip")
    assert sum(sizes) == 8 * codec.CHUNK
    assert max(sizes) <= codec.CHUNK


def drain(stream: codec.EncodedStream) -> None:
    while stream.read(65536):
        pass


class FailingSource:
    def __init__(self, good: int) -> None:
        self.left = good

    def read(self, size: int = -1) -> bytes:
        if self.left <= 0:
            raise OSError("the disk went away")
        count = min(size, self.left)
        self.left -= count
        return os.urandom(count)


@pytest.mark.parametrize("encrypt", [False, True])
def test_encoded_stream_fails_instead_of_ending_early(encrypt: bool, age_key: AgeKey) -> None:
    recipients = [codec.parse_recipient(age_key.recipient)] if encrypt else []
    stream = codec.EncodedStream(FailingSource(3 * codec.CHUNK), "zstd", recipients)
    with pytest.raises(OSError, match=r"Could not encode the backup: .*the disk went away"):
        drain(stream)
    stream.close()
    assert stream.closed


def test_encoded_stream_counts_and_hashes_both_sides() -> None:
    data = os.urandom(2 * codec.CHUNK)
    stream = codec.EncodedStream(io.BytesIO(data), "gzip")
    assert stream.readable()
    out = stream.read()
    stream.close()
    stream.close()
    assert gzip.decompress(out) == data
    assert stream.plain.digest.size == len(data)
    assert stream.encoded.size == len(out)
    assert stream.encoded.sha256 == __import__("hashlib").sha256(out).hexdigest()


def test_closing_the_stream_early_stops_the_encoder() -> None:
    before = threading.active_count()
    stream = codec.EncodedStream(io.BytesIO(os.urandom(20 * codec.CHUNK)), None)
    assert stream.read(1000)
    stream.close()
    assert threading.active_count() == before


def test_missing_packages(monkeypatch: pytest.MonkeyPatch) -> None:
    assert codec.missing_packages("zstd", True) == []
    monkeypatch.setitem(__import__("sys").modules, "zstandard", None)
    monkeypatch.setitem(__import__("sys").modules, "pyrage", None)
    assert codec.missing_packages("zstd", True) == ["zstandard", "pyrage"]
    assert codec.missing_packages("gzip", False) == []


def test_zstd_decoding_hands_output_on_in_chunks() -> None:
    sizes: list[int] = []

    class Sink:
        def write(self, data: bytes) -> int:
            sizes.append(len(data))
            return len(data)

    bomb = zstandard.ZstdCompressor().compress(b"\x00" * (8 * codec.CHUNK))
    codec.decode(io.BytesIO(bomb), Sink(), "zstd")
    assert sum(sizes) == 8 * codec.CHUNK
    assert max(sizes) <= codec.CHUNK


def test_a_failing_sink_is_not_taken_for_damaged_data(age_key: AgeKey) -> None:
    class FullDisk:
        def write(self, data: bytes) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

    sealed = encoded(os.urandom(100_000), None, [codec.parse_recipient(age_key.recipient)])
    with pytest.raises(OSError, match="No space left on device") as raised:
        codec.decode(io.BytesIO(sealed), FullDisk(), None, codec.read_identities(age_key.path))
    assert raised.value.errno == errno.ENOSPC
