"""What the running ``replicate`` last learnt from Litestream, recorded in the state file for
pages that must not wait on the network: asking an S3 or SFTP replica for the moments it can
restore is a listing of the storage, which may take as long as the storage likes.

``replication._watch`` records it every few seconds; a record older than STALE_AFTER says
that no one has asked for a while (see ``Seen.current``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.utils import timezone

from . import state
from .conf import Config

if TYPE_CHECKING:
    from .replication import Status

logger = logging.getLogger("django_studio_backups")

# The watcher asks at least every 15 s, and one asking may take a minute on a slow storage
# (replication.QUERY_TIMEOUT): a record older than this is out of date.
STALE_AFTER = timedelta(minutes=2)


@dataclass(frozen=True)
class Seen:
    """What is known of the replication without asking Litestream."""

    # `manage.py replicate` holds its lock on this machine.
    running: bool
    # When it last asked Litestream successfully; None: never.
    at: datetime | None
    # The moments the replica could restore then; None: unknown, or an empty replica.
    start: datetime | None
    end: datetime | None
    # Seconds of commits the replica lacked then.
    lag: float | None
    # The replica is late beyond this (LAG_WARNING).
    lag_warning: float
    # Why asking failed since then, if it did.
    error: str | None = None

    @property
    def current(self) -> bool:
        """Running, and what it recorded is recent enough to show as the present state."""
        return self.running and self.at is not None and timezone.now() - self.at <= STALE_AFTER

    @property
    def late(self) -> bool:
        return self.current and self.lag is not None and self.lag > self.lag_warning


def note(config: Config, seen: Status) -> None:
    """Record what ``replication.status`` just said."""
    window = seen.window

    def change(data: dict[str, Any]) -> None:
        data[state.REPLICATION_SEEN] = {
            "at": state.isoformat(timezone.now()),
            "start": _time_text(window.start) if window is not None else None,
            "end": _time_text(window.end) if window is not None else None,
            "lag": seen.lag,
        }

    state.change(config.state_file, change)


def note_failure(config: Config, reason: str) -> None:
    """Record why Litestream could not be asked, keeping what it said last."""

    def change(data: dict[str, Any]) -> None:
        recorded = data.get(state.REPLICATION_SEEN)
        data[state.REPLICATION_SEEN] = {
            **(recorded if isinstance(recorded, dict) else {}),
            "error": reason,
        }

    state.change(config.state_file, change)


def seen(config: Config, *, running: bool, lag_warning: float) -> Seen:
    try:
        recorded = state.read(config.state_file).get(state.REPLICATION_SEEN)
    except state.UnreadableState as exc:
        logger.warning("Ignoring the state file: %s", exc)
        recorded = None
    if not isinstance(recorded, dict):
        recorded = {}
    lag = recorded.get("lag")
    return Seen(
        running=running,
        at=_time(recorded.get("at")),
        start=_time(recorded.get("start")),
        end=_time(recorded.get("end")),
        lag=float(lag) if isinstance(lag, int | float) else None,
        lag_warning=lag_warning,
        error=str(recorded["error"]) if recorded.get("error") else None,
    )


def _time_text(moment: datetime) -> str:
    # To the microsecond: the window's ends are a commit's time, and a restore to the
    # second before the last one would leave it out.
    return moment.isoformat()


def _time(value: object) -> datetime | None:
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None
