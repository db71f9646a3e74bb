"""What the admin's Backups pages say: kinds, what a failure means and what to do about it,
the state of each backup's checks and off-site copy, and what a restore takes away. All in
the user's language; the exact reasons stay for the "Technical detail" line."""

from __future__ import annotations

from dataclasses import dataclass

from django.utils.formats import number_format
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.text import capfirst
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from . import exceptions, services
from .exceptions import BackupError
from .services import BackupFile

KIND_LABELS = {
    "daily": gettext_lazy("daily"),
    "manual": gettext_lazy("manual"),
    "safety": gettext_lazy("safety"),
    "pre-migrate": gettext_lazy("before migrating"),
    "damaged": gettext_lazy("damaged"),
    "adopted": gettext_lazy("put back"),
    "point-in-time": gettext_lazy("from the replica"),
}

# What happened and what to do, for each kind of trouble (exceptions.FOLDER, ...): what the
# studio reads. The exact reason, meant for whoever runs the server, follows as the detail.
CAUSES = {
    exceptions.FOLDER: gettext_lazy("The backup folder cannot be written."),
    exceptions.SPACE: gettext_lazy("The disk is full."),
    exceptions.BUSY: gettext_lazy("The database or the backup folder stayed busy for too long."),
    exceptions.DAMAGED: gettext_lazy("SQLite found damage."),
    exceptions.SETTINGS: gettext_lazy("The backup settings are wrong."),
    exceptions.OFFSITE: gettext_lazy("The off-site storage could not be used."),
    exceptions.OTHER: gettext_lazy("Something unexpected went wrong."),
}
ADVICE = {
    exceptions.FOLDER: gettext_lazy(
        "Ask whoever set up the server to check that the backup folder exists and that the "
        "site may write in it."
    ),
    exceptions.SPACE: gettext_lazy(
        "Ask whoever set up the server to free some space, or to keep the backups on a larger disk."
    ),
    exceptions.BUSY: gettext_lazy(
        "Try again in a few minutes. If it keeps happening, tell whoever set up the server."
    ),
    exceptions.DAMAGED: gettext_lazy(
        "Do not restore a damaged backup: choose the newest one marked as verified."
    ),
    exceptions.SETTINGS: gettext_lazy(
        "Ask whoever set up the server to run “manage.py check” and correct what it reports."
    ),
    exceptions.OFFSITE: gettext_lazy(
        "The backups on this server are not affected. If it keeps happening, ask whoever set "
        "up the server to check the off-site storage."
    ),
    exceptions.OTHER: gettext_lazy(
        "Ask whoever set up the server to look at the technical detail."
    ),
}
# How each backup's off-site copy stands (offsite_record.Status.of): the icon and its words.
OFFSITE_STATES = {
    "copied": ("admin/img/icon-yes.svg", gettext_lazy("Copied")),
    "pending": ("admin/img/icon-clock.svg", gettext_lazy("Being copied")),
    "failed": ("admin/img/icon-alert.svg", gettext_lazy("The copy failed")),
    "stalled": (
        "admin/img/icon-alert.svg",
        gettext_lazy("Not copied yet: the next daily backup copies it"),
    ),
    "unknown": (
        "admin/img/icon-unknown.svg",
        gettext_lazy("Not known yet: the next daily backup looks"),
    ),
    None: ("admin/img/icon-no.svg", gettext_lazy("No")),
}


@dataclass(frozen=True)
class Notice:
    """A warning on the Backups page: what happened and what to do, then the detail."""

    text: str
    detail: str | None = None


def with_detail(text: str, detail: str) -> SafeString:
    """A message with its technical detail on a line of its own."""
    return format_html(
        '{}<br><small class="studio-backups-detail">{} {}</small>',
        text,
        _("Technical detail:"),
        detail,
    )


def cause(problem: str) -> str:
    return str(CAUSES.get(problem, CAUSES[exceptions.OTHER]))


def advice(problem: str) -> str:
    return str(ADVICE.get(problem, ADVICE[exceptions.OTHER]))


def replication_settings_wrong() -> str:
    return _("Continuous replication does not run: its settings are wrong. %(advice)s") % {
        "advice": advice(exceptions.SETTINGS)
    }


def explained(error: BackupError) -> str:
    return f"{cause(error.problem)} {advice(error.problem)}"


def change_text(change: services.Change) -> str:
    """ "Clients: 1,204 now → 1,180 in the backup (24 will be lost)", in the user's language."""
    model = capfirst(change.model._meta.verbose_name_plural)
    if change.now is None or change.in_backup is None:
        return _("%(model)s: not counted (the database is large or busy)") % {"model": model}
    values = {
        "model": model,
        "now": number_format(change.now, force_grouping=True),
        "then": number_format(change.in_backup, force_grouping=True),
        "difference": number_format(abs(change.now - change.in_backup), force_grouping=True),
    }
    if change.now > change.in_backup:
        return (
            _("%(model)s: %(now)s now → %(then)s in the backup (%(difference)s will be lost)")
            % values
        )
    return (
        _("%(model)s: %(now)s now → %(then)s in the backup (%(difference)s will come back)")
        % values
    )


def check_state(backup: BackupFile) -> tuple[str, str]:
    """The icon and words that say what is known of a backup's soundness."""
    if backup.verified:
        return "admin/img/icon-yes.svg", _("Verified: it passed the full check, as a restore does.")
    if backup.failed_check:
        return "admin/img/icon-no.svg", _("Damaged: its last check failed. Do not restore it.")
    if backup.changed_since_checked:
        return "admin/img/icon-unknown.svg", _(
            "Unknown: the file changed since it was last checked. Verify checks it again."
        )
    if not backup.manifest:
        return "admin/img/icon-unknown.svg", _(
            "Unknown: it came without its .json file. Verify checks it, and keeps it as a "
            "backup if it is good."
        )
    if backup.check:
        return "admin/img/icon-unknown.svg", _(
            "Passed the quick check. The full check, the one a restore runs, has not run on "
            "it yet: the daily backup and Verify run it."
        )
    return "admin/img/icon-no.svg", _("Not checked.")
