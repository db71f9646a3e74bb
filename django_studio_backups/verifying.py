"""Checking backups after they were made: Verify, the daily job's full check of the day's
backup and its checks again of old ones, and adopting a file put back without a manifest.
Each outcome is written into the backup's manifest (``archive.record_check``).

``services`` is the public face of it; nothing here is public API.
"""

from __future__ import annotations

import logging
import sqlite3
from datetime import datetime
from typing import Any

from django.utils import timezone

from . import __version__, archive, engine, notify, signals, state
from .archive import BackupFile
from .backing_up import (
    clear_damage_alarm,
    exclusive,
    raise_damage_alarm,
    record_failure,
    recorded_migrations,
)
from .conf import Config
from .exceptions import DAMAGED, BackupFailed

logger = logging.getLogger("django_studio_backups")


def check_newest_in_full(config: Config) -> bool:
    """The daily job's full check, on a day whose backup was made already (by hand, before
    a migrate or a restore): the newest backup gets integrity_check unless it passed it.

    False when that backup was damaged after it was made (which is reported): the day then
    needs another backup.
    """
    today = timezone.now().astimezone(config.time_zone).date()
    # Today's backups: one dated in the future (a clock set wrong, a file copied in) is not.
    todays = [
        b
        for b in archive.list_backup_files(config.directory, config.time_zone)
        if b.created_at.astimezone(config.time_zone).date() == today
    ]
    if any(b.verified for b in todays):
        return True
    newest = next((b for b in todays if b.manifest and not b.failed_check), None)
    if newest is None:
        # Gone, failed a check (reported when it was found), or foreign: the day has no
        # backup to rely on.
        logger.warning("Today's backup is missing or not intact; making a new one")
        return False
    problems, faithful = verify(config, newest, full=True)
    if problems and faithful:
        # The file is the copy that was made, so the database it was copied from failed.
        raise BackupFailed(raise_damage_alarm(config, "; ".join(problems)), problem=DAMAGED)
    if problems:
        # The file changed after it was made: the disk may be failing, and someone must know.
        record_failure(
            config,
            "daily",
            f"{newest.name} was damaged after it was made ({'; '.join(problems)}); "
            "making a new backup",
            DAMAGED,
        )
        return False
    clear_damage_alarm(config)
    return True


def verify(config: Config, backup: BackupFile, full: bool) -> tuple[list[str], bool]:
    """(the problems found, whether the file is byte for byte the one its manifest
    describes); the result is recorded in the manifest. A file without one is adopted."""
    if not backup.manifest:
        return adopt(config, backup), False
    problems = []
    expected = backup.sha256
    faithful = False
    try:
        if expected is not None and backup.manifest.get("size") != backup.path.stat().st_size:
            problems.append(
                f"{backup.name} is {backup.path.stat().st_size} bytes; "
                f"its manifest says {backup.manifest.get('size')}"
            )
        elif expected is not None and engine.sha256_of(backup.path) != expected:
            problems.append(f"{backup.name} does not match the SHA-256 in its manifest")
        else:
            faithful = expected is not None
        engine.check(backup.path, full=full)
    except engine.EngineError as exc:
        problems.append(str(exc))
    except OSError as exc:
        problems.append(f"Could not read {backup.name}: {exc}")
    # A file whose SHA-256 still matches is the file that passed integrity_check before
    # (even if its modification time changed, in a copy to another disk, say).
    last = backup.manifest.get("verification")
    still_full = (
        faithful
        and isinstance(last, dict)
        and last.get("ok") is True
        and last.get("check") == archive.FULL_CHECK
    )
    archive.record_check(
        backup,
        ok=not problems,
        check=archive.FULL_CHECK if full or still_full else "quick_check",
        at=state.isoformat(timezone.now().astimezone(config.time_zone)),
        problems=problems,
    )
    return problems, faithful


def adopt(config: Config, backup: BackupFile) -> list[str]:
    """Give a file with a backup's name and no manifest (a copy put back from a drive) a
    manifest: of an "adopted" backup, counted from then on, once it passes integrity_check
    as a Django database; of a damaged file otherwise. The problems found."""
    problems = []
    try:
        engine.check(backup.path, full=True)
        if not engine.has_table(backup.path, "django_migrations"):
            problems.append(f"{backup.name} is a SQLite database, but not a Django one")
        elif not of_this_project(recorded_migrations(backup.path)):
            problems.append(
                f"{backup.name} is the database of another project: its migrations are not "
                "this project's"
            )
    except engine.EngineError as exc:
        problems.append(str(exc))
    except (OSError, sqlite3.Error) as exc:
        problems.append(f"Could not read {backup.name}: {exc}")
    now = state.isoformat(timezone.now().astimezone(config.time_zone))
    manifest: dict[str, Any] = {
        "format": 1,
        "kind": "unknown" if problems else "adopted",
        "created_at": state.isoformat(backup.created_at.astimezone(config.time_zone)),
        "adopted_at": now,
    }
    try:
        stat = backup.path.stat()
        if not problems:
            manifest.update(
                size=stat.st_size,
                sha256=engine.sha256_of(backup.path),
                sqlite_version=sqlite3.sqlite_version,
                app_version=__version__,
                source={"alias": config.alias, "path": str(config.database_path)},
                migrations=recorded_migrations(backup.path),
            )
        manifest["verification"] = {
            "ok": not problems,
            "check": archive.FULL_CHECK,
            "at": now,
            "problems": problems,
            "mtime_ns": stat.st_mtime_ns,
        }
        archive.replace_json(backup.manifest_path, manifest)
    except (OSError, sqlite3.Error, engine.EngineError) as exc:
        problems.append(f"Could not give {backup.name} a manifest: {exc}")
    return problems


def of_this_project(recorded: list[tuple[str, str]]) -> bool:
    """Whether a database with these applied migrations belongs to this project: every app
    it migrated is installed here, and it shares migrations with this code."""
    from django.db.migrations.loader import MigrationLoader

    known = set(MigrationLoader(None, ignore_no_migrations=True).disk_migrations)
    apps_here = {app for app, _ in known}
    return bool(set(recorded) & known) and all(app in apps_here for app, _ in recorded)


def reverify_oldest(config: Config, count: int, made: BackupFile | None) -> bool:
    """Check in full again the ``count`` backups whose last check is the oldest (never the
    one just ``made``); False if one of them is found damaged, which is reported."""

    def last_checked(backup: BackupFile) -> datetime:
        check = backup.manifest.get("verification")
        try:
            moment = datetime.fromisoformat(str(check["at"]))  # type: ignore[index]
        except (TypeError, KeyError, ValueError):
            return archive.EARLIEST  # never checked, or unreadably: first in line
        return moment if moment.tzinfo is not None else archive.EARLIEST

    # Under the folder's lock: retention must not delete a backup while it is checked.
    try:
        with exclusive(config, BackupFailed):
            listed = archive.list_backup_files(config.directory, config.time_zone)
            candidates = [
                b
                for b in listed
                if b.manifest and not b.failed_check and (made is None or b.path != made.path)
            ]
            # Files changed since their check first: they count for nothing until checked.
            chosen = sorted(
                candidates, key=lambda b: (not b.changed_since_checked, last_checked(b))
            )
            found = [(b, verify(config, b, full=True)[0]) for b in chosen[:count]]
    except BackupFailed as exc:
        logger.warning("Did not check old backups again: %s", exc)
        return True
    damaged = [(backup, problems) for backup, problems in found if problems]
    for backup, problems in damaged:
        reason = f"{backup.name} was found damaged when checked again: {'; '.join(problems)}"
        logger.error("%s", reason)
        signals.send(signals.backup_failed, kind="daily", reason=reason, using=config.alias)
        notify.failure("daily", reason, database=config.database_path)
    return not damaged
