from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from ... import services
from ..base import add_database_argument, command_errors, progress_line


class Command(BaseCommand):
    # Mistakes in the settings surface as a one-line CommandError when the command runs.
    requires_system_checks = ()
    help = "Back up the SQLite database now and print the new backup's path."

    def add_arguments(self, parser: CommandParser) -> None:
        add_database_argument(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        verbosity = options["verbosity"]
        with command_errors(verbosity), progress_line(self.stdout, verbosity) as progress:
            backup = services.backup_now(using=options["database"], progress=progress)
        if verbosity >= 1:
            self.stdout.write(str(backup.path))
