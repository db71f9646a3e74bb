"""The "pre-migrate" backup: one copy of the database before ``migrate`` changes it.

Why a ``pre_migrate`` receiver rather than code in a ``migrate`` command: Django sends the
signal after it has worked out the plan and before anything touches the schema (the syncdb
phase and the migrations both come after it), never for ``--plan``, ``--check`` or
``--prune``, and with the very plan it is about to run, so there is no second copy of
Django's target logic to drift out of date. It also keeps working when another app's
``migrate`` command takes precedence over ours. Django sends it once per installed app with
models, each time with the same ``plan`` list: remembering that list makes exactly one backup
per run, however many apps migrate. An exception raised here stops ``migrate`` before its
first schema change. Our ``migrate`` command only adds ``--skip-backup``.

Caveat: ``migrate --run-syncdb`` with no migration to apply creates the tables of apps
without migrations and makes no backup; such tables are new and hold no data yet.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import CommandError
from django.db import connections
from django.db.migrations import Migration
from django.db.models.signals import pre_migrate
from django.dispatch import receiver

from . import conf, services
from .database_file import database_file
from .exceptions import BackupError

KIND = "pre-migrate"
# The manifest key that records what the migrate run was about to do.
PLAN_KEY = "migrate_plan"

_skip: ContextVar[bool] = ContextVar("studio_backups_skip_premigrate", default=False)
# The plan of the run already handled. Holding the list keeps its id() from being reused.
_handled: list[object] = []


@contextlib.contextmanager
def skipped() -> Iterator[None]:
    """Within this block, ``migrate`` makes no pre-migrate backup (``--skip-backup``)."""
    token = _skip.set(True)
    try:
        yield
    finally:
        _skip.reset(token)


@receiver(pre_migrate, dispatch_uid="django_studio_backups.premigrate")
def back_up_before_migrate(
    sender: object,
    *,
    using: str,
    plan: list[tuple[Migration, bool]] | None = None,
    verbosity: int = 1,
    **kwargs: Any,
) -> None:
    if plan is None or (_handled and _handled[0] is plan):
        return
    _handled[:] = [plan]
    options = conf.user_settings()
    if not plan or using != options["DATABASE"] or options["BACKUP_BEFORE_MIGRATE"] is False:
        return
    out = kwargs.get("stdout") or sys.stdout
    if _skip.get():
        if verbosity >= 1:
            out.write("Migrating without a backup first (--skip-backup).\n")
        return
    if not _worth_backing_up(using):
        return
    if not services.can_lock_files():
        # No backup can run safely here (check reports W013); migrate is never blocked.
        if verbosity >= 1:
            out.write("Migrating without a backup first: this Python can lock no file.\n")
        return
    steps = [
        {"app": m.app_label, "name": m.name, "direction": "unapply" if backwards else "apply"}
        for m, backwards in plan
    ]
    try:
        backup = services.backup_now(using=using, kind=KIND, note={PLAN_KEY: steps})
    except (BackupError, ImproperlyConfigured) as exc:
        raise CommandError(
            f"Nothing was migrated: the backup before migrating failed. {exc}\n"
            "Fix the cause and run migrate again, or run `migrate --skip-backup` to migrate "
            "without a backup."
        ) from exc
    if verbosity >= 1:
        out.write(f"Backed up the database before migrating: {backup.name}\n")


def _worth_backing_up(alias: str) -> bool:
    connection = connections[alias]
    name = str(connection.settings_dict["NAME"])
    # The test runner (Django's and pytest-django's) migrates the test database after
    # putting its TEST name, or an in-memory name, into NAME: a throwaway database.
    test_name = (connection.settings_dict.get("TEST") or {}).get("NAME")
    if database_file(name).path is None or (test_name is not None and name == str(test_name)):
        return False
    # The first migrate of a new project finds a database without tables (connecting has
    # created the file, perhaps set WAL mode): nothing to lose. Django's own connection
    # also sees tables that are still only in the -wal file.
    return bool(connection.introspection.table_names())
