"""The ``STUDIO_BACKUPS`` setting, read at use time so that ``override_settings`` works."""

from __future__ import annotations

import re
import urllib.parse
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from .database_file import database_file

DEFAULTS: dict[str, Any] = {
    "DATABASE": "default",
    "DIRECTORY": None,
    "MAX_BACKUPS": 20,
    # Calendar retention on top of MAX_BACKUPS: {"DAILY": 7, "WEEKLY": 4, "MONTHLY": 12}
    # keeps the newest backup of each of the last 7 days, 4 weeks and 12 months with one.
    "KEEP": None,
    # Safety backups (before a restore) and pre-migrate backups, kept under counts of their own.
    "MAX_SAFETY_BACKUPS": 3,
    "MAX_PRE_MIGRATE_BACKUPS": 3,
    "TIME_ZONE": None,
    "STATE_FILE": None,
    "LOCK_TIMEOUT": 120.0,
    # When django-crontab runs the daily job (a five-field cron time); None adds no job.
    "CRON_SCHEDULE": "0 3 * * *",
    "BACKUP_ON_STARTUP": False,
    # A "pre-migrate" backup whenever `migrate` is about to apply or unapply a migration.
    "BACKUP_BEFORE_MIGRATE": True,
    # Warn when a backup is more than this fraction larger than the median of the seven before.
    "GROWTH_WARNING": 0.5,
    # Mail every failure to settings.ADMINS (see notify.py).
    "NOTIFY_ADMINS": True,
    # A heartbeat monitor (healthchecks.io and the like): URL after each daily backup that
    # succeeded, URL/fail after any failure.
    "HEARTBEAT_URL": None,
    # Off-site copies in a Django storage: see offsite_conf.py.
    "OFFSITE": None,
    # Continuous replication through Litestream, for point-in-time restores: see
    # replication_conf.py.
    "REPLICATION": None,
}

SQLITE_ENGINE = "django.db.backends.sqlite3"
# Five fields of numbers, names, "*", ranges, steps and lists; crontab itself checks the
# values. "@daily" is refused because django-crontab finds its lines by their five fields.
CRON_FIELDS = re.compile(r"[\w*/,-]+(?:[ \t]+[\w*/,-]+){4}", re.ASCII)

# The ids of the problems that stop backups: problems() finds them, get_config() refuses to
# work with them, and checks reports them (with the problems that stop nothing, its own).
NOT_SQLITE = "studio_backups.E001"
IN_MEMORY = "studio_backups.E002"
UNKNOWN_ALIAS = "studio_backups.E003"
BAD_MAX_BACKUPS = "studio_backups.E004"
UNKNOWN_TIME_ZONE = "studio_backups.E005"
UNKNOWN_KEYS = "studio_backups.E007"
BAD_LOCK_TIMEOUT = "studio_backups.E008"
UNSAFE_URI = "studio_backups.E009"
BAD_KEEP = "studio_backups.E010"
BAD_KIND_LIMIT = "studio_backups.E011"

# The periods KEEP may name, and how each groups a backup's time (in the studio's zone).
PERIODS = ("DAILY", "WEEKLY", "MONTHLY", "YEARLY")


@dataclass(frozen=True)
class Policy:
    """Which backups retention keeps (see retention.py)."""

    newest: int
    calendar: Mapping[str, int] = field(default_factory=dict)
    safety: int = 3
    pre_migrate: int = 3


@dataclass(frozen=True)
class Config:
    alias: str
    database_path: Path
    directory: Path
    max_backups: int
    time_zone: zoneinfo.ZoneInfo
    state_file: Path
    # How long to wait for another backup or restore, and for the database's own locks (in
    # rollback-journal mode a busy writer can keep a reader out for longer than Django's 5 s).
    lock_timeout: float
    growth_warning: float
    policy: Policy = field(default_factory=lambda: Policy(DEFAULTS["MAX_BACKUPS"]))


@dataclass(frozen=True)
class Problem:
    id: str
    message: str
    hint: str | None = None


def is_heartbeat_url(value: object) -> bool:
    if not isinstance(value, str):
        return False
    parts = urllib.parse.urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def user_settings() -> dict[str, Any]:
    value = getattr(settings, "STUDIO_BACKUPS", None) or {}
    return {**DEFAULTS, **value}


def section(
    key: str, defaults: Mapping[str, Any], problem_id: str
) -> tuple[dict[str, Any] | None, list[Problem]]:
    """The dict setting ``STUDIO_BACKUPS[key]`` with ``defaults`` filled in, and the
    mistakes in its shape: (None, []) when it is None; (None, [not a dict]); (the options,
    [unknown keys]) otherwise."""
    value = user_settings()[key]
    if value is None:
        return None, []
    if not isinstance(value, dict):
        return None, [
            Problem(problem_id, f"STUDIO_BACKUPS[{key!r}] must be a dict or None, not {value!r}.")
        ]
    options = {**defaults, **value}
    unknown = sorted(set(options) - set(defaults), key=str)
    if not unknown:
        return options, []
    return options, [
        Problem(
            problem_id,
            f"Unknown STUDIO_BACKUPS[{key!r}] keys: {', '.join(map(str, unknown))}.",
            f"Known keys: {', '.join(defaults)}.",
        )
    ]


def problems(using: str | None = None) -> list[Problem]:
    """Every mistake in the settings that stops backups of ``using``, found without touching
    the disk, so that ``get_config()`` can afford to look for them on every call."""
    found: list[Problem] = []
    options = user_settings()
    unknown = sorted(set(options) - set(DEFAULTS))
    if unknown:
        found.append(
            Problem(
                UNKNOWN_KEYS,
                f"Unknown STUDIO_BACKUPS keys: {', '.join(unknown)}.",
                f"Known keys: {', '.join(DEFAULTS)}.",
            )
        )
    alias = using or options["DATABASE"]
    database = settings.DATABASES.get(alias)
    if database is None:
        found.append(
            Problem(
                UNKNOWN_ALIAS,
                f"STUDIO_BACKUPS uses the database alias {alias!r}, which is not in DATABASES.",
            )
        )
    elif database.get("ENGINE") != SQLITE_ENGINE:
        found.append(
            Problem(
                NOT_SQLITE,
                f"The database {alias!r} uses {database.get('ENGINE')!r}; "
                "django_studio_backups backs up SQLite databases only.",
            )
        )
    elif (file := database_file(database.get("NAME"))).path is None:
        found.append(
            Problem(
                IN_MEMORY,
                f"The database {alias!r} is in memory; there is no file to back up.",
                "Give DATABASES[...]['NAME'] a file path.",
            )
        )
    elif file.unsafe:
        found.append(
            Problem(
                UNSAFE_URI,
                f"The database {alias!r} is opened with "
                f"{file.unsafe}: backups and restores could "
                "not lock it the way Django's connections do.",
                "Leave vfs, nolock and immutable out of the file: URI in NAME.",
            )
        )
    max_backups = options["MAX_BACKUPS"]
    if isinstance(max_backups, bool) or not isinstance(max_backups, int) or max_backups < 1:
        found.append(
            Problem(
                BAD_MAX_BACKUPS,
                f"STUDIO_BACKUPS['MAX_BACKUPS'] must be a whole number of at least 1, "
                f"not {max_backups!r}.",
            )
        )
    found.extend(keep_problems(options["KEEP"], "STUDIO_BACKUPS['KEEP']", BAD_KEEP))
    # (At least 1: the newest is the undo that a restore or a migrate just offered.)
    for key in ("MAX_SAFETY_BACKUPS", "MAX_PRE_MIGRATE_BACKUPS"):
        if not _is_count(options[key], least=1):
            found.append(
                Problem(
                    BAD_KIND_LIMIT,
                    f"STUDIO_BACKUPS[{key!r}] must be a whole number of at least 1, "
                    f"not {options[key]!r}.",
                )
            )
    lock_timeout = options["LOCK_TIMEOUT"]
    if (
        isinstance(lock_timeout, bool)
        or not isinstance(lock_timeout, int | float)
        or lock_timeout < 0
    ):
        found.append(
            Problem(
                BAD_LOCK_TIMEOUT,
                "STUDIO_BACKUPS['LOCK_TIMEOUT'] must be a number of seconds, "
                f"not {lock_timeout!r}.",
            )
        )
    zone_name = options["TIME_ZONE"] or settings.TIME_ZONE or "UTC"
    try:
        zoneinfo.ZoneInfo(zone_name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, TypeError):
        found.append(
            Problem(
                UNKNOWN_TIME_ZONE,
                f"The time zone {zone_name!r} is unknown.",
                "Use an IANA name such as 'America/Hermosillo'.",
            )
        )
    return found


def get_config(using: str | None = None) -> Config:
    """The settings for backing up ``using``; ``ImproperlyConfigured`` names any mistake."""
    found = problems(using)
    if found:
        raise ImproperlyConfigured(found[0].message)
    options = user_settings()
    alias = using or options["DATABASE"]
    database_path = _database_path(alias)
    zone = zoneinfo.ZoneInfo(options["TIME_ZONE"] or settings.TIME_ZONE or "UTC")
    directory = _directory(options, alias, database_path)
    if alias != options["DATABASE"]:
        state_file = directory / "settings.json"
    elif options["STATE_FILE"]:
        state_file = Path(options["STATE_FILE"]).absolute()
    else:
        state_file = database_path.parent / "settings.json"
    return Config(
        alias=alias,
        database_path=database_path,
        directory=directory,
        max_backups=options["MAX_BACKUPS"],
        time_zone=zone,
        state_file=state_file,
        lock_timeout=float(options["LOCK_TIMEOUT"]),
        # checks reports a bad value; until it is fixed, warn at the default.
        growth_warning=float(
            options["GROWTH_WARNING"]
            if is_positive_number(options["GROWTH_WARNING"])
            else DEFAULTS["GROWTH_WARNING"]
        ),
        policy=Policy(
            newest=options["MAX_BACKUPS"],
            calendar=dict(options["KEEP"] or {}),
            safety=options["MAX_SAFETY_BACKUPS"],
            pre_migrate=options["MAX_PRE_MIGRATE_BACKUPS"],
        ),
    )


def _is_count(value: object, *, least: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


def keep_problems(value: object, where: str, problem_id: str) -> list[Problem]:
    if value is None:
        return []
    if (
        not isinstance(value, dict)
        or not set(value) <= set(PERIODS)
        or not all(_is_count(count, least=0) for count in value.values())
    ):
        return [
            Problem(
                problem_id,
                f"{where} must map {', '.join(PERIODS)} to whole numbers of at least 0, "
                f"not {value!r}.",
                'For example {"DAILY": 7, "WEEKLY": 4, "MONTHLY": 12}, or None.',
            )
        ]
    return []


def state_file_for() -> Path | None:
    """Where the state file of the configured database is, even while settings that stop
    backups are wrong; None when the settings do not say."""
    options = user_settings()
    if options["STATE_FILE"]:
        return Path(options["STATE_FILE"]).absolute()
    database = settings.DATABASES.get(options["DATABASE"]) or {}
    if database.get("ENGINE") != SQLITE_ENGINE:
        return None
    path = database_file(database.get("NAME")).path
    return path.parent / "settings.json" if path is not None else None


def directory_for(using: str | None = None) -> Path | None:
    """Where the backups of ``using`` go, even while other settings are wrong; None when
    there is no database file to derive it from."""
    options = user_settings()
    alias = using or options["DATABASE"]
    if any(p.id in {UNKNOWN_ALIAS, NOT_SQLITE, IN_MEMORY, UNSAFE_URI} for p in problems(using)):
        return None
    return _directory(options, alias, _database_path(alias))


def is_cron_schedule(value: object) -> bool:
    return isinstance(value, str) and CRON_FIELDS.fullmatch(value) is not None


def _database(alias: str) -> dict[str, Any]:
    database: dict[str, Any] = settings.DATABASES[alias]
    return database


def _database_path(alias: str) -> Path:
    path = database_file(_database(alias)["NAME"]).path
    # problems() reports E002 for a database in memory before get_config() gets here.
    assert path is not None
    return path


def _directory(options: dict[str, Any], alias: str, database_path: Path) -> Path:
    # DIRECTORY and STATE_FILE belong to the configured database. Another alias keeps its
    # backups and state in a folder named after it, so two databases in one folder never
    # share (prune, or restore from) one another's backups.
    if alias != options["DATABASE"]:
        return database_path.parent / "backups" / alias
    if options["DIRECTORY"]:
        return Path(options["DIRECTORY"]).absolute()
    return database_path.parent / "backups"


def is_positive_number(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float) and value > 0
