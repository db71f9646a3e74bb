"""What the off-site work recorded in the state file, for pages that must not wait on the
network: the copies the last upload or sync found, and the backups whose copy is under way
or failed (see ``offsite.py``, which records them)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.utils import timezone

from . import archive, state
from .conf import Config, get_config

logger = logging.getLogger("django_studio_backups")

# A copy on its way for longer than this was cut short (its process stopped): the page says
# so, and the next daily job or sync_offsite makes it.
STALLED_AFTER = timedelta(hours=2)


@dataclass(frozen=True)
class Status:
    """What the last uploads and syncs recorded of the off-site copies (no network)."""

    # None until an upload or sync has recorded what the storage holds.
    copied: frozenset[str] | None
    # Since when each copy has been on its way (None: unknown).
    pending: dict[str, datetime | None]
    failed: dict[str, str]

    def of(self, name: str) -> str | None:
        """ "pending", "stalled" (pending for longer than an upload takes: it was cut short),
        "failed" or "copied" for the backup ``name``; None if it has no copy and none is on
        its way (one older than off-site retention keeps)."""
        if name in self.pending:
            since = self.pending[name]
            if since is not None and timezone.now() - since > STALLED_AFTER:
                return "stalled"
            return "pending"
        if name in self.failed:
            return "failed"
        if self.copied is None:
            return "unknown"
        return "copied" if name in self.copied else None


def status(*, using: str | None = None) -> Status:
    config = get_config(using)
    try:
        data = state.read(config.state_file)
    except state.UnreadableState as exc:
        logger.warning("Ignoring the state file: %s", exc)
        data = {}
    return Status(
        frozenset(names(data[state.OFFSITE_COPIES])) if state.OFFSITE_COPIES in data else None,
        {name: time_of(since) for name, since in mapping(data.get(state.OFFSITE_PENDING)).items()},
        {str(k): str(v) for k, v in mapping(data.get(state.OFFSITE_FAILED_COPIES)).items()},
    )


def note(
    config: Config,
    *,
    copies: Iterable[str] | None = None,
    added: Iterable[str] = (),
    pending: Iterable[str] = (),
    done: Iterable[str] = (),
    failed: dict[str, str] | None = None,
) -> None:
    """Record, for the admin, what is known of the copies (see ``status``)."""
    failed = failed or {}
    pending, done = list(pending), list(done)
    since = state.isoformat(timezone.now().astimezone(config.time_zone))

    def change(data: dict[str, Any]) -> None:
        waiting = mapping(data.get(state.OFFSITE_PENDING))
        failures = mapping(data.get(state.OFFSITE_FAILED_COPIES))
        waiting.update(dict.fromkeys(pending, since))
        for name in [*done, *failed]:
            waiting.pop(name, None)
        for name in [*done, *pending]:
            failures.pop(name, None)
        failures.update(failed)
        if copies is not None:
            data[state.OFFSITE_COPIES] = sorted(copies, key=archive.name_order)
        elif added and state.OFFSITE_COPIES in data:
            known = {*names(data[state.OFFSITE_COPIES]), *added}
            data[state.OFFSITE_COPIES] = sorted(known, key=archive.name_order)
        # Only backups that still exist here need a word on the page.
        local = {b.name for b in archive.list_backup_files(config.directory, config.time_zone)}
        data[state.OFFSITE_PENDING] = {k: v for k, v in waiting.items() if k in local}
        data[state.OFFSITE_FAILED_COPIES] = {k: v for k, v in failures.items() if k in local}

    state.change(config.state_file, change)


def time_of(value: object) -> datetime | None:
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


def names(value: object) -> list[str]:
    return [str(name) for name in value] if isinstance(value, list | dict) else []


def mapping(value: object) -> dict[str, Any]:
    return {str(k): v for k, v in value.items()} if isinstance(value, dict) else {}
