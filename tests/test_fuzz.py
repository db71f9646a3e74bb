"""Fuzzed input: damaged and foreign files, hostile names and odd manifests.

Every case must end in a clear error (a ``BackupError``, or the admin's "no such backup"),
never a traceback or a 500, and leave the live database byte for byte as it was.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import User
from django.http import FileResponse
from django.test import Client
from django.urls import reverse
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from django_studio_backups import archive, engine, services
from django_studio_backups.exceptions import BackupNotFound, RestoreFailed
from tests.conftest import StudioDB

FUZZ = settings(
    max_examples=int(os.environ.get("STUDIO_TEST_FUZZ_EXAMPLES", "120")),
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
FUZZED = "backup_20200101_000000.db"
VIEWS = ("verify", "download", "delete", "restore")

cases: dict[str, int] = {}


@pytest.fixture(scope="module", autouse=True)
def report_cases() -> Iterator[None]:
    yield
    print("fuzzed cases:", cases, "total", sum(cases.values()))


def count(test: str) -> None:
    cases[test] = cases.get(test, 0) + 1


class Live:
    """The live database's file and -wal, to prove that they did not change."""

    def __init__(self, db: StudioDB) -> None:
        self.db = db
        # All committed data in the file itself, so comparing the file compares the data.
        connection = db.connect()
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        connection.close()
        self.digest = self.state()

    def state(self) -> tuple[str, int]:
        wal = Path(f"{self.db.path}-wal")
        return (
            hashlib.sha256(self.db.path.read_bytes()).hexdigest(),
            wal.stat().st_size if wal.exists() else 0,
        )

    def assert_unchanged(self, case: object) -> None:
        assert self.state() == self.digest, f"the live database changed: {case!r}"


def clean_folder(db: StudioDB, keep: set[str]) -> None:
    for path in db.backups.iterdir():
        if path.name.removesuffix(archive.MANIFEST_SUFFIX) not in keep and path.name != ".lock":
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()


def sqlite_file(path: Path, statements: list[str], page_size: int | None = None) -> bytes:
    path.unlink(missing_ok=True)
    connection = sqlite3.connect(path, isolation_level=None)
    if page_size is not None:
        connection.execute(f"PRAGMA page_size={page_size}")
    for statement in statements:
        connection.execute(statement)
    connection.close()
    data = path.read_bytes()
    path.unlink()
    return data


def flip(data: bytes, bits: list[int]) -> bytes:
    damaged = bytearray(data)
    for bit in bits:
        damaged[bit // 8 % len(damaged)] ^= 1 << (bit % 8)
    return bytes(damaged)


def with_header_fields(data: bytes, fields: list[tuple[int, int]]) -> bytes:
    damaged = bytearray(data)
    for offset, value in fields:
        damaged[offset] = value
    return bytes(damaged)


# Header bytes SQLite validates: page size, format versions, reserved space, payload
# fractions, schema format and text encoding (https://sqlite.org/fileformat.html).
HEADER_OFFSETS = [16, 17, 18, 19, 20, 21, 22, 23, 44, 45, 46, 47, 56, 57, 58, 59]
DJANGO_TABLE = "CREATE TABLE django_migrations (id INTEGER PRIMARY KEY, app, name, applied)"


def unverifiable_damage(real: bytes) -> st.SearchStrategy[tuple[str, bytes]]:
    """Damage that can leave a valid SQLite database behind: only a manifest can tell."""
    return st.one_of(
        st.integers(0, len(real) - 1).map(lambda n: ("truncated", real[:n])),
        st.lists(st.integers(0, 8 * len(real) - 1), min_size=1, max_size=16).map(
            lambda bits: ("bits flipped", flip(real, bits))
        ),
        st.lists(st.tuples(st.sampled_from(HEADER_OFFSETS), st.integers(0, 255)), min_size=1).map(
            lambda fields: ("bad header", with_header_fields(real, fields))
        ),
    )


def unrestorable_files(scratch: Path) -> st.SearchStrategy[tuple[str, bytes]]:
    """Files that are no Django database of this page size, whatever their manifest says."""
    identifier = st.from_regex(r"[a-z][a-z0-9_]{0,12}", fullmatch=True)
    return st.one_of(
        st.binary(max_size=20_000).map(lambda b: ("random bytes", b)),
        st.binary(min_size=84, max_size=20_000).map(
            lambda b: ("random bytes after a SQLite header", engine.SQLITE_HEADER + b)
        ),
        st.sampled_from([512, 1024, 2048, 8192, 16384, 32768, 65536]).map(
            lambda size: (
                f"page size {size}",
                sqlite_file(scratch / "odd.db", [DJANGO_TABLE], page_size=size),
            )
        ),
        st.lists(
            st.tuples(identifier, identifier), min_size=1, max_size=4, unique_by=lambda t: t[0]
        ).map(
            lambda tables: (
                "another application's database",
                sqlite_file(
                    scratch / "foreign.db",
                    [f'CREATE TABLE "t_{name}" ("{column}" TEXT)' for name, column in tables],
                ),
            )
        ),
    )


def test_damaged_and_foreign_files_are_never_restored(studio_db: StudioDB, tmp_path: Path) -> None:
    real = services.backup_now()
    real_bytes = real.path.read_bytes()
    manifest = real.manifest
    studio_db.add_clients("Carla")
    live = Live(studio_db)

    @FUZZ
    @given(
        case=st.one_of(
            st.tuples(unverifiable_damage(real_bytes), st.just(True)),
            st.tuples(unrestorable_files(tmp_path), st.booleans()),
        )
    )
    def attempt(case: tuple[tuple[str, bytes], bool]) -> None:
        (what, data), keep_manifest = case
        # Truncation to the full length or flips that cancel out give back the real file.
        assume(data != real_bytes)
        count("damaged or foreign file restored")
        fuzzed = studio_db.backups / FUZZED
        fuzzed.write_bytes(data)
        if keep_manifest:
            # The real backup's manifest, as if this file had been damaged after it was made.
            archive.write_private_json(archive.manifest_path_for(fuzzed), manifest)
        try:
            with pytest.raises(RestoreFailed) as raised:
                services.restore(FUZZED)
            message = str(raised.value)
            # It names the file refused, or the live database it could not be written into.
            assert FUZZED in message or str(studio_db.path) in message, message
            live.assert_unchanged((what, keep_manifest))
        finally:
            clean_folder(studio_db, keep={real.name})

    attempt()
    assert studio_db.clients() == ["Ana", "Beto", "Carla"]


def test_damage_without_a_manifest_is_refused_or_restored_whole(studio_db: StudioDB) -> None:
    # Without the manifest's SHA-256 only SQLite can judge a file, and a flipped bit inside
    # a stored value is a valid database with another value: restoring it is correct. What
    # must never happen is a traceback, or a live database that is damaged or half restored.
    real = services.backup_now()
    real_bytes = real.path.read_bytes()
    baseline = [Live(studio_db)]
    outcomes = {"refused": 0, "restored": 0}

    @FUZZ
    @given(case=unverifiable_damage(real_bytes))
    def attempt(case: tuple[str, bytes]) -> None:
        what, data = case
        assume(data != real_bytes)
        count("damaged file without a manifest restored")
        fuzzed = studio_db.backups / FUZZED
        fuzzed.write_bytes(data)
        try:
            refusal = restore_or_refusal(FUZZED)
            if refusal is not None:
                assert FUZZED in refusal or str(studio_db.path) in refusal, refusal
                baseline[0].assert_unchanged(what)
                outcomes["refused"] += 1
                return
            outcomes["restored"] += 1
            connection = studio_db.connect()
            assert connection.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
            connection.close()
            # Back to the real backup for the next case.
            services.restore(real.name)
            baseline[0] = Live(studio_db)
        finally:
            clean_folder(studio_db, keep={real.name})

    attempt()
    print("without a manifest:", outcomes)
    assert outcomes["refused"] > 0, outcomes


def restore_or_refusal(name: str) -> str | None:
    """None once the backup is restored, or why it was refused."""
    try:
        services.restore(name)
    except RestoreFailed as exc:
        return str(exc)
    return None


def lookup(name: str) -> archive.BackupFile | None:
    try:
        return services.find_backup(name)
    except BackupNotFound:
        return None


def hostile_names(real: str, folder: Path) -> st.SearchStrategy[str]:
    pieces = st.sampled_from(
        ["..", ".", "", "backups", "data", "studio.db", "settings.json", "etc", "passwd", real]
    )
    encoded = st.sampled_from(
        ["%2e%2e%2f", "%2E%2E%2F", "%2F", "%2f", "..%2F", "%2e%2e/", "..\\", "%00", "\x00", "%252F"]
    )
    return st.one_of(
        st.text(max_size=300),
        st.lists(pieces, max_size=6).map("/".join),
        st.lists(pieces, max_size=6).map(lambda parts: str(folder) + "/" + "/".join(parts)),
        st.lists(st.one_of(pieces, encoded), max_size=6).map("".join),
        st.tuples(encoded, st.sampled_from([real, "studio.db", "settings.json"])).map("".join),
        st.tuples(st.sampled_from([real, "backup_", ""]), encoded).map("".join),
        st.integers(200, 5000).map(lambda n: "a" * n),
        st.integers(100, 2000).map(lambda n: "../" * n + "etc/passwd"),
        st.integers(1, 60).map(lambda n: "/" * n),
        st.sampled_from([*SYMLINKS, DIRECTORY]),
    )


SYMLINKS = ["backup_20200102_000000.db", "backup_20200103_000000.db", "backup_20200104_000000.db"]
DIRECTORY = "backup_20200105_000000.db"


def plant_traps(db: StudioDB, real: Path, outside: Path) -> None:
    """Names that look like backups but are links out of the folder, or a directory."""
    (db.backups / SYMLINKS[0]).symlink_to(db.path)
    (db.backups / SYMLINKS[1]).symlink_to(real)
    (db.backups / SYMLINKS[2]).symlink_to(outside / "missing.db")
    (db.backups / DIRECTORY).mkdir()
    for name in [*SYMLINKS, DIRECTORY]:
        (db.backups / (name + archive.MANIFEST_SUFFIX)).symlink_to(archive.manifest_path_for(real))


def test_hostile_names_find_no_backup(studio_db: StudioDB, tmp_path: Path) -> None:
    real = services.backup_now()
    plant_traps(studio_db, real.path, tmp_path)
    live = Live(studio_db)

    @FUZZ
    @given(name=hostile_names(real.name, studio_db.backups))
    def attempt(name: str) -> None:
        count("hostile name looked up and restored")
        found = lookup(name)
        if found is None:
            assert not services.restore_backup(name)
            with pytest.raises(BackupNotFound, match=r"\w"):
                services.restore(name)
        else:
            # Only the real backup, by its name or by its path in the folder.
            assert found.path == real.path, name
        live.assert_unchanged(name)
        assert [b.name for b in services.backups()] == [real.name]

    attempt()


@pytest.mark.django_db(databases=["default", "studio"])
def test_hostile_names_in_the_admins_urls(studio_db: StudioDB, tmp_path: Path) -> None:
    real = services.backup_now()
    plant_traps(studio_db, real.path, tmp_path)
    studio_db.add_clients("Carla")
    live = Live(studio_db)
    client = Client()
    client.force_login(User.objects.create_superuser("boss", password="pw"))
    prefix = reverse("admin:django_studio_backups_backup_changelist")
    requests: list[Callable[[str], Any]] = [
        client.get,
        lambda path: client.post(path, {"post": "yes"}),
    ]

    @FUZZ
    @given(name=hostile_names(real.name, studio_db.backups), raw=st.booleans())
    def attempt(name: str, raw: bool) -> None:
        assume(lookup(name) is None)
        # Quoted, as a browser sends it; or as it is, so that %2F and friends get through.
        segment = name if raw else quote(name, safe="", errors="surrogatepass")
        if raw:
            assume(segment.isascii() and segment.isprintable())
        count("hostile name sent to the admin")
        for view in VIEWS:
            for send in requests:
                response = send(f"{prefix}{segment}/{view}/")
                assert response.status_code in (302, 400, 404, 405), (name, view)
                if response.status_code == 302:
                    assert response["Location"] == prefix, (name, view)
                assert not isinstance(response, FileResponse), (name, view)
        live.assert_unchanged(name)
        assert [b.name for b in services.backups()] == [real.name]
        assert LogEntry.objects.count() == 0

    attempt()


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
MANIFEST_KEYS = ["created_at", "kind", "size", "sha256", "migrations", "verification", "format"]
ZONES = st.timezones() | st.sampled_from([timezone(timedelta(hours=h)) for h in (-23, -12, 14, 23)])
TIMES = st.one_of(
    st.datetimes(timezones=ZONES),
    # Near the ends of what datetime can hold, where converting between zones overflows.
    st.datetimes(max_value=datetime(1, 1, 3), timezones=ZONES),
    st.datetimes(min_value=datetime(9999, 12, 29), timezones=ZONES),
    st.datetimes(),
).map(datetime.isoformat) | st.sampled_from(["2026-13-45", "", "yesterday"])


@pytest.mark.django_db(databases=["default", "studio"])
def test_manifests_of_any_shape(studio_db: StudioDB) -> None:
    real = services.backup_now()
    good = real.manifest
    live = Live(studio_db)
    client = Client()
    client.force_login(User.objects.create_superuser("boss", password="pw"))
    changelist = reverse("admin:django_studio_backups_backup_changelist")
    confirm = reverse("admin:django_studio_backups_backup_restore", args=[real.name])
    mtimes = [archive.manifest_path_for(real.path).stat().st_mtime_ns]

    @FUZZ
    @given(
        changes=st.fixed_dictionaries(
            {},
            optional={key: TIMES | JSON if key == "created_at" else JSON for key in MANIFEST_KEYS},
        ),
        raw=st.one_of(st.none(), st.binary(max_size=200)),
    )
    # What hypothesis found first: year 1 at UTC+14 is before year 1 in UTC.
    @example(changes={"created_at": "0001-01-01T00:00:00+14:00"}, raw=None)
    def attempt(changes: dict[str, Any], raw: bytes | None) -> None:
        count("odd manifest listed, verified and shown")
        manifest_path = archive.manifest_path_for(real.path)
        if raw is None:
            manifest_path.write_text(json.dumps({**good, **changes}))
        else:
            manifest_path.write_bytes(raw)
        # A new modification time, as a real change would have: the listing's cache of
        # manifests goes by it.
        mtimes.append(mtimes[-1] + 1_000_000_000)
        os.utime(manifest_path, ns=(mtimes[-1], mtimes[-1]))
        try:
            listed = services.list_backups()
            assert [row["name"] for row in listed] == [real.name]
            services.get_last_backup_display()
            assert isinstance(services.verify(real.name), list)
            assert client.get(changelist).status_code == 200
            assert client.get(confirm).status_code in (200, 302)
            live.assert_unchanged(changes)
        finally:
            archive.write_private_json(manifest_path, good)

    attempt()


STATE_KEYS = ["last_backup_at", "last_backup_failed_at", "last_backup_error"]


@pytest.mark.django_db(databases=["default", "studio"])
def test_state_files_of_any_shape(studio_db: StudioDB) -> None:
    # settings.json belongs to the application too, and people edit it by hand.
    live = Live(studio_db)
    client = Client()
    client.force_login(User.objects.create_superuser("boss", password="pw"))
    changelist = reverse("admin:django_studio_backups_backup_changelist")

    @FUZZ
    @given(
        content=st.fixed_dictionaries(
            {}, optional={key: TIMES | JSON if key != STATE_KEYS[2] else JSON for key in STATE_KEYS}
        ).map(json.dumps)
        | JSON.map(json.dumps)
        | st.binary(max_size=100).map(lambda b: b.decode("latin-1")),
    )
    @example(content='{"last_backup_at": "0001-01-01T00:00:00+00:00"}')
    def attempt(content: str) -> None:
        count("odd state file read and backed up after")
        studio_db.state_file.write_text(content, encoding="latin-1")
        try:
            assert isinstance(services.get_last_backup_display(), str)
            services.last_failure()
            assert client.get(changelist).status_code == 200
            made = services.create_backup_if_needed()
            assert made is None or made.exists()
            live.assert_unchanged(content)
        finally:
            studio_db.state_file.unlink()

    attempt()
