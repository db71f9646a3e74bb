from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.utils import timezone

from ... import services
from ...exceptions import BackupError
from ..base import (
    add_database_argument,
    as_json,
    command_errors,
    human_size,
    quiet_when_the_reader_leaves,
)

# "yes": passed integrity_check, the check a restore runs; "quick": quick_check only so far.
VERIFIED = {"integrity_check": "yes", "quick_check": "quick"}


class Command(BaseCommand):
    # Mistakes in the settings surface as a one-line CommandError when the command runs.
    requires_system_checks = ()
    help = "List the backups, newest first."

    def add_arguments(self, parser: CommandParser) -> None:
        add_database_argument(parser)
        parser.add_argument("--json", action="store_true", help="Print JSON, for scripts.")
        parser.add_argument(
            "--offsite",
            action="store_true",
            help="List the off-site copies (STUDIO_BACKUPS['OFFSITE']) instead.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        with quiet_when_the_reader_leaves():
            self._list(options)

    def _list(self, options: dict[str, Any]) -> None:
        if options["offsite"]:
            self._list_offsite(options["database"], options["json"])
            return
        with command_errors():
            rows = services.list_backups(using=options["database"])
            failure = services.last_failure(using=options["database"])
        if options["json"]:
            self.stdout.write(as_json(rows))
            return
        if failure is not None:
            self.stderr.write(
                f"Warning: the last backup attempt failed at {failure.at:%d/%m/%Y %H:%M}: "
                f"{failure.reason}",
                style_func=self.style.WARNING,
            )
        if not rows:
            self.stdout.write("No backups yet.")
        else:
            width = max(len(row["name"]) for row in rows)
            self.stdout.write(
                f"{'NAME':<{width}}  {'DATE':<16}  {'SIZE':>10}  {'KIND':<13}  VERIFIED"
            )
            for row in rows:
                self.stdout.write(
                    f"{row['name']:<{width}}  {row['display']:<16}  "
                    f"{human_size(row['size']):>10}  {row['kind']:<13}  "
                    f"{VERIFIED.get(row['check'], 'no')}"
                )
        if services.replication_configured(using=options["database"]):
            self._replication(options["database"])

    def _replication(self, using: str | None) -> None:
        try:
            found = services.replication_status(using=using)
        except BackupError as exc:
            self.stderr.write(
                f"Warning: cannot read the replica: {exc}", style_func=self.style.WARNING
            )
            return
        if found.window is None:
            self.stdout.write("Point-in-time: the replica holds nothing yet.")
        else:
            start = services.display_time(found.window.start, using=using)
            self.stdout.write(
                f"Point-in-time: any moment from {start} to "
                f"{ago(timezone.now() - found.window.end)} can be restored "
                "(restore_backup --at TIME)."
            )
        if not found.running:
            self.stderr.write(
                "Warning: `manage.py replicate` is not running: new commits are not replicated.",
                style_func=self.style.WARNING,
            )
        elif found.lag:
            self.stdout.write(f"Replication: running, {found.lag:.0f} s behind.")
        else:
            self.stdout.write("Replication: running, up to date.")

    def _list_offsite(self, using: str | None, json: bool) -> None:
        with command_errors():
            rows = [copy.as_dict() for copy in services.offsite_copies(using=using)]
        if json:
            self.stdout.write(as_json(rows))
            return
        if not rows:
            self.stdout.write("No off-site copies yet.")
            return
        width = max(len(row["object"]) for row in rows)
        self.stdout.write(
            f"{'OBJECT':<{width}}  {'DATE':<16}  {'STORED':>10}  {'DATABASE':>10}  KIND"
        )
        for row in rows:
            self.stdout.write(
                f"{row['object']:<{width}}  {row['display']:<16}  {human_size(row['size']):>10}  "
                f"{human_size(row['database_size']):>10}  {row['kind']}"
            )


def ago(span: timedelta) -> str:
    seconds = max(0, int(span.total_seconds()))
    if seconds < 120:
        return f"{seconds} seconds ago"
    if seconds < 7200:
        return f"{seconds // 60} minutes ago"
    return f"{seconds // 3600} hours ago"
