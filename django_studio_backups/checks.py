"""System checks for the ``STUDIO_BACKUPS`` setting (ids ``studio_backups.E…``/``W…``)."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.apps import AppConfig, apps
from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone

from . import conf, cron, offsite_conf, replication_conf, services
from .exceptions import BackupError

# Daily backups that have not happened for this long mean the scheduled job is not running
# (a day, and the slack of a job that runs late or a machine that was off for a night).
DAILY_JOB_STOPPED_AFTER = timedelta(days=2)

# The ids of the problems that stop no backup (conf.py has those that do): the folder may
# become writable, and the attempt then says why it failed; the others have defaults.
UNWRITABLE_DIRECTORY = "studio_backups.E006"
BAD_CRON_SCHEDULE = "studio_backups.E020"
BAD_BACKUP_ON_STARTUP = "studio_backups.E021"
BAD_BACKUP_BEFORE_MIGRATE = "studio_backups.E030"
BAD_GROWTH_WARNING = "studio_backups.E031"
BAD_NOTIFY_ADMINS = "studio_backups.E032"
BAD_HEARTBEAT_URL = "studio_backups.E033"


@checks.register()
def check_settings(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    return [
        checks.Error(problem.message, hint=problem.hint, id=problem.id)
        for problem in [
            *conf.problems(),
            *_problems_that_stop_nothing(),
            *offsite_conf.offsite_problems(),
            *offsite_conf.storage_problems(),
            *replication_conf.replication_problems(),
        ]
    ]


def _problems_that_stop_nothing() -> list[conf.Problem]:
    found = []
    options = conf.user_settings()
    schedule = options["CRON_SCHEDULE"]
    if schedule is not None and not conf.is_cron_schedule(schedule):
        found.append(
            conf.Problem(
                BAD_CRON_SCHEDULE,
                f"STUDIO_BACKUPS['CRON_SCHEDULE'] must be five cron fields, not {schedule!r}.",
                "For example '0 3 * * *' (every day at 03:00), or None to add no cron job.",
            )
        )
    for key, problem_id in (
        ("BACKUP_ON_STARTUP", BAD_BACKUP_ON_STARTUP),
        ("BACKUP_BEFORE_MIGRATE", BAD_BACKUP_BEFORE_MIGRATE),
        ("NOTIFY_ADMINS", BAD_NOTIFY_ADMINS),
    ):
        if not isinstance(options[key], bool):
            found.append(
                conf.Problem(
                    problem_id,
                    f"STUDIO_BACKUPS[{key!r}] must be True or False, not {options[key]!r}.",
                )
            )
    growth = options["GROWTH_WARNING"]
    if not conf.is_positive_number(growth):
        found.append(
            conf.Problem(
                BAD_GROWTH_WARNING,
                f"STUDIO_BACKUPS['GROWTH_WARNING'] must be a fraction above 0, not {growth!r}.",
                "For example 0.5 to warn when a backup is more than 50% larger than usual.",
            )
        )
    heartbeat = options["HEARTBEAT_URL"]
    if heartbeat is not None and not conf.is_heartbeat_url(heartbeat):
        found.append(
            conf.Problem(
                BAD_HEARTBEAT_URL,
                f"STUDIO_BACKUPS['HEARTBEAT_URL'] must be an http or https URL, not {heartbeat!r}.",
                "For example 'https://hc-ping.com/<uuid>', or None for no heartbeat.",
            )
        )
    directory = conf.directory_for()
    if directory is not None and not _writable(directory):
        found.append(
            conf.Problem(
                UNWRITABLE_DIRECTORY,
                f"The backup directory {directory} cannot be written.",
                "Create it, or give the user that runs Django write access to it.",
            )
        )
    return found


def _writable(directory: Path) -> bool:
    existing = directory
    while not existing.exists():
        existing = existing.parent
    return existing.is_dir() and os.access(existing, os.W_OK | os.X_OK)


@checks.register()
def check_file_locks(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    if services.can_lock_files():
        return []
    return [
        checks.Warning(
            "This Python has no file locks (no fcntl module, as on Windows): "
            "django_studio_backups refuses every backup and restore, and migrate runs "
            "without a backup first.",
            hint="Back up on the server, under Linux or macOS; on a developer machine this "
            "warning can be silenced with SILENCED_SYSTEM_CHECKS.",
            id="studio_backups.W013",
        )
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
                f"('0 3 * * *', {cron.JOB!r}, {cron.SKIP_CHECKS!r}) in CRONJOBS. If another "
                "scheduler runs "
                "`manage.py backup_if_needed` every day, add 'studio_backups.W020' to "
                "SILENCED_SYSTEM_CHECKS."
            ),
            id="studio_backups.W020",
        )
    ]


@checks.register(deploy=True)
def check_installed_job(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    found = cron.installed()
    if found is None:
        return []
    what = {
        "missing": "The daily backup job is not in this machine's crontab.",
        "stale": (
            "The crontab holds an earlier version of the daily backup job (another schedule, "
            "say), which django-crontab no longer finds: the backup does not run."
        ),
    }[found]
    return [
        checks.Warning(
            what,
            hint="Run `manage.py crontab add --verbosity 0` as the user whose crontab runs it.",
            id="studio_backups.W023",
        )
    ]


@checks.register()
def check_last_backup(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    if not _schedule_meant_to_run():
        return []
    try:
        last = services.last_regular_backup_at()
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
        return [
            checks.Warning(
                "No scheduled or manual backup has been made yet.",
                hint=hint,
                id="studio_backups.W022",
            )
        ]
    age = timezone.now() - last
    if age <= DAILY_JOB_STOPPED_AFTER:
        return []
    return [
        checks.Warning(
            f"The last scheduled or manual backup is {age.days} days old "
            f"(made {services.display_time(last)}).",
            hint=hint,
            id="studio_backups.W021",
        )
    ]


def _schedule_meant_to_run() -> bool:
    # A developer's machine (DEBUG on, no backup job) makes backups only before migrations:
    # no schedule there has stopped.
    return cron.is_scheduled() or not settings.DEBUG


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
    return [checks.Warning(message, hint=services.GROWTH_HINT, id="studio_backups.W030")]


@checks.register(checks.Tags.database, deploy=True)
def check_journal_mode(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    wal = _in_wal_mode()
    if wal is None or wal:
        return []
    return [
        checks.Warning(
            f"The database {conf.get_config().database_path} uses a rollback journal: a "
            "backup keeps its writers waiting for the whole copy, and a restore waits for "
            "every reader.",
            hint=(
                "Switch it to WAL mode, where backups and restores run beside the site: "
                "'init_command': 'PRAGMA journal_mode=WAL;' in the database's OPTIONS "
                "(Django 5.1+), or run `PRAGMA journal_mode=WAL;` on it once."
            ),
            id="studio_backups.W010",
        )
    ]


@checks.register(checks.Tags.database, deploy=True)
def check_wal_reset_bug(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    if not services.has_wal_reset_bug() or not _in_wal_mode():
        return []
    return [
        checks.Warning(
            f"SQLite {sqlite3.sqlite_version} has the WAL-reset bug: in WAL mode, a checkpoint "
            "that resets the -wal while another connection writes can corrupt the database.",
            hint=(
                "Use SQLite 3.51.3 or later (or 3.50.7, or 3.44.6): install the pysqlite3-binary "
                "wheel and alias it as sqlite3, or your distribution's fixed package. Until "
                "then, avoid wal_checkpoint(RESTART) and (TRUNCATE); this app uses PASSIVE."
            ),
            id="studio_backups.W011",
        )
    ]


@checks.register(checks.Tags.database, deploy=True)
def check_live_damage(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    try:
        damage = services.live_damage()
    except (ImproperlyConfigured, OSError):
        return []
    if damage is None:
        return []
    if damage.newest_good is not None:
        hint = (
            f"Restore {damage.newest_good.name}, the newest backup that passed "
            f"integrity_check: `manage.py restore_backup {damage.newest_good.name}`. The "
            "restore keeps a safety backup of the damaged database."
        )
    else:
        hint = "No backup has passed integrity_check yet; ask a SQLite expert to recover it."
    return [
        checks.Error(
            f"The live database is damaged: a copy of it made on {damage.at:%Y-%m-%d %H:%M} "
            f"failed SQLite's check ({damage.reason}).",
            hint=hint,
            id="studio_backups.E050",
        )
    ]


@checks.register()
def check_backups_beside_a_symlink(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    try:
        config = conf.get_config()
        old = services.backups_left_beside_a_link()
    except ImproperlyConfigured:
        return []
    if old is None:
        return []
    return [
        checks.Warning(
            f"Backups of {settings.DATABASES[config.alias]['NAME']} are in {old}, but the "
            f"database is the file {config.database_path}, and its backups now go to "
            f"{config.directory}.",
            hint=(
                f"Move the backup_*.db files and their .json manifests (and settings.json) "
                f"from {old.parent} to {config.directory.parent}, or set "
                f"STUDIO_BACKUPS['DIRECTORY'] to {str(old)!r}."
            ),
            id="studio_backups.W012",
        )
    ]


def _in_wal_mode() -> bool | None:
    # None without a database yet, or with settings that check_settings reports.
    try:
        return services.in_wal_mode()
    except ImproperlyConfigured:
        return None


@checks.register()
def check_replication(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    if not services.replication_configured():
        return []
    try:
        services.litestream()
    except ImproperlyConfigured:
        return []  # check_settings reports the mistake
    except BackupError as exc:
        return [
            checks.Error(
                str(exc),
                hint="Replication and restores to a moment need Litestream's binary.",
                id="studio_backups.E063",
            )
        ]
    found: list[checks.CheckMessage] = []
    if services.replication_host_key_unchecked():
        found.append(
            checks.Warning(
                "Replication over SFTP does not check the server's host key: anyone who can "
                "take the server's address can receive the studio's data.",
                hint="Set STUDIO_BACKUPS['REPLICATION']['OPTIONS']['host-key'] to the key "
                "`ssh-keyscan -t ed25519 HOST` prints (the part from 'ssh-ed25519').",
                id="studio_backups.W062",
            )
        )
    if not _schedule_meant_to_run() or services.replication_running():
        return found
    return [
        *found,
        checks.Warning(
            "STUDIO_BACKUPS['REPLICATION'] is set, but `manage.py replicate` is not running: "
            "commits are not replicated, and cannot be restored to a moment.",
            hint="Run it under systemd or supervisor (see the README's unit file).",
            id="studio_backups.W060",
        ),
    ]


@checks.register(deploy=True)
def check_replication_lag(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    # Asks Litestream for the replica's listing, a network call: only with --deploy.
    if not services.replication_configured() or not services.replication_running():
        return []  # (check_replication reports a replicate that is not running)
    try:
        reason = services.replication_trouble()
    except (ImproperlyConfigured, BackupError):
        return []  # check_settings and check_replication report it
    if reason is None:
        return []
    return [
        checks.Warning(
            f"Replication is not keeping up: {reason}.",
            hint="See the output of `manage.py replicate` (its journal under systemd).",
            id="studio_backups.W061",
        )
    ]
