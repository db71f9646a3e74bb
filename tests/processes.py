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


def client_writer(database: Path, stop: Path, log: Path) -> None:
    """Add clients named w0, w1, ... one commit each, every 2 ms, until ``stop`` exists.

    Each number is appended to ``log`` only once its commit has returned, so the log lists
    exactly the rows this process knows to be committed. A commit that the database refuses
    (locked past the busy timeout) is tried again with the same number.
    """
    connection = sqlite3.connect(database, timeout=30, isolation_level=None)
    ready = stop.with_suffix(".ready")
    n = 0
    with open(log, "a", encoding="ascii") as committed:
        while not stop.exists():
            try:
                connection.execute("INSERT INTO studio_client (name) VALUES (?)", (f"w{n}",))
            except sqlite3.OperationalError:
                continue
            committed.write(f"{n}\n")
            committed.flush()
            n += 1
            if n == 20:
                ready.touch()
            time.sleep(0.002)
    connection.close()


def locker(database: Path, cue: Path, hold: float) -> None:
    """Once ``cue`` exists, lock ``database`` exclusively, add the client "late", say
    "locked", and commit only ``hold`` seconds later."""
    connection = sqlite3.connect(database, timeout=60, isolation_level=None)
    print("ready", flush=True)
    while not cue.exists():
        time.sleep(0.001)
    connection.execute("BEGIN EXCLUSIVE")
    connection.execute("INSERT INTO studio_client (name) VALUES ('late')")
    print("locked", flush=True)
    time.sleep(hold)
    connection.execute("COMMIT")
    connection.close()


ACCOUNTS = 2000
TOTAL_BALANCE = ACCOUNTS * 100


def shuffler(database: Path, journal_mode: str, stop: Path) -> None:
    """Move money between accounts all over the file until ``stop`` exists.

    Every transaction rewrites two random rows (and their 2 KiB of filler), so pages
    anywhere in the file change. In WAL mode checkpoints run every few pages, a truncating
    checkpoint restarts the -wal now and then, and a VACUUM rewrites (and shrinks) the whole
    file. Any consistent snapshot holds ``ACCOUNTS`` rows whose balances add up to
    ``TOTAL_BALANCE``.
    """
    import random

    connection = sqlite3.connect(database, timeout=5, isolation_level=None)
    connection.execute(f"PRAGMA journal_mode={journal_mode}")
    connection.execute("PRAGMA wal_autocheckpoint=4")
    connection.execute("BEGIN IMMEDIATE")
    connection.execute(
        "CREATE TABLE account (id INTEGER PRIMARY KEY, balance INTEGER, filler BLOB)"
    )
    connection.executemany(
        "INSERT INTO account (id, balance, filler) VALUES (?, 100, randomblob(2048))",
        [(number,) for number in range(ACCOUNTS)],
    )
    connection.execute("COMMIT")
    ready = stop.with_suffix(".ready")
    ready.touch()
    rounds = 0
    while not stop.exists():
        rounds += 1
        payer, payee = random.sample(range(ACCOUNTS), 2)
        amount = random.randint(1, 50)
        connection.execute("BEGIN IMMEDIATE")
        connection.execute(
            "UPDATE account SET balance = balance - ?, filler = randomblob(?) WHERE id = ?",
            (amount, random.randint(500, 3000), payer),
        )
        connection.execute(
            "UPDATE account SET balance = balance + ?, filler = randomblob(?) WHERE id = ?",
            (amount, random.randint(500, 3000), payee),
        )
        connection.execute("COMMIT")
        if rounds % 150 == 0:
            connection.execute("VACUUM")
        elif rounds % 50 == 0 and journal_mode == "wal":
            connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
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
    elif command == "client-writer":
        client_writer(Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]))
    elif command == "locker":
        locker(Path(sys.argv[2]), Path(sys.argv[3]), float(sys.argv[4]))
    elif command == "shuffler":
        shuffler(Path(sys.argv[2]), sys.argv[3], Path(sys.argv[4]))
    elif command == "service":
        django_call(sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else None)
    elif command == "service-on-cue":
        django_call(sys.argv[3], sys.argv[4] if len(sys.argv) > 4 else None, Path(sys.argv[2]))
    else:
        raise SystemExit(f"unknown command {command}")
