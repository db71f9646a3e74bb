from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ... import services
from ..base import add_database_argument, command_errors


class Command(BaseCommand):
    # Mistakes in the settings surface as a one-line CommandError when the command runs.
    requires_system_checks = ()
    help = (
        "Replicate the database continuously through Litestream, in the foreground, with a "
        "configuration made from STUDIO_BACKUPS['REPLICATION'] (for systemd or supervisor). "
        "SIGTERM stops it cleanly."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        add_database_argument(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        with command_errors(options["verbosity"]):
            code = services.replicate(using=options["database"])
        if code != 0:
            raise CommandError(f"litestream replicate ended with exit status {code}.")
