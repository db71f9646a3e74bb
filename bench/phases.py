"""Where the time of a backup and of a restore goes, phase by phase, in one process.

Run as ``python -m bench.phases LIVE SCRATCH``: LIVE is a database this may overwrite.
Prints one JSON object of phase name -> seconds.
"""

from __future__ import annotations

import json
import sqlite3
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from django_studio_backups import engine, engine_restore


def timed(results: dict[str, float], name: str, action: Callable[[], object]) -> None:
    started = time.monotonic()
    action()
    results[name] = time.monotonic() - started


def check_with(path: Path, pragma: str, mmap_size: int, cache_kib: int) -> None:
    connection = engine.open_snapshot_file(path)
    try:
        connection.execute(f"PRAGMA mmap_size={mmap_size}")
        connection.execute(f"PRAGMA cache_size=-{cache_kib}")
        rows = connection.execute(f"PRAGMA {pragma}").fetchall()
    finally:
        connection.close()
    if rows != [("ok",)]:
        raise RuntimeError(f"{pragma} of {path}: {rows}")


def main(argv: list[str]) -> None:
    live, scratch = Path(argv[0]), Path(argv[1])
    copy = scratch / "phases-copy.db"
    copy.unlink(missing_ok=True)
    results: dict[str, float] = {}
    timed(
        results,
        "backup: copy_database (file and -wal by sendfile, chunked flush)",
        lambda: engine.copy_database(live, copy),
    )
    timed(results, "backup: quick_check of the copy", lambda: engine.check(copy))
    timed(results, "backup: sha256 of the copy", lambda: engine.sha256_of(copy))

    def both() -> None:
        hasher = threading.Thread(target=engine.sha256_of, args=(copy,))
        hasher.start()
        engine.check(copy)
        hasher.join()

    timed(results, "backup: quick_check and sha256 side by side", both)
    timed(results, "restore: integrity_check of the backup", lambda: engine.check(copy, full=True))
    timed(
        results,
        "restore: integrity_check, mmap + 256 MiB cache",
        lambda: check_with(copy, "integrity_check", 1 << 40, 256 * 1024),
    )
    timed(
        results,
        "restore: restore_into the live database",
        lambda: engine_restore.restore_into(copy, live),
    )

    def overlapped() -> None:
        with engine.BackgroundCheck(copy, full=True) as integrity:
            engine_restore.restore_into(copy, live, before_commit=integrity.wait)
        if integrity.failure() is not None:
            raise RuntimeError(str(integrity.failure()))

    timed(results, "restore: restore_into with integrity_check alongside", overlapped)
    connection = sqlite3.connect(live)
    try:
        mode = connection.execute("PRAGMA journal_mode").fetchone()[0]
    finally:
        connection.close()
    results["live journal mode is " + str(mode)] = 0.0
    copy.unlink()
    print(json.dumps(results))


if __name__ == "__main__":
    main(sys.argv[1:])
