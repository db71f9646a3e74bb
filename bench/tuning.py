"""Measure the engine's tunables on the benchmark database, to choose their values.

``python -m bench.tuning SIZE`` (after ``make bench SIZE=...`` seeded it) prints Markdown:
- the writer's latency (WAL mode) while ``copy_database`` runs with each ``FLUSH_CHUNK``;
- ``PRAGMA integrity_check`` with SQLite's default page cache, a larger one, and mmap.
"""

from __future__ import annotations

import sys

from django_studio_backups import engine

from . import measure, project
from .measure import Summary
from .scenarios import Bench

MIB = 1024 * 1024
CHUNKS = (4 * MIB, 8 * MIB, 16 * MIB, 32 * MIB, 128 * MIB, 1 << 40)
# (label, cache in KiB, mmap bytes)
CHECKS = (
    ("default cache (2 MiB)", 2_000, 0),
    ("16 MiB cache", 16 * 1024, 0),
    ("32 MiB cache", 32 * 1024, 0),
    ("64 MiB cache", 64 * 1024, 0),
    ("mmap", 2_000, 1 << 40),
)
COPY = (
    "import sys; from pathlib import Path; from django_studio_backups import engine; "
    "engine.FLUSH_CHUNK = int(sys.argv[1]); "
    "engine.copy_database(Path(sys.argv[2]), Path(sys.argv[3]))"
)
CHECK = (
    "import sys, sqlite3; from pathlib import Path; from django_studio_backups import engine; "
    "c = engine.open_snapshot_file(Path(sys.argv[1])); "
    "c.execute(f'PRAGMA cache_size=-{sys.argv[2]}'); c.execute(f'PRAGMA mmap_size={sys.argv[3]}'); "
    "assert c.execute('PRAGMA integrity_check').fetchall() == [('ok',)]"
)


def main(argv: list[str]) -> None:
    size, repeat = argv[0], int(argv[1]) if len(argv) > 1 else 3
    workspace = project.Workspace(project.OUT / size, size)
    workspace.prepare()
    bench = Bench(workspace, repeat, 600, lambda message: None)
    print(f"Writer (WAL mode) during `copy_database` of {size}, by FLUSH_CHUNK:\n")
    print("| FLUSH_CHUNK | copy s | commits/s | p99 ms | worst commit ms |")
    print("|---|---|---|---|---|")
    for chunk in CHUNKS:
        runs = []
        for _ in range(repeat):
            workspace.reset_live("wal")
            bench.clear_outputs()
            argv_copy = [
                sys.executable,
                "-c",
                COPY,
                str(chunk),
                str(workspace.live),
                str(workspace.copies / "copy.db"),
            ]
            runs.append(bench.with_writer("wal", argv_copy, 0))
        label = "none (one fsync at the end)" if chunk >= 1 << 40 else f"{chunk // MIB} MiB"
        print(
            f"| {label} | {_s(Summary.of([r.seconds for r in runs]))} | "
            f"{Summary.of([r.impact.commits_per_second for r in runs]).median:,.0f} | "
            f"{_ms(Summary.of([r.impact.p99 for r in runs]))} | "
            f"{_ms(Summary.of([r.impact.worst for r in runs]))} |",
            flush=True,
        )
    bench.clear_outputs()
    backup = workspace.copies / "check.db"
    engine.copy_database(workspace.seed, backup)
    print(f"\n`PRAGMA integrity_check` of a {size} backup:\n")
    print("| page cache | seconds | peak RSS MiB |")
    print("|---|---|---|")
    for label, cache, mmap in CHECKS:
        results = [
            measure.check(
                measure.run(
                    [sys.executable, "-c", CHECK, str(backup), str(cache), str(mmap)],
                    cwd=project.REPO,
                ),
                label,
            )
            for _ in range(repeat)
        ]
        print(
            f"| {label} | {_s(Summary.of([r.seconds for r in results]))} | "
            f"{max(r.max_rss for r in results) / MIB:.0f} |",
            flush=True,
        )
    backup.unlink()


def _s(summary: Summary) -> str:
    return f"{summary.median:.2f} ({summary.low:.2f}–{summary.high:.2f})"


def _ms(summary: Summary) -> str:
    return f"{summary.median * 1000:.1f} ({summary.low * 1000:.1f}–{summary.high * 1000:.1f})"


if __name__ == "__main__":
    main(sys.argv[1:])
