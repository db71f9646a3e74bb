"""What the admin's list of backups shows: a row for each backup, and the warnings above
them, from what ``services`` has recorded."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from . import exceptions, services
from .admin_texts import KIND_LABELS, OFFSITE_STATES, Notice, advice, cause, check_state
from .services import BackupFile

# The studio is told as soon as a day passes without a backup (checks waits longer).
BACKUP_MISSED_AFTER = timedelta(days=1)


@dataclass(frozen=True)
class Row:
    """A backup as the admin shows it."""

    backup: BackupFile
    display: str
    kind_label: str
    # The icon and words for its off-site copy (OFFSITE_STATES).
    offsite_icon: str = ""
    offsite_label: str = ""
    # The icon and words for what its checks found (check_state).
    check_icon: str = ""
    check_label: str = ""
    # Its last check found it damaged (or changed since it was made): no restore.
    damaged: bool = False

    @classmethod
    def of(
        cls,
        backup: BackupFile,
        show: Callable[[datetime], str],
        offsite: services.OffsiteStatus | None = None,
    ) -> Row:
        label = KIND_LABELS.get(backup.kind, gettext_lazy("unknown"))
        icon, words = OFFSITE_STATES[offsite.of(backup.name) if offsite is not None else None]
        check_icon, check_words = check_state(backup)
        return cls(
            backup,
            show(backup.created_at),
            str(label),
            icon,
            str(words),
            check_icon,
            str(check_words),
            backup.failed_check,
        )


def local_time(moment: datetime) -> str:
    # Times read back from files may carry any offset (UTC for a file's modification time).
    return services.display_time(moment)


def page_warnings() -> list[Notice]:
    """What the page warns of: damage, a missed or failed backup."""
    found = []
    damage = services.live_damage()
    if damage is not None:
        if damage.newest_good is not None:
            what_to_do = _(
                "Restore %(name)s, the newest backup that passed the full check; the "
                "restore keeps a copy of the database as it is now."
            ) % {"name": damage.newest_good.name}
        else:
            what_to_do = _("No backup has passed the full check yet: ask for expert help.")
        found.append(
            Notice(
                _(
                    "The live database is damaged: a copy made on %(when)s failed SQLite's "
                    "check. %(advice)s"
                )
                % {"when": local_time(damage.at), "advice": what_to_do},
                damage.reason,
            )
        )
    last = services.last_backup_at()
    if last is None:
        found.append(Notice(_("No backup has been made yet.")))
    elif timezone.now() - last > BACKUP_MISSED_AFTER:
        found.append(
            Notice(
                _("The last backup was made on %(when)s, more than a day ago.")
                % {"when": local_time(last)}
            )
        )
    failure = services.last_failure()
    if failure is not None and not (damage is not None and failure.problem == exceptions.DAMAGED):
        found.append(
            Notice(
                _("The last backup attempt, on %(when)s, failed. %(cause)s %(advice)s")
                % {
                    "when": local_time(failure.at),
                    "cause": cause(failure.problem),
                    "advice": advice(failure.problem),
                },
                failure.reason,
            )
        )
    return found


def offsite_status(warnings: list[Notice]) -> services.OffsiteStatus | None:
    """What was recorded of the off-site copies; None when they are not set up. Nothing
    here waits on the network: the storage is not asked."""
    try:
        if not services.offsite_configured():
            return None
    except ImproperlyConfigured as exc:
        warnings.append(
            Notice(
                _("No off-site copies are made: their settings are wrong. %(advice)s")
                % {"advice": advice(exceptions.SETTINGS)},
                str(exc),
            )
        )
        return None
    failure = services.offsite_failure()
    if failure is not None:
        warnings.append(
            Notice(
                _("The last copy to the off-site storage, on %(when)s, failed. %(advice)s")
                % {"when": local_time(failure.at), "advice": advice(exceptions.OFFSITE)},
                failure.reason,
            )
        )
    return services.offsite_status()
