"""Programs the tests run as separate processes: a writer, and a backup or restore to kill.

Run as ``python -m tests.processes writer DB MODE STOPFILE`` and so on.
``service-on-cue CUEFILE FUNCTION [ARG]`` prints "ready" once Django is set up, then waits
for CUEFILE to exist before the call, so a test can time a kill from the start of the work
itself, or release many processes at the same moment.
"""

from __future__ import annotations

import sqlite3
import sys
import time
from pathlib import Path


def writer(database: Path, journal_mode: str, stop: Path) -> None:
    """Insert rows in pairs, one transaction per pair, until ``stop`` exists.

    Any consistent snapshot therefore holds an even number of rows.
    """
    connection = sqlite3.connect(database, timeout=5, isolation_level=None)
    connection.execute(f"PRAGMA journal_mode={journal_mode}")
    connection.execute("CREATE TABLE IF NOT EXISTS pair (id INTEGER PRIMARY KEY, n INTEGER)")
    ready = stop.with_suffix(".ready")
    n = 0
    while not stop.exists():
        connection.execute("BEGIN IMMEDIATE")
        connection.execute("INSERT INTO pair (n) VALUES (?)", (n,))
        connection.execute("INSERT INTO pair (n) VALUES (?)", (n,))
        connection.execute("COMMIT")
        n += 1
        if n == 20:
            ready.touch()
        time.sleep(0.0005)
    connection.close()


def django_call(function: str, argument: str | None, cue: Path | None = None) -> None:
    import django

    django.setup()
    from django_studio_backups import services

    if cue is not None:
        print("ready", flush=True)
        while not cue.exists():
            time.sleep(0.001)
    if argument is None:
        result = getattr(services, function)()
    else:
        result = getattr(services, function)(argument)
    print(result, flush=True)


if __name__ == "__main__":
    command = sys.argv[1]
    if command == "writer":
        writer(Path(sys.argv[2]), sys.argv[3], Path(sys.argv[4]))
    elif command == "service":
        django_call(sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else None)
    elif command == "service-on-cue":
        django_call(sys.argv[3], sys.argv[4] if len(sys.argv) > 4 else None, Path(sys.argv[2]))
    else:
        raise SystemExit(f"unknown command {command}")
