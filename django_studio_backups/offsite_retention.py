"""Off-site retention: which backups deserve an off-site copy, and which copies expire. The
rules are ``retention``'s; here they weigh the local backups and the copies together.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from . import retention
from .archive import BackupFile
from .conf import Config
from .offsite_conf import OffsiteConfig
from .offsite_storage import OffsiteCopy


@dataclass(frozen=True)
class _Candidate:
    """A local backup or an off-site copy, as off-site retention weighs it."""

    name: str
    kind: str
    created_at: datetime
    good: bool


CANDIDATE_TRAITS: retention.Traits[_Candidate] = retention.Traits(
    key=lambda c: c.name,
    kind=lambda c: c.kind,
    time=lambda c: c.created_at,
    good=lambda c: c.good,
)


def wanted(
    config: Config,
    offsite: OffsiteConfig,
    local: Iterable[BackupFile],
    present: Iterable[OffsiteCopy],
) -> list[str]:
    """The names that off-site retention keeps among the local backups and the copies. A
    local backup known to be damaged (reported when it was found) is never wanted, nor one
    that retention does not count (one without a manifest, a copy of a damaged database).
    One changed since its last check is: its upload compares it with its SHA-256."""
    candidates = {
        b.name: _Candidate(b.name, b.kind, b.created_at, bool(b.manifest) and not b.failed_check)
        for b in local
    }
    candidates.update({c.name: _Candidate(c.name, c.kind, c.created_at, True) for c in present})
    pools = retention.REGULAR | {retention.SAFETY, retention.PRE_MIGRATE}
    counted = [c for c in candidates.values() if c.good and c.kind in pools]
    doomed = {
        c.name
        for c in retention.expired(counted, offsite.policy, CANDIDATE_TRAITS, config.time_zone)
    }
    return [c.name for c in counted if c.name not in doomed]


# How retention reads an off-site copy: only complete copies are listed, and each is good.
COPY_TRAITS: retention.Traits[OffsiteCopy] = retention.Traits(
    key=lambda c: c.name,
    kind=lambda c: c.kind,
    time=lambda c: c.created_at,
    good=lambda c: True,
)
