"""The backup folder: file names, manifests, listing and atomic publishing."""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone, tzinfo
from pathlib import Path
from typing import Any

from . import engine, locking

# backup_YYYYMMDD_HHMMSS.db, with _N added when a name of that second is taken already.
# This module is the one owner of the name: others build on NAME (a regex fragment with one
# group, the whole name) and the functions below.
STAMP_FORMAT = "%Y%m%d_%H%M%S"
NAME = r"(backup_\d{8}_\d{6}(?:_[1-9]\d{0,5})?\.db)"
NAME_PATTERN = re.compile(r"^backup_(\d{8}_\d{6})(?:_([1-9]\d{0,5}))?\.db$")
# How the app shows a backup's time to people, in the studio's time zone.
DISPLAY_FORMAT = "%d/%m/%Y %H:%M"
MANIFEST_SUFFIX = ".json"
TEMP_PREFIX = ".tmp-"
PRIVATE_FILE = 0o600
PRIVATE_DIRECTORY = 0o700
GITIGNORE = ".gitignore"

# "damaged": what was live when a restored database failed its check, kept before the
# data from before the restore was put back.
# "adopted": a file put into the folder without a manifest, checked and given one (verify).
# "point-in-time": the database as it was at a moment, fetched from the replica to restore.
KINDS = ("manual", "daily", "safety", "pre-migrate", "damaged", "adopted", "point-in-time")
# The check a backup must have passed to count as verified: the one a restore runs.
FULL_CHECK = "integrity_check"
# A check's time is kept to the second; the file it saw may be up to this much newer.
MTIME_SLACK = timedelta(seconds=2)
# A time in a manifest or the state file outside these bounds is damage, not a date; near
# the ends of what datetime can hold, showing it in another time zone overflows.
EARLIEST = datetime(1970, 1, 1, tzinfo=timezone.utc)
LATEST = datetime(9000, 1, 1, tzinfo=timezone.utc)


@dataclass(frozen=True)
class BackupFile:
    path: Path
    size: int
    modified_at: datetime
    manifest: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    # The zone its name's time is in (the studio's), for a backup without a manifest.
    zone: tzinfo | None = field(default=None, compare=False, repr=False)
    # The file's modification time in nanoseconds, which a check records: a file changed
    # since (same size or not) no longer counts as checked.
    mtime_ns: int | None = field(default=None, compare=False, repr=False)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def manifest_path(self) -> Path:
        return manifest_path_for(self.path)

    @property
    def created_at(self) -> datetime:
        """When the snapshot was taken: from the manifest, else from the backup's name, never
        from the file's modification time (a copy put back from a drive is as old as its
        name says)."""
        value = self.manifest.get("created_at")
        try:
            moment = datetime.fromisoformat(value) if isinstance(value, str) else None
        except ValueError:
            moment = None
        if moment is not None and moment.tzinfo is not None and EARLIEST <= moment <= LATEST:
            return moment
        named = time_of_name(self.name, self.zone or timezone.utc)
        return named if named is not None else self.modified_at

    @property
    def kind(self) -> str:
        kind = self.manifest.get("kind")
        return kind if isinstance(kind, str) else "unknown"

    @property
    def sha256(self) -> str | None:
        value = self.manifest.get("sha256")
        return value if isinstance(value, str) else None

    @property
    def check(self) -> str | None:
        """The SQLite check the file last passed ("quick_check" or "integrity_check"), while
        it still has the size its manifest recorded; None if it failed or was never checked."""
        check = self.manifest.get("verification")
        if isinstance(check, dict) and check.get("ok") is True and self._as_checked(check):
            name = check.get("check")
            return name if isinstance(name, str) else None
        return None

    def _as_checked(self, check: dict[str, Any]) -> bool:
        """The file has the size and modification time its check saw (a manifest from before
        0.2 recorded no time: then the file must not be newer than the check)."""
        if self.manifest.get("size") != self.size:
            return False
        if "mtime_ns" in check:
            return bool(check["mtime_ns"] == self.mtime_ns)
        try:
            checked_at = datetime.fromisoformat(str(check["at"]))
        except (KeyError, ValueError):
            return False
        return checked_at.tzinfo is not None and self.modified_at <= checked_at + MTIME_SLACK

    @property
    def changed_since_checked(self) -> bool:
        """The file's size or modification time is not what its last passed check saw."""
        check = self.manifest.get("verification")
        return isinstance(check, dict) and check.get("ok") is True and not self._as_checked(check)

    @property
    def failed_check(self) -> bool:
        """The file's last check found it damaged (or changed since it was made)."""
        check = self.manifest.get("verification")
        return isinstance(check, dict) and check.get("ok") is False

    @property
    def sound(self) -> bool:
        """Has a manifest, and its file is as its last check saw it (or was never checked):
        a backup to count and keep. One that failed its check, changed since, or came
        without a manifest is kept for someone to look at, and never counted."""
        return bool(self.manifest) and not self.failed_check and not self.changed_since_checked

    @property
    def verified(self) -> bool:
        """The file passed integrity_check, the check a restore runs: it can be restored.

        quick_check alone does not compare indexes with their tables, and a backup with such
        a mismatch passes it, only to be refused when it is needed.
        """
        return self.check == FULL_CHECK

    @property
    def migrations(self) -> list[tuple[str, str]] | None:
        value = self.manifest.get("migrations")
        if not isinstance(value, list):
            return None
        return [(str(app), str(name)) for app, name in value]

    def display(self, zone: tzinfo) -> str:
        return display(self.created_at, zone)

    def as_dict(self, zone: tzinfo) -> dict[str, Any]:
        return {
            "path": self.path,
            "name": self.name,
            "display": self.display(zone),
            "size": self.size,
            "created_at": self.created_at.astimezone(zone),
            "kind": self.kind,
            "sha256": self.sha256,
            "verified": self.verified,
            "check": self.check,
        }


def record_check(backup: BackupFile, *, ok: bool, check: str, at: str, problems: list[str]) -> None:
    """Write the outcome of a check of ``backup`` into its manifest (one without a manifest
    stays without), with the modification time of the file it saw; a manifest that cannot
    be written keeps its earlier outcome."""
    if not backup.manifest:
        return
    verification: dict[str, Any] = {"ok": ok, "check": check, "at": at, "problems": problems}
    with contextlib.suppress(OSError):
        verification["mtime_ns"] = backup.path.stat().st_mtime_ns
    manifest = {**backup.manifest, "verification": verification}
    with contextlib.suppress(OSError):
        replace_json(backup.manifest_path, manifest)


def display(moment: datetime, zone: tzinfo | None) -> str:
    return moment.astimezone(zone).strftime(DISPLAY_FORMAT)


def time_of_name(name: str, zone: tzinfo) -> datetime | None:
    """When a backup called ``name`` was made, by its name (whose time is in ``zone``)."""
    parsed = parse_name(name)
    if parsed is None:
        return None
    try:
        return datetime.strptime(parsed[0], STAMP_FORMAT).replace(tzinfo=zone)
    except ValueError:  # backup_20261399_...: the pattern's digits, not a date
        return None


def stamp(moment: datetime) -> str:
    """The part of a backup's name that says when it was made (in ``moment``'s zone)."""
    return moment.strftime(STAMP_FORMAT)


def backup_name(stamp: str, sequence: int = 1) -> str:
    return f"backup_{stamp}.db" if sequence == 1 else f"backup_{stamp}_{sequence}.db"


def parse_name(name: str) -> tuple[str, int] | None:
    """(stamp, sequence) of a backup's name; None for any other name."""
    match = NAME_PATTERN.match(name)
    if match is None:
        return None
    return match.group(1), int(match.group(2) or 1)


def name_order(name: str) -> tuple[str, int]:
    """A sort key that puts backup names in the order they were made."""
    parsed = parse_name(name)
    assert parsed is not None, name
    return parsed


def is_backup_name(name: str) -> bool:
    return parse_name(name) is not None


def manifest_path_for(path: Path) -> Path:
    return path.with_name(path.name + MANIFEST_SUFFIX)


def ensure_directory(directory: Path) -> None:
    """Make the backup folder if need be; each folder made here gets a ``.gitignore`` that
    keeps it, and the copies of the database in it, out of the project's git repository."""
    if directory.is_dir():
        return
    # The folders made on the way too: another alias's backups/<alias> makes backups/,
    # where the configured database's backups go later.
    made = [directory, *(p for p in directory.parents if not p.exists())]
    try:
        directory.mkdir(mode=PRIVATE_DIRECTORY, parents=True)
    except FileExistsError:
        if directory.is_dir():
            return  # another process made it just now, and writes the .gitignore
        raise
    for folder in made:
        (folder / GITIGNORE).write_text("*\n")


@contextlib.contextmanager
def locked(
    directory: Path, name: str, timeout: float, error: Callable[[str], Exception]
) -> Iterator[None]:
    """Hold the lock file ``name`` in the backup folder ``directory`` (made if need be),
    waiting at most ``timeout`` seconds; ``error(reason)`` is raised if it cannot be had."""
    with contextlib.ExitStack() as stack:
        try:
            ensure_directory(directory)
            stack.enter_context(locking.exclusive(directory / name, timeout))
        except (OSError, locking.LockTimeout) as exc:
            raise error(f"Cannot use the backup folder {directory}: {exc}") from exc
        yield


# Listing reads a small JSON file per backup; a cache keyed on the file's identity keeps
# a page that lists a thousand backups from re-reading a thousand manifests every time.
# Keys are path strings: building Path objects took a third of a listing's time.
_manifest_cache: dict[str, tuple[int, int, dict[str, Any]]] = {}


def read_manifest(path: Path) -> dict[str, Any]:
    target = os.fspath(path) + MANIFEST_SUFFIX
    try:
        stat = os.stat(target)
    except OSError:
        return {}
    return _read_manifest(target, stat)


def _read_manifest(target: str, stat: os.stat_result) -> dict[str, Any]:
    cached = _manifest_cache.get(target)
    if cached is not None and cached[0] == stat.st_mtime_ns and cached[1] == stat.st_size:
        return cached[2]
    try:
        with open(target, "rb") as f:
            data = json.loads(f.read())
    except (OSError, ValueError):
        return {}
    manifest = data if isinstance(data, dict) else {}
    _manifest_cache[target] = (stat.st_mtime_ns, stat.st_size, manifest)
    return manifest


def list_backup_files(directory: Path, zone: tzinfo | None = None) -> list[BackupFile]:
    """Every backup in ``directory``, newest first by the time it was made (its manifest's,
    else its name's, in ``zone``), then by name."""
    try:
        entries = list(os.scandir(directory))
    except (FileNotFoundError, NotADirectoryError):
        # Nothing backed up yet, or a misplaced file that backing up reports.
        return []
    manifests = {entry.name: entry for entry in entries if entry.name.endswith(MANIFEST_SUFFIX)}
    found: list[BackupFile] = []
    for entry in entries:
        if not is_backup_name(entry.name):
            continue
        try:
            if not entry.is_file(follow_symlinks=False):
                continue
            stat = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        manifest = _listed_manifest(manifests.get(entry.name + MANIFEST_SUFFIX))
        found.append(_backup_file(Path(entry.path), stat, manifest, zone))
    found.sort(key=lambda b: (b.created_at, name_order(b.name)), reverse=True)
    return found


def _listed_manifest(entry: os.DirEntry[str] | None) -> dict[str, Any]:
    if entry is None:
        return {}
    try:
        stat = entry.stat()
    except OSError:  # a dangling symlink, or deleted since the folder was read
        return {}
    return _read_manifest(entry.path, stat)


def backup_file(path: Path, zone: tzinfo | None = None) -> BackupFile:
    """The backup at ``path``, which is known to exist (just published)."""
    return _backup_file(path, path.stat(), read_manifest(path), zone)


def _backup_file(
    path: Path, stat: os.stat_result, manifest: dict[str, Any], zone: tzinfo | None
) -> BackupFile:
    return BackupFile(
        path=path,
        size=stat.st_size,
        modified_at=datetime.fromtimestamp(stat.st_mtime, tz=timezone.utc),
        manifest=manifest,
        zone=zone,
        mtime_ns=stat.st_mtime_ns,
    )


def temporary_path(directory: Path, suffix: str = ".db") -> Path:
    return directory / f"{TEMP_PREFIX}{os.getpid()}-{secrets.token_hex(4)}{suffix}"


def remove_temporary_files(directory: Path) -> list[Path]:
    """Delete what interrupted runs left (temporary files, manifests whose backup is gone);
    only call it while holding the backup lock."""
    removed = []
    for entry in os.scandir(directory):
        if not entry.is_file(follow_symlinks=False):
            continue
        orphan = entry.name.endswith(MANIFEST_SUFFIX) and is_backup_name(
            entry.name.removesuffix(MANIFEST_SUFFIX)
        )
        if entry.name.startswith(TEMP_PREFIX) or (
            orphan and not os.path.lexists(entry.path.removesuffix(MANIFEST_SUFFIX))
        ):
            os.unlink(entry.path)
            removed.append(Path(entry.path))
    return removed


def publish(temporary: Path, directory: Path, stamp: str, manifest: dict[str, Any]) -> Path:
    """Give a checked temporary copy its ``backup_<stamp>.db`` name, never overwriting.

    The caller holds the backup lock. The manifest takes its place first and the backup's
    own link comes last: a crash at any point leaves either nothing listed or a complete,
    checked backup with its manifest (a manifest left alone is removed by the next run).
    """
    manifest_temporary = temporary.with_name(temporary.name + MANIFEST_SUFFIX)
    write_private_json(manifest_temporary, manifest)
    final = directory / backup_name(stamp, _highest_sequence(directory, stamp) + 1)
    os.replace(manifest_temporary, manifest_path_for(final))
    # link() fails if the name exists, where rename() would replace it.
    os.link(temporary, final)
    os.unlink(temporary)
    engine.fsync_directory(directory)
    return final


def _highest_sequence(directory: Path, stamp: str) -> int:
    # Numbering after the highest backup of that second, not from the first free name:
    # retention may have deleted the second's first backups already, and a new backup must
    # never get a deleted one's name, by which downloads and off-site copies know it.
    highest = 0
    for entry in os.scandir(directory):
        parsed = parse_name(entry.name)
        if parsed is not None and parsed[0] == stamp:
            highest = max(highest, parsed[1])
    return highest


def write_private_json(path: Path, data: dict[str, Any]) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, sort_keys=True, default=str)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())


def replace_json(path: Path, data: dict[str, Any], *, mode: int = PRIVATE_FILE) -> None:
    """Write ``data`` to ``path`` atomically: readers see the old file or the new one."""
    # The TEMP_PREFIX lets the next backup clear what a killed writer left in the backup folder.
    fd, name = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{path.name}.", dir=path.parent)
    temporary = Path(name)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, ensure_ascii=False, default=str)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    engine.fsync_directory(path.parent)


def delete_backup(backup: BackupFile) -> None:
    # The backup goes first: a listed backup always has its manifest, and a manifest left
    # alone by an interrupted run is cleared by the next one.
    backup.path.unlink(missing_ok=True)
    _manifest_cache.pop(os.fspath(backup.manifest_path), None)
    backup.manifest_path.unlink(missing_ok=True)
