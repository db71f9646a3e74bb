"""Time ``services.list_backups()`` on a folder of backups, cold and then warm.

Run as ``python -m bench.listing REPEAT`` with the benchmark's settings; prints JSON.
"""

from __future__ import annotations

import json
import sys
import time


def main(argv: list[str]) -> None:
    import django

    django.setup()
    from django_studio_backups import services

    repeat = int(argv[0])
    started = time.monotonic()
    count = len(services.list_backups())
    cold = time.monotonic() - started
    warm = []
    for _ in range(repeat):
        started = time.monotonic()
        services.list_backups()
        warm.append(time.monotonic() - started)
    print(json.dumps({"count": count, "cold": cold, "warm": warm}))


if __name__ == "__main__":
    main(sys.argv[1:])
