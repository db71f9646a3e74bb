from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from ... import services
from ..base import add_database_argument, command_errors, progress_line


class Command(BaseCommand):
    # Mistakes in the settings surface as a one-line CommandError when the command runs.
    requires_system_checks = ()
    help = "Back up the SQLite database unless a backup was already made today."

    def add_arguments(self, parser: CommandParser) -> None:
        add_database_argument(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        using = options["database"]
        verbosity = options["verbosity"]
        with command_errors(verbosity):
            with progress_line(self.stdout, verbosity) as progress:
                backup = services.backup_if_needed(using=using, progress=progress, daily_job=True)
            if verbosity < 1:
                return
            if backup is None:
                last = services.get_last_backup_display(using=using)
                self.stdout.write(f"Today's backup already exists (last backup: {last}).")
            else:
                self.stdout.write(str(backup.path))
