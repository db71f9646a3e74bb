"""The admin's "Restore to a moment…" page: its date-and-time picker, limited to the window
that ``replicate`` last recorded, and what it tells a person of a moment that cannot be
restored. The replica itself decides: ``services.fetch_moment`` checks the moment again."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django import forms
from django.core.exceptions import ValidationError
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from . import services
from .admin_texts import explained, with_detail
from .exceptions import RestoreFailed

# What a browser's datetime-local input sends and shows, to the second.
INPUT_FORMAT = "%Y-%m-%dT%H:%M:%S"
SHOWN_FORMAT = "%d/%m/%Y %H:%M:%S"


class MomentForm(forms.Form):
    moment = forms.CharField(
        label=gettext_lazy("Moment"),
        error_messages={"required": gettext_lazy("Choose the date and time to restore.")},
    )

    def __init__(self, seen: services.ReplicationSeen, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.zone = services.time_zone()
        attrs = {"type": "datetime-local", "step": "1"}
        if seen.start is not None:
            attrs["min"] = self.input_value(seen.start)
        # While replicate runs, any moment until now can be restored; once it stopped, the
        # replica ends where it last recorded (later moments would give the same data).
        latest = timezone.now() if seen.running else seen.end
        if latest is not None:
            attrs["max"] = self.input_value(latest)
        self.fields["moment"].widget = forms.TextInput(attrs=attrs)
        self.fields["moment"].help_text = _("In the studio's time (%(zone)s), to the second.") % {
            "zone": self.zone
        }

    def input_value(self, moment: datetime) -> str:
        # Rounded up: the second that holds a commit must still be allowed.
        local = moment.astimezone(self.zone)
        if local.microsecond:
            local += timedelta(seconds=1)
        return local.strftime(INPUT_FORMAT)

    def clean_moment(self) -> datetime | None:
        text = self.cleaned_data["moment"]
        try:
            return services.parse_moment(text)
        except services.BadMoment:
            example = timezone.now().astimezone(self.zone).strftime("%Y-%m-%dT%H:%M")
            raise ValidationError(
                _(
                    "“%(text)s” is not a date and time. Pick one in the calendar, or type it "
                    "as %(example)s."
                )
                % {"text": text, "example": example}
            ) from None


def refused(moment: datetime | None, seen: services.ReplicationSeen) -> str:
    """Why the replica refused ``moment`` (``services.BadMoment``), for a person."""
    zone = services.time_zone()
    if moment is not None and moment > timezone.now():
        return _("%(when)s has not happened yet: choose a moment in the past.") % {
            "when": moment.astimezone(zone).strftime(SHOWN_FORMAT)
        }
    if moment is not None and seen.start is not None and moment < seen.start:
        return _(
            "The replica does not go back to %(when)s: the oldest moment it can restore is "
            "%(start)s. Choose a later moment, or restore an older backup from the list."
        ) % {
            "when": moment.astimezone(zone).strftime(SHOWN_FORMAT),
            "start": seen.start.astimezone(zone).strftime(SHOWN_FORMAT),
        }
    return _(
        "The replica cannot restore that moment. Check that “manage.py replicate” is running, "
        "then choose a moment inside the window shown."
    )


def not_fetched(exc: RestoreFailed) -> str:
    """What the admin says when the moment could not be fetched."""
    return with_detail(
        _("The database could not be fetched from the replica; nothing was changed. %(explained)s")
        % {"explained": explained(exc)},
        str(exc),
    )


def older_than_chosen(moment: datetime | None, fetched: datetime) -> str | None:
    """What a person must know when the replica's last change before ``moment`` (what was
    fetched, dated ``fetched``) is older than the moment; None when it is not."""
    if moment is None or moment - fetched < timedelta(seconds=1):
        return None
    zone = services.time_zone()
    return _(
        "The replica holds no change between %(when)s and the moment chosen, %(asked)s: the "
        "backup holds the data as it was at %(when)s. If “manage.py replicate” was not "
        "running then, what was saved after it is not in the replica; the safety backup "
        "made before the restore keeps it."
    ) % {
        "when": fetched.astimezone(zone).strftime(SHOWN_FORMAT),
        "asked": moment.astimezone(zone).strftime(SHOWN_FORMAT),
    }
