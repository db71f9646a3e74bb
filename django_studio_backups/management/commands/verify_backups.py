from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ... import services
from ..base import add_database_argument, command_errors


class Command(BaseCommand):
    # Mistakes in the settings surface as a one-line CommandError when the command runs.
    requires_system_checks = ()
    help = (
        "Re-check backups against their manifest's SHA-256 and with SQLite's quick_check "
        "(integrity_check with --full). Exits non-zero if any backup is bad."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        add_database_argument(parser)
        parser.add_argument("names", nargs="*", help="Backups to check (default: all).")
        parser.add_argument(
            "--full", action="store_true", help="Run integrity_check instead of quick_check."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        using = options["database"]
        with command_errors():
            if options["names"]:
                targets = [services.find_backup(name, using=using) for name in options["names"]]
            else:
                targets = services.backups(using=using)
            bad = 0
            for backup in targets:
                problems = services.verify(backup, full=options["full"], using=using)
                if problems:
                    bad += 1
                    # (Each problem names the backup already.)
                    self.stdout.write(f"BAD  {'; '.join(problems)}")
                else:
                    self.stdout.write(f"OK   {backup.name}")
        if bad:
            raise CommandError(
                f"{bad} of {len(targets)} {backups(len(targets))} failed verification."
            )
        if not targets:
            self.stdout.write("No backups to verify.")
        elif len(targets) == 1:
            self.stdout.write("The backup passed.")
        else:
            self.stdout.write(f"All {len(targets)} backups passed.")


def backups(count: int) -> str:
    return "backup" if count == 1 else "backups"
