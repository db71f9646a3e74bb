from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils.text import capfirst
from django.utils.timesince import timesince

from ... import services
from ..base import add_database_argument, command_errors, human_size, progress_line


class Command(BaseCommand):
    # Mistakes in the settings surface as a one-line CommandError when the command runs.
    requires_system_checks = ()
    help = (
        "Restore the database from a backup, after a safety backup of the current data. "
        "Sessions live in the database, so users may have to log in again."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        add_database_argument(parser)
        parser.add_argument(
            "backup",
            nargs="?",
            help="A backup's name, or its path in the backup folder (or --latest).",
        )
        parser.add_argument(
            "--latest",
            action="store_true",
            help="Restore the newest backup (with --offsite, the newest off-site copy).",
        )
        parser.add_argument(
            "--at",
            metavar="TIME",
            default=None,
            help="Restore the database as it was at TIME (ISO 8601; without a UTC offset, "
            "in the studio's time zone; or 'latest'), from the replica "
            "(STUDIO_BACKUPS['REPLICATION']).",
        )
        parser.add_argument(
            "--noinput",
            "--no-input",
            action="store_false",
            dest="interactive",
            help="Do not ask for confirmation.",
        )
        parser.add_argument(
            "--offsite",
            action="store_true",
            help="Fetch the backup from its off-site copy first (see list_backups --offsite).",
        )
        parser.add_argument(
            "--identity",
            default=None,
            help="The age identity file (from age-keygen) that decrypts the off-site copy.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        using = options["database"]
        verbosity = options["verbosity"]
        if options["identity"] and not options["offsite"]:
            raise CommandError("--identity is for off-site copies; add --offsite.")
        chosen = [bool(options["backup"]), options["latest"], options["at"] is not None]
        if sum(chosen) != 1:
            raise CommandError("Name the backup to restore, or pass --latest or --at (one).")
        if options["at"] is not None and options["offsite"]:
            raise CommandError("--at restores from the replica, not from off-site copies.")
        with command_errors(verbosity):
            if options["at"] is not None:
                name = self._fetched(options["at"], using, verbosity)
            else:
                name = options["backup"] or self._latest(using, options["offsite"], verbosity)
            if options["offsite"]:
                name = services.download_offsite(
                    name, identity=options["identity"], using=using
                ).name
                if verbosity >= 1:
                    self.stdout.write(
                        f"Fetched the off-site copy as {name}, checked against its manifest."
                    )
            backup = services.find_backup(name, using=using)
            self._warn_of_migrations(backup)
            if options["interactive"]:
                self._summary(backup, services.row_changes(backup, using=using), using)
                if not self._confirmed():
                    self.stdout.write("Cancelled.")
                    return
            with progress_line(self.stdout, verbosity) as progress:
                report = services.restore(backup.name, using=using, progress=progress)
        if verbosity >= 1:
            self.stdout.write(f"Restored {report.restored.name}.")
            if report.safety_backup is not None:
                self.stdout.write(
                    f"Safety backup of the previous data: {report.safety_backup.name}"
                )
        if report.warning is not None:
            self.stderr.write(
                f"Warning: {report.warning}. The restore stands; check the database with "
                "`manage.py dbshell` and PRAGMA quick_check once it is quiet.",
                style_func=self.style.WARNING,
            )

    def _fetched(self, text: str, using: str | None, verbosity: int) -> str:
        moment = services.parse_moment(text, using=using)
        backup = services.fetch_moment(moment, using=using)
        if verbosity >= 1:
            when = backup.created_at.isoformat(timespec="seconds")
            self.stdout.write(
                f"Fetched the database as it was at {when} from the replica as {backup.name}."
            )
            if moment is not None and moment - backup.created_at >= timedelta(seconds=1):
                asked = moment.astimezone(backup.created_at.tzinfo).isoformat(timespec="seconds")
                self.stdout.write(
                    f"That is the replica's last change before {asked}: it holds nothing newer."
                )
        return backup.name

    def _latest(self, using: str | None, offsite: bool, verbosity: int) -> str:
        if offsite:
            name = services.latest_offsite_copy(using=using).name
        else:
            name = services.latest_backup(using=using).name
        if verbosity >= 1:
            self.stdout.write(f"The latest backup is {name}.")
        return name

    def _warn_of_migrations(self, backup: services.BackupFile) -> None:
        missing, unknown = services.migration_difference(backup)
        if missing:
            self.stderr.write(
                "Warning: the backup predates these migrations; run migrate after the "
                "restore: " + ", ".join(f"{app}.{name}" for app, name in missing),
                style_func=self.style.WARNING,
            )
        if unknown:
            self.stderr.write(
                "Warning: the backup has migrations this code does not know: "
                + ", ".join(f"{app}.{name}" for app, name in unknown),
                style_func=self.style.WARNING,
            )

    def _summary(
        self, backup: services.BackupFile, changes: list[services.Change], using: str | None
    ) -> None:
        made = services.display_time(backup.created_at, using=using)
        self.stdout.write(
            f"This replaces the live database with {backup.name} ({human_size(backup.size)}), "
            f"made on {made} ({timesince(backup.created_at)} ago): everything saved since "
            "is replaced."
        )
        for change in changes:
            name = capfirst(str(change.model._meta.verbose_name_plural))
            if change.now is None or change.in_backup is None:
                self.stdout.write(f"  {name}: not counted (the database is large or busy)")
                continue
            difference = abs(change.now - change.in_backup)
            outcome = "will be lost" if change.now > change.in_backup else "will come back"
            self.stdout.write(
                f"  {name}: {change.now:,} now -> {change.in_backup:,} in the backup "
                f"({difference:,} {outcome})"
            )
        if not changes:
            self.stdout.write("  Every table holds as many rows now as in the backup.")
        self.stdout.write(
            "A safety backup of the current data is made first. Users may have to log in again."
        )

    def _confirmed(self) -> bool:
        try:
            answer = input("Restore? [y/N] ")
        except EOFError:
            answer = ""
        return answer.strip().lower() in {"y", "yes"}
