"""Which backups to keep (and which off-site copies: the same rules, their own numbers).

- Daily, manual and adopted backups: the newest ``MAX_BACKUPS``; with ``KEEP``, also the
  newest backup of each of the last N days, ISO weeks, months and years that have a backup
  (restic and borg count the same way), on the studio's calendar.
- Safety backups (before a restore) and pre-migrate backups: the newest few of each kind,
  under counts of their own. Making one never deletes a backup of another kind.
- Never deleted: a backup in use (the one being restored, the one just made), the newest
  that passed the full check, and whatever is not a good backup of a known kind (a file
  that failed its check, one without a manifest, one changed since its check). Those stay
  for someone to look at, and never count as one of the backups kept; of the copies this
  app made that failed their check (the copies of a damaged database, day after day while
  it stays damaged), the newest ``KEEP_DAMAGED`` stay, so that a long incident cannot fill
  the disk.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Hashable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Generic, TypeVar

from .conf import Policy

Item = TypeVar("Item")

# The kinds that MAX_BACKUPS and the calendar keep.
REGULAR = frozenset({"daily", "manual", "adopted"})
# The kinds kept under counts of their own.
SAFETY = "safety"
PRE_MIGRATE = "pre-migrate"
# Fetched from the replica for a restore: as many are kept as safety backups.
POINT_IN_TIME = "point-in-time"
# Copies this app made that failed their check, kept for someone to look at.
KEEP_DAMAGED = 3
# How each period of KEEP groups a backup's time (in the studio's zone).
PERIODS: dict[str, Callable[[datetime], Hashable]] = {
    "DAILY": lambda t: t.date(),
    "WEEKLY": lambda t: t.isocalendar()[:2],
    "MONTHLY": lambda t: (t.year, t.month),
    "YEARLY": lambda t: t.year,
}


@dataclass(frozen=True)
class Traits(Generic[Item]):
    """How to read an item: its identity, its kind, when it was made, whether it is good."""

    key: Callable[[Item], Hashable]
    kind: Callable[[Item], str]
    time: Callable[[Item], datetime]
    good: Callable[[Item], bool]
    # Made by this app, and failed its check.
    damaged: Callable[[Item], bool] = lambda item: False


def expired(
    items: Sequence[Item],
    policy: Policy,
    traits: Traits[Item],
    zone: tzinfo,
    *,
    protected: Collection[Hashable] = (),
    kinds: Collection[str] | None = None,
) -> list[Item]:
    """The items to delete. ``kinds`` limits the pools looked at: a safety backup only
    makes room among safety backups."""
    ordered = sorted(items, key=traits.time, reverse=True)
    good = [item for item in ordered if traits.good(item)]
    pools: list[tuple[Collection[str], int, Mapping[str, int]]] = [
        (REGULAR, policy.newest, policy.calendar),
        ({SAFETY}, policy.safety, {}),
        ({POINT_IN_TIME}, policy.safety, {}),
        ({PRE_MIGRATE}, policy.pre_migrate, {}),
    ]
    doomed: list[Item] = []
    for pool, newest, calendar in pools:
        if kinds is not None and not set(kinds) & set(pool):
            continue
        members = [item for item in good if traits.kind(item) in pool]
        doomed += _beyond(members, newest, calendar, traits, zone, set(protected))
    if kinds is None:
        damaged = [item for item in ordered if traits.damaged(item)]
        doomed += _beyond(damaged, KEEP_DAMAGED, {}, traits, zone, set(protected))
    return doomed


def kept_by_calendar(
    items: Sequence[Item], calendar: Mapping[str, int], traits: Traits[Item], zone: tzinfo
) -> set[Hashable]:
    """The keys of the newest item of each of the last N periods that have one, for each
    period of ``calendar``; ``items`` are newest first."""
    kept: set[Hashable] = set()
    for period, count in calendar.items():
        group = PERIODS[period]
        seen: set[Hashable] = set()
        for item in items:
            bucket = group(traits.time(item).astimezone(zone))
            if bucket in seen:
                continue
            if len(seen) == count:
                break
            seen.add(bucket)
            kept.add(traits.key(item))
    return kept


def _beyond(
    items: Sequence[Item],
    newest: int,
    calendar: Mapping[str, int],
    traits: Traits[Item],
    zone: tzinfo,
    protected: set[Hashable],
) -> list[Item]:
    # Protected items stay and count among the newest; the calendar's picks stay on top.
    by_calendar = kept_by_calendar(items, calendar, traits, zone)
    survivors = sum(1 for item in items if traits.key(item) in protected)
    doomed = []
    for item in items:
        if traits.key(item) in protected:
            continue
        if survivors < newest:
            survivors += 1
        elif traits.key(item) not in by_calendar:
            doomed.append(item)
    return doomed
