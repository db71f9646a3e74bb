from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from ... import services
from ..base import add_database_argument, command_errors, human_size


class Command(BaseCommand):
    # Mistakes in the settings surface as a one-line CommandError when the command runs.
    requires_system_checks: list[str] = []
    help = "List the backups, newest first."

    def add_arguments(self, parser: CommandParser) -> None:
        add_database_argument(parser)
        parser.add_argument("--json", action="store_true", help="Print JSON, for scripts.")

    def handle(self, *args: Any, **options: Any) -> None:
        with command_errors():
            rows = services.list_backups(using=options["database"])
        if options["json"]:
            self.stdout.write(json.dumps(rows, indent=2, default=str))
            return
        if not rows:
            self.stdout.write("No backups yet.")
            return
        width = max(len(row["name"]) for row in rows)
        self.stdout.write(f"{'NAME':<{width}}  {'DATE':<16}  {'SIZE':>10}  {'KIND':<11}  VERIFIED")
        for row in rows:
            self.stdout.write(
                f"{row['name']:<{width}}  {row['display']:<16}  {human_size(row['size']):>10}  "
                f"{row['kind']:<11}  {'yes' if row['verified'] else 'no'}"
            )
