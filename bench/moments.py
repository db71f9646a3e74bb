"""The service calls of the point-in-time benchmark, timed in one process.

Run with the benchmark's settings as:
- ``python -m bench.moments caught-up TIMEOUT``: wait until ``manage.py replicate`` runs
  and the replica holds every commit of the live database;
- ``python -m bench.moments to-moment MOMENT``: ``services.fetch_moment`` then
  ``services.restore`` of what it fetched (MOMENT is ISO 8601, or "latest");
- ``python -m bench.moments snapshot NAME``: ``services.restore`` of the backup NAME.

Each prints one JSON object of phase name -> seconds.
"""

from __future__ import annotations

import json
import sys
import time


def main(argv: list[str]) -> None:
    import django

    django.setup()
    from django_studio_backups import services
    from django_studio_backups.exceptions import ReplicationFailed

    command, argument = argv[0], argv[1]
    results: dict[str, float] = {}
    started = time.monotonic()
    if command == "caught-up":
        deadline = started + float(argument)
        while True:
            try:
                status = services.replication_status()
            except ReplicationFailed:
                # Litestream has not written its first files yet.
                status = None
            if status is not None and status.window is not None and status.lag == 0:
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"the replica did not catch up within {argument} s: {status}")
            time.sleep(0.25)
        results["caught up"] = time.monotonic() - started
    elif command == "to-moment":
        backup = services.fetch_moment(services.parse_moment(argument))
        results["fetch"] = time.monotonic() - started
        started = time.monotonic()
        services.restore(backup.name)
        results["restore"] = time.monotonic() - started
    elif command == "snapshot":
        services.restore(argument)
        results["restore"] = time.monotonic() - started
    else:
        raise SystemExit(f"unknown command {command!r}")
    print(json.dumps(results))


if __name__ == "__main__":
    main(sys.argv[1:])
