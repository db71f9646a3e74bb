"""A front desk that registers clients one transaction at a time, as fast as it can.

Run as ``python -m bench.writer DATABASE JOURNAL_MODE OUTPUT``; it writes until SIGTERM,
then saves every attempt (start, duration, error) as JSON in OUTPUT.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from .measure import Summary

# Django's SQLite backend leaves Python's default busy timeout of 5 seconds.
BUSY_TIMEOUT = 5.0
INSERT = (
    "INSERT INTO studio_client (first_name, last_name, phone, email, birth_date, notes, "
    "created_at) VALUES (?, ?, ?, ?, NULL, '', ?)"
)


def main(argv: list[str]) -> None:
    database, journal_mode, output = Path(argv[0]), argv[1], Path(argv[2])
    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    connection = sqlite3.connect(database, timeout=BUSY_TIMEOUT, isolation_level=None)
    if journal_mode == "wal":
        # The example project's init_command; a rollback journal keeps SQLite's defaults.
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")
    starts: list[float] = []
    durations: list[float] = []
    errors: list[tuple[float, float, str]] = []
    number = 0
    print("ready", flush=True)
    while not stopping:
        number += 1
        started = time.monotonic()
        try:
            # One autocommit INSERT is one transaction, as Django's Model.save() does it.
            connection.execute(
                INSERT,
                ("Cliente", f"Mostrador {number}", "+52 662 000 0000", "", time.time()),
            )
        except sqlite3.Error as exc:
            errors.append((started, time.monotonic() - started, str(exc)))
            continue
        starts.append(started)
        durations.append(time.monotonic() - started)
    connection.close()
    output.write_text(json.dumps({"starts": starts, "durations": durations, "errors": errors}))


@dataclass(frozen=True)
class Impact:
    commits_per_second: float
    p50: float
    p99: float
    # The longest a single commit (or failed attempt) waited: the stall a user would feel.
    worst: float
    locked_errors: int
    other_errors: list[str]


def impact(path: Path, window_start: float, window_end: float) -> Impact:
    """The writer's commits that started between ``window_start`` and ``window_end``."""
    data = json.loads(path.read_text())
    durations = sorted(
        duration
        for start, duration in zip(data["starts"], data["durations"], strict=True)
        if window_start <= start <= window_end
    )
    errors = [e for e in data["errors"] if window_start <= e[0] <= window_end]
    locked = [e for e in errors if "database is locked" in e[2]]
    worst = max([*durations, *(e[1] for e in errors)], default=0.0)
    return Impact(
        commits_per_second=len(durations) / max(window_end - window_start, 1e-9),
        p50=percentile(durations, 50),
        p99=percentile(durations, 99),
        worst=worst,
        locked_errors=len(locked),
        other_errors=sorted({e[2] for e in errors if "database is locked" not in e[2]}),
    )


def percentile(ordered: list[float], percent: float) -> float:
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(percent / 100 * len(ordered)) - 1))
    return ordered[index]


def summarise(impacts: list[Impact]) -> dict[str, Summary]:
    return {
        "commits_per_second": Summary.of([i.commits_per_second for i in impacts]),
        "p50": Summary.of([i.p50 for i in impacts]),
        "p99": Summary.of([i.p99 for i in impacts]),
        "worst": Summary.of([i.worst for i in impacts]),
    }


if __name__ == "__main__":
    main(sys.argv[1:])
