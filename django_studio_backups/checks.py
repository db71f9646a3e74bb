"""System checks for the ``STUDIO_BACKUPS`` setting (ids ``studio_backups.E…``/``W…``)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from django.apps import AppConfig, apps
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone

from . import conf, cron, engine, growth, services

# Daily backups that have not happened for this long mean the scheduled job is not running.
STALE_AFTER = timedelta(days=2)


@checks.register()
def check_settings(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    return [
        checks.Error(problem.message, hint=problem.hint, id=problem.id)
        for problem in [*conf.problems(), *conf.offsite_problems()]
    ]


@checks.register()
def check_cron_job(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    if not apps.is_installed("django_crontab") or cron.is_scheduled():
        return []
    return [
        checks.Warning(
            "django_crontab is installed, but CRONJOBS has no daily backup job.",
            hint=(
                "Set STUDIO_BACKUPS['CRON_SCHEDULE'] to a cron time such as '0 3 * * *', or list "
                f"('0 3 * * *', {cron.JOB!r}) in CRONJOBS. If another scheduler runs "
                "`manage.py backup_if_needed` every day, add 'studio_backups.W020' to "
                "SILENCED_SYSTEM_CHECKS."
            ),
            id="studio_backups.W020",
        )
    ]


@checks.register()
def check_last_backup(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    try:
        last = services.last_backup_at()
        failure = services.last_failure()
    except (ImproperlyConfigured, OSError):
        # check_settings reports why the settings or the backup folder cannot be used.
        return []
    hint = "Check that the daily job runs (see the README), or run `manage.py backup_if_needed`."
    if failure is not None:
        hint = f"The last attempt failed at {failure.at:%Y-%m-%d %H:%M}: {failure.reason}"
    if last is None:
        # A new project has no backup until its first scheduled run: only a failed attempt
        # is worth a warning then.
        if failure is None:
            return []
        return [checks.Warning("No backup has been made yet.", hint=hint, id="studio_backups.W022")]
    age = timezone.now() - last
    if age <= STALE_AFTER:
        return []
    return [
        checks.Warning(
            f"The last successful backup is {age.days} days old "
            f"(made {services.get_last_backup_display()}).",
            hint=hint,
            id="studio_backups.W021",
        )
    ]


@checks.register()
def check_growth(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    try:
        message = services.growth_warning()
    except (ImproperlyConfigured, OSError):
        # check_settings reports why the settings or the backup folder cannot be used.
        return []
    if message is None:
        return []
    return [checks.Warning(message, hint=growth.HINT, id="studio_backups.W030")]


@checks.register()
def check_journal_mode(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    try:
        config = conf.get_config()
        header = engine.read_live_header(config.database_path)
    except (ImproperlyConfigured, engine.NotADatabase, OSError):
        # No database yet, or settings that check_settings reports.
        return []
    # Bytes 18-19 of the header are 2 in WAL mode, 1 with a rollback journal.
    if header[18] == 2:
        return []
    return [
        checks.Warning(
            f"The database {config.database_path} uses a rollback journal: a backup keeps its "
            "writers waiting for the whole copy, and a restore waits for every reader.",
            hint=(
                "Switch it to WAL mode, where backups and restores run beside the site: "
                "'init_command': 'PRAGMA journal_mode=WAL;' in the database's OPTIONS "
                "(Django 5.1+), or run `PRAGMA journal_mode=WAL;` on it once."
            ),
            id="studio_backups.W010",
        )
    ]
