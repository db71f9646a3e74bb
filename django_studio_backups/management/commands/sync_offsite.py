from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ... import services
from ..base import add_database_argument, command_errors


class Command(BaseCommand):
    # Mistakes in the settings surface as a one-line CommandError when the command runs.
    requires_system_checks = ()
    help = (
        "Upload the backups that have no off-site copy yet (after an outage, or after setting "
        "STUDIO_BACKUPS['OFFSITE']), then apply off-site retention."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        add_database_argument(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        verbosity = options["verbosity"]
        with command_errors(verbosity):
            report = services.sync_offsite(using=options["database"])
        if verbosity >= 1:
            for copy in report.uploaded:
                self.stdout.write(f"Uploaded {copy.object_name}")
            for name in report.deleted:
                self.stdout.write(f"Deleted {name}")
        if report.failed:
            raise CommandError(
                "\n".join(f"{name}: {reason}" for name, reason in report.failed.items())
            )
        if not report.uploaded and verbosity >= 1:
            self.stdout.write("Every backup already has an off-site copy.")
