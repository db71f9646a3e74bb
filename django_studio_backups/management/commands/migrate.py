"""Django's ``migrate``, plus ``--skip-backup``.

The pre-migrate backup itself is made by a ``pre_migrate`` receiver (see ``premigrate``), so
it happens whichever app's ``migrate`` command runs. Django takes a command from the first
app in INSTALLED_APPS that has one, and django.contrib has none called ``migrate``: this one
replaces Django's own wherever the app is listed, unless an app listed above it has its own.
"""

from __future__ import annotations

import contextlib
from typing import Any

from django.core.management.base import CommandParser
from django.core.management.commands import migrate

from ... import premigrate
from ..base import failures_printed_once


class Command(migrate.Command):
    def add_arguments(self, parser: CommandParser) -> None:
        super().add_arguments(parser)
        parser.add_argument(
            "--skip-backup",
            action="store_true",
            help=(
                "Migrate without the backup of the database that "
                "STUDIO_BACKUPS['BACKUP_BEFORE_MIGRATE'] makes first."
            ),
        )

    def handle(self, *args: Any, **options: Any) -> None:
        # Without the option, an enclosing premigrate.skipped() block still applies.
        context = premigrate.skipped() if options["skip_backup"] else contextlib.nullcontext()
        with context, failures_printed_once():
            super().handle(*args, **options)
