"""The daily backup job that django-crontab runs, and its entry in ``settings.CRONJOBS``.

django-crontab logs whatever a job raises under its own logger and still exits 0, and cron
sends the output wherever the crontab line says. So the job itself logs every failure with
its cause, records it in the state file and sends ``backup_failed``; it raises nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shlex
import subprocess
from pathlib import Path

from django.apps import apps
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone

from . import conf, notify, services, signals, state
from .exceptions import SETTINGS, BackupError

logger = logging.getLogger("django_studio_backups")

JOB = "django_studio_backups.cron.daily_backup"
# django-crontab's `crontab run` runs Django's system checks before the job, and any error,
# this app's or another's, would stop the job before it could say why. The job checks what
# it needs as it goes, and records what stops it; `manage.py check` still reports everything.
SKIP_CHECKS = "--skip-checks"
CRONTAB_TIMEOUT = 10.0


def daily_backup(*, daily_job: bool = True) -> Path | None:
    """Make today's backup unless it exists: its path, or None (none needed, or failed).

    ``daily_job``: see ``services.backup_if_needed``.
    """
    try:
        backup = services.backup_if_needed(daily_job=daily_job)
    except BackupError:
        # backup_if_needed() has logged it, recorded it and sent backup_failed.
        return None
    except ImproperlyConfigured as exc:
        # Settings that stop backups: the failure goes into the state file that the settings
        # name, or the one beside the database file, where the admin looks for it.
        logger.error("The daily backup cannot run: %s", exc)
        state_file = conf.state_file_for()
        if state_file is not None:
            now = timezone.now()
            state.record_failure(
                state_file, state.BACKUP, f"The daily backup cannot run: {exc}", now, SETTINGS
            )
        signals.send(
            signals.backup_failed,
            kind="daily",
            reason=str(exc),
            using=conf.user_settings()["DATABASE"],
        )
        notify.failure("daily", f"The daily backup cannot run: {exc}", database=None)
        return None
    except Exception as exc:
        # A bug: still a failed daily backup, and one that must be seen.
        logger.exception("The daily backup failed unexpectedly")
        services.record_failure(f"The daily backup failed unexpectedly: {exc!r}", kind="daily")
        return None
    return backup.path if backup is not None else None


def is_scheduled() -> bool:
    return any(_is_ours(job) for job in getattr(settings, "CRONJOBS", None) or [])


def add_job() -> None:
    """Add the daily job to ``settings.CRONJOBS``, unless the project lists it or opted out."""
    schedule = conf.user_settings()["CRON_SCHEDULE"]
    if not apps.is_installed("django_crontab") or not conf.is_cron_schedule(schedule):
        return
    if is_scheduled():
        return
    # django-crontab names the job in the crontab line by a hash of its JSON; every process
    # (``crontab add`` and cron's ``crontab run``) builds this same tuple, so the hashes match.
    # A string third item is the suffix of the job's line.
    settings.CRONJOBS = [
        *(getattr(settings, "CRONJOBS", None) or []),
        (schedule, JOB, SKIP_CHECKS),
    ]


def installed() -> str | None:
    """How the machine's crontab stands against the daily job in ``CRONJOBS``: "missing" (no
    line of this project's), "stale" (a line for another version of the job, such as an
    earlier schedule: django-crontab will not find it), or None (installed, or nothing to
    compare)."""
    job = next((j for j in getattr(settings, "CRONJOBS", None) or [] if _is_ours(j)), None)
    if job is None or not apps.is_installed("django_crontab"):
        return None
    from django_crontab.app_settings import Settings

    crontab = Settings(settings)
    try:
        listed = subprocess.run(
            [*shlex.split(crontab.CRONTAB_EXECUTABLE), "-l"],
            capture_output=True,
            text=True,
            timeout=CRONTAB_TIMEOUT,
        )
    except (OSError, subprocess.SubprocessError):
        return None  # no crontab program here: nothing to compare
    marker = f"# {crontab.CRONTAB_COMMENT}"
    ours = [line for line in listed.stdout.splitlines() if line.rstrip().endswith(marker)]
    # django-crontab names a job in its line by the MD5 of the job's JSON.
    wanted = hashlib.md5(json.JSONEncoder(sort_keys=True).encode(job).encode()).hexdigest()
    if any(f" crontab run {wanted} " in f"{line} " for line in ours):
        return None
    return "stale" if any(" crontab run " in line for line in ours) else "missing"


def _is_ours(job: object) -> bool:
    return isinstance(job, list | tuple) and len(job) > 1 and job[1] == JOB
