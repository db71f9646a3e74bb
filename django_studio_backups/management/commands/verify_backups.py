from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ... import services
from ..base import add_database_argument, as_json, command_errors


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
        parser.add_argument(
            "--json",
            action="store_true",
            help="Print each backup's result as JSON, for scripts (the exit status is the same).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        using = options["database"]
        verbosity = options["verbosity"]
        check = "integrity_check" if options["full"] else "quick_check"
        results = []
        with command_errors(verbosity):
            if options["names"]:
                targets = [services.find_backup(name, using=using) for name in options["names"]]
            else:
                targets = services.backups(using=using)
            for backup in targets:
                problems = services.verify(backup, full=options["full"], using=using)
                results.append({"name": backup.name, "check": check, "problems": problems})
                if options["json"]:
                    continue
                if problems:
                    # Each problem names the backup already. A bad backup is shown even
                    # with -v0: the error below only counts them.
                    self.stdout.write(f"BAD  {'; '.join(problems)}")
                elif verbosity >= 1:
                    self.stdout.write(f"OK   {backup.name}")
        if options["json"]:
            self.stdout.write(as_json([{**r, "passed": not r["problems"]} for r in results]))
        bad = sum(1 for r in results if r["problems"])
        if bad:
            raise CommandError(
                f"{bad} of {len(targets)} {backups(len(targets))} failed verification."
            )
        if options["json"] or verbosity < 1:
            return
        if not targets:
            self.stdout.write("No backups to verify.")
        elif len(targets) == 1:
            self.stdout.write("The backup passed.")
        else:
            self.stdout.write(f"All {len(targets)} backups passed.")


def backups(count: int) -> str:
    return "backup" if count == 1 else "backups"
