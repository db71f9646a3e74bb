"""The ``STUDIO_BACKUPS["OFFSITE"]`` setting: read at use time like the rest of ``conf``,
with the problems that stop off-site copies (and never local backups)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from .conf import DEFAULTS, Policy, Problem, get_config, keep_problems, section, user_settings

# The ids of the problems that stop off-site copies (never local backups).
OFFSITE_NOT_A_DICT = "studio_backups.E040"
OFFSITE_UNKNOWN_STORAGE = "studio_backups.E041"
OFFSITE_UNKNOWN_COMPRESSION = "studio_backups.E042"
OFFSITE_BAD_RECIPIENTS = "studio_backups.E043"
OFFSITE_BAD_MAX_BACKUPS = "studio_backups.E044"
OFFSITE_MISSING_PACKAGES = "studio_backups.E045"
OFFSITE_BAD_KEEP = "studio_backups.E046"
OFFSITE_STORAGE_UNUSABLE = "studio_backups.E047"

OFFSITE_DEFAULTS: dict[str, Any] = {
    "STORAGE": None,
    # None keeps as many copies off-site as MAX_BACKUPS keeps locally, and KEEP's calendar.
    "MAX_BACKUPS": None,
    "KEEP": None,
    "COMPRESS": "zstd",
    "ENCRYPT_TO": None,
}


@dataclass(frozen=True)
class OffsiteConfig:
    storage: str
    max_backups: int
    compression: str | None
    recipients: tuple[str, ...]
    policy: Policy = field(default_factory=lambda: Policy(DEFAULTS["MAX_BACKUPS"]))


def offsite_problems() -> list[Problem]:
    """Mistakes in ``STUDIO_BACKUPS["OFFSITE"]``; they stop off-site copies, not backups."""
    options, found = section("OFFSITE", OFFSITE_DEFAULTS, OFFSITE_NOT_A_DICT)
    if options is None:
        return found
    storage = options["STORAGE"]
    if not isinstance(storage, str) or storage not in settings.STORAGES:
        found.append(
            Problem(
                OFFSITE_UNKNOWN_STORAGE,
                f"STUDIO_BACKUPS['OFFSITE']['STORAGE'] is {storage!r}, which is not an alias "
                "in STORAGES.",
                "Add a storage for the copies to STORAGES and name its alias here.",
            )
        )
    from . import codec

    compression = options["COMPRESS"]
    if not isinstance(compression, str | None) or compression not in codec.COMPRESSIONS:
        known = [repr(name) for name in codec.COMPRESSIONS]
        found.append(
            Problem(
                OFFSITE_UNKNOWN_COMPRESSION,
                f"STUDIO_BACKUPS['OFFSITE']['COMPRESS'] must be {', '.join(known[:-1])} or "
                f"{known[-1]}, not {options['COMPRESS']!r}.",
            )
        )
    found.extend(_recipient_problems(options["ENCRYPT_TO"]))
    max_backups = options["MAX_BACKUPS"]
    if max_backups is not None and not (
        isinstance(max_backups, int) and not isinstance(max_backups, bool) and max_backups >= 1
    ):
        found.append(
            Problem(
                OFFSITE_BAD_MAX_BACKUPS,
                "STUDIO_BACKUPS['OFFSITE']['MAX_BACKUPS'] must be a whole number of at least "
                f"1, or None, not {max_backups!r}.",
            )
        )
    found.extend(
        keep_problems(options["KEEP"], "STUDIO_BACKUPS['OFFSITE']['KEEP']", OFFSITE_BAD_KEEP)
    )
    if not any(p.id in {OFFSITE_UNKNOWN_COMPRESSION, OFFSITE_BAD_RECIPIENTS} for p in found):
        missing = codec.missing_packages(options["COMPRESS"], bool(options["ENCRYPT_TO"]))
        if missing:
            found.append(
                Problem(
                    OFFSITE_MISSING_PACKAGES,
                    f"Off-site copies need the Python packages {', '.join(missing)}.",
                    "Install django-studio-backups[offsite].",
                )
            )
    return found


# The extra that installs the client library of django-storages' backends.
STORAGE_EXTRAS = {
    "storages.backends.s3.S3Storage": "s3",
    "storages.backends.s3boto3.S3Boto3Storage": "s3",
    "storages.backends.sftpstorage.SFTPStorage": "sftp",
}


def storage_problems() -> list[Problem]:
    """E047 for an off-site storage that cannot be made: its BACKEND loaded as the first
    upload would load it, so that a missing client library (boto3, paramiko) is found by
    `check`, not at that upload. Only the checks ask: reading the settings stays cheap, and
    a page that reads them never imports a storage's client library."""
    value = user_settings()["OFFSITE"]
    if not isinstance(value, dict) or not isinstance(value.get("STORAGE"), str):
        return []
    alias = value["STORAGE"]
    return _storage_problems(alias) if alias in settings.STORAGES else []


def _storage_problems(alias: str) -> list[Problem]:
    # The storage's class is loaded as the first upload would load it: a backend whose
    # client library is missing (boto3, paramiko) is found now, not at that upload.
    entry = settings.STORAGES[alias]
    where = f"STORAGES[{alias!r}], the storage for off-site copies,"
    example = "For example {'BACKEND': 'storages.backends.sftpstorage.SFTPStorage', ...}."
    if not isinstance(entry, dict):
        return [
            Problem(
                OFFSITE_STORAGE_UNUSABLE,
                f"{where} must be a dict with a BACKEND, not a {type(entry).__name__}.",
                example,
            )
        ]
    backend = entry.get("BACKEND")
    if not isinstance(backend, str):
        # (Not the entry itself: its OPTIONS may hold a password.)
        return [Problem(OFFSITE_STORAGE_UNUSABLE, f"{where} has no BACKEND.", example)]
    cannot = f"The storage {alias!r} for off-site copies cannot be loaded: its BACKEND {backend!r}"
    try:
        loaded = import_string(backend)
    except Exception as exc:
        # Whatever the module raises at import: check runs before every manage.py command,
        # and an exception here would stop them all.
        extra = STORAGE_EXTRAS.get(backend)
        return [
            Problem(
                OFFSITE_STORAGE_UNUSABLE,
                f"{cannot} fails with {type(exc).__name__}: {exc}",
                f"Install django-studio-backups[{extra}]."
                if extra
                else "Install the package that provides it, or fix the BACKEND path.",
            )
        ]
    if not isinstance(loaded, type):
        return [
            Problem(
                OFFSITE_STORAGE_UNUSABLE,
                f"{cannot} is not a class.",
                "Name the storage's class, such as 'storages.backends.s3.S3Storage'.",
            )
        ]
    return []


def get_offsite_config(using: str | None = None) -> OffsiteConfig | None:
    """The off-site settings for ``using``; None when its backups have no off-site copies."""
    options = user_settings()
    value = options["OFFSITE"]
    # Like DIRECTORY, OFFSITE belongs to the configured database: copies of two databases
    # in one storage would prune each other.
    if value is None or (using or options["DATABASE"]) != options["DATABASE"]:
        return None
    found = offsite_problems()
    if found:
        raise ImproperlyConfigured(found[0].message)
    offsite = {**OFFSITE_DEFAULTS, **value}
    local = get_config(using).policy
    newest = offsite["MAX_BACKUPS"] or local.newest
    calendar = local.calendar if offsite["KEEP"] is None else dict(offsite["KEEP"])
    return OffsiteConfig(
        storage=offsite["STORAGE"],
        max_backups=newest,
        compression=offsite["COMPRESS"],
        recipients=tuple(offsite["ENCRYPT_TO"] or ()),
        policy=Policy(newest, calendar, local.safety, local.pre_migrate),
    )


def _recipient_problems(recipients: object) -> list[Problem]:
    if recipients is None:
        return []
    if (
        not isinstance(recipients, list | tuple)
        or not recipients
        or not all(isinstance(r, str) for r in recipients)
    ):
        return [
            Problem(
                OFFSITE_BAD_RECIPIENTS,
                "STUDIO_BACKUPS['OFFSITE']['ENCRYPT_TO'] must be a non-empty list of age "
                f"recipients, or None, not {recipients!r}.",
                "For example ['age1...'] from age-keygen, or an 'ssh-ed25519 ...' public key.",
            )
        ]
    from . import codec

    if codec.missing_packages(None, encrypted=True):
        return []  # E045 names the missing package; recipients cannot be read without it.
    found = []
    for recipient in recipients:
        try:
            codec.parse_recipient(recipient)
        except codec.CodecError as exc:
            found.append(Problem(OFFSITE_BAD_RECIPIENTS, f"STUDIO_BACKUPS['OFFSITE']: {exc}."))
    return found
