"""What the admin's list of backups shows: a row for each backup, and the warnings above
them, from what ``services`` has recorded."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from math import ceil

from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone
from django.utils.timesince import timesince
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy, ngettext

from . import exceptions, services
from .admin_texts import (
    KIND_LABELS,
    OFFSITE_STATES,
    Notice,
    advice,
    cause,
    check_state,
    replication_settings_wrong,
)
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


@dataclass(frozen=True)
class Replication:
    """What the page says of the point-in-time restores: the window and the replication's
    state, from what `manage.py replicate` recorded (the replica is never asked here)."""

    window: str
    state: str
    seen: services.ReplicationSeen


def replication_summary(warnings: list[Notice]) -> Replication | None:
    """None when replication is not set up. Like ``offsite_status``, nothing here waits on
    the network."""
    try:
        if not services.replication_configured():
            return None
        seen = services.replication_seen()
    except ImproperlyConfigured as exc:
        warnings.append(Notice(replication_settings_wrong(), str(exc)))
        return None
    if not seen.running:
        warnings.append(
            Notice(
                _(
                    "Continuous replication is not running: what is saved from now on cannot "
                    "be restored to a moment. Ask whoever set up the server to start "
                    "“manage.py replicate”."
                )
            )
        )
        state = _("Replication: not running.")
    elif seen.at is None:
        state = _("Replication: running; it reports its state a few seconds after it starts.")
    elif not seen.current:
        warnings.append(
            Notice(
                _(
                    "Continuous replication has not reported since %(when)s: what the page "
                    "says of it may be out of date. If it keeps happening, ask whoever set up "
                    "the server to check the replica's storage."
                )
                % {"when": local_time(seen.at)},
                seen.error,
            )
        )
        state = _("Replication: running, not reported since %(when)s.") % {
            "when": local_time(seen.at)
        }
    else:
        lag = ceil(seen.lag or 0)
        values = {"seconds": lag, "time": clock_time(seen.at)}
        if lag == 0:
            state = _("Replication: running, up to date (as of %(time)s).") % values
        else:
            state = (
                ngettext(
                    "Replication: running, %(seconds)d second behind (as of %(time)s).",
                    "Replication: running, %(seconds)d seconds behind (as of %(time)s).",
                    lag,
                )
                % values
            )
        if seen.late:
            warnings.append(
                Notice(
                    _(
                        "The replica is %(seconds)d seconds behind: the newest changes cannot "
                        "be restored to a moment yet. If it keeps happening, ask whoever set "
                        "up the server to check the replica's storage."
                    )
                    % values
                )
            )
    return Replication(window_text(seen), state, seen)


def restorable_until(seen: services.ReplicationSeen) -> datetime | None:
    """The newest moment the replica holds, as far as is known."""
    if seen.current and seen.at is not None and seen.lag is not None:
        # Up to date then: every moment until then is in the replica, even with no
        # commit since the window's end.
        return seen.at - timedelta(seconds=seen.lag)
    return seen.end


def window_text(seen: services.ReplicationSeen) -> str:
    until = restorable_until(seen)
    if seen.start is None or until is None:
        if seen.at is None:
            return _("The moments that can be restored are not known yet.")
        return _("The replica holds nothing yet: no moment can be restored from it.")
    return _("Any moment can be restored from %(start)s to %(end)s.") % {
        "start": local_time(seen.start),
        "end": ago(until),
    }


def ago(moment: datetime) -> str:
    """ "now", "12 seconds ago", "3 hours, 5 minutes ago", or the date for a day or more."""
    elapsed = max(0, int((timezone.now() - moment).total_seconds()))
    if elapsed == 0:
        return _("now")
    if elapsed < 60:
        return ngettext("%(count)d second ago", "%(count)d seconds ago", elapsed) % {
            "count": elapsed
        }
    if elapsed < 24 * 3600:
        return _("%(time)s ago") % {"time": timesince(moment)}
    return local_time(moment)


def clock_time(moment: datetime) -> str:
    """The time of day of ``moment`` in the studio's time zone, to the second."""
    return moment.astimezone(services.time_zone()).strftime("%H:%M:%S")
