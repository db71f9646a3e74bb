"""A front desk that commits one numbered row every few milliseconds, and logs each commit.

Run as ``python -m bench.paced_writer DATABASE LOG [INTERVAL]``; it writes until it is
killed. Each line of LOG is "id time seconds" (the wall time when the commit returned, and
how long it took), appended only once the commit has returned: LOG lists exactly the rows
this process knows to be committed, also after a kill -9. Ids count from 1 without a gap.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .writer import BUSY_TIMEOUT

TABLE = "bench_commit"
INTERVAL = 0.002
CREATE = f"CREATE TABLE IF NOT EXISTS {TABLE} (id INTEGER PRIMARY KEY, written_at REAL NOT NULL)"
INSERT = f"INSERT INTO {TABLE} (id, written_at) VALUES (?, ?)"


def main(argv: list[str]) -> None:
    database, log = Path(argv[0]), Path(argv[1])
    interval = float(argv[2]) if len(argv) > 2 else INTERVAL
    connection = sqlite3.connect(database, timeout=BUSY_TIMEOUT, isolation_level=None)
    # The example project's init_command.
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")
    connection.execute(CREATE)
    out = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    print("ready", flush=True)
    number = 1
    next_at = time.monotonic()
    while True:
        started = time.monotonic()
        try:
            # One autocommit INSERT is one transaction, as Django's Model.save() does it; a
            # refused one is tried again with the same id, so that the ids have no hole.
            connection.execute(INSERT, (number, time.time()))
        except sqlite3.Error as exc:
            os.write(out, f"! {time.time():.6f} {time.monotonic() - started:.6f} {exc}\n".encode())
            continue
        took = time.monotonic() - started
        # One write(2) per line: a kill can cut the log after a line, not inside one.
        os.write(out, f"{number} {time.time():.6f} {took:.6f}\n".encode())
        number += 1
        next_at += interval
        pause = next_at - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        else:
            next_at = time.monotonic()


@dataclass(frozen=True)
class CommitLog:
    ids: list[int]
    # When each commit returned (time.time()), and how long it took, in seconds.
    times: list[float]
    durations: list[float]
    errors: list[str]

    def time_of(self, commit_id: int) -> float:
        return self.times[self.ids.index(commit_id)]


def read_log(path: Path) -> CommitLog:
    ids: list[int] = []
    times: list[float] = []
    durations: list[float] = []
    errors: list[str] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        fields = line.split(" ", 3)
        if fields[0] == "!" and len(fields) == 4:
            errors.append(fields[3])
        elif len(fields) == 3:
            ids.append(int(fields[0]))
            times.append(float(fields[1]))
            durations.append(float(fields[2]))
    return CommitLog(ids, times, durations, errors)


if __name__ == "__main__":
    main(sys.argv[1:])
