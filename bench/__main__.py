"""``python -m bench``: run every measurement and write the Markdown report.

``--only point-in-time`` runs section 6 alone and rewrites only its part of the report."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from datetime import datetime
from pathlib import Path

from . import point_in_time, project, report
from .paced_writer import INTERVAL
from .point_in_time import PointInTime, PointInTimeResults
from .scenarios import LISTING_SIZES, Bench, Results

POINT_IN_TIME = "point-in-time"


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--size", default="1G", help="database size: 10M, 100M, 1G (default)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each measurement")
    parser.add_argument(
        "--cap", type=float, default=60.0, help="seconds before sqlite3 .backup is killed"
    )
    parser.add_argument("--out", type=Path, default=project.OUT, help="working folder")
    parser.add_argument(
        "--report", type=Path, default=project.REPO / "bench" / "RESULTS.md", help="Markdown"
    )
    parser.add_argument(
        "--listing",
        default=",".join(map(str, LISTING_SIZES)),
        help="numbers of backup files to list, comma-separated",
    )
    parser.add_argument(
        "--only",
        choices=[POINT_IN_TIME],
        help="run only these phases, and rewrite only their section of the report",
    )
    parser.add_argument(
        "--writer-seconds",
        type=float,
        default=point_in_time.WRITER_SECONDS,
        help="how long the writer commits in the RPO and replication-latency runs",
    )
    args = parser.parse_args(argv)
    if args.only is None:
        project.ensure_dbbackup()

    started = time.monotonic()
    load_before = os.getloadavg()
    stamp = datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    workspace = project.Workspace(args.out / args.size, args.size)
    say(f"seeding a {args.size} database in {workspace.seed} (once per size)")
    log: list[str] = []
    project.seed_database(workspace, log)
    for line in log:
        say(line)
    workspace.prepare()
    bench = Bench(workspace, args.repeat, args.cap, say)
    results = Results(size=args.size)
    if args.only is None:
        bench.backups(results)
        bench.writer_impact(results)
        bench.restores(results)
        bench.listing(results, tuple(int(n) for n in args.listing.split(",")))
    measured = PointInTimeResults(args.writer_seconds, INTERVAL)
    phases = PointInTime(bench, args.writer_seconds)
    phases.recovery_and_latency(measured)
    phases.restores(measured)
    results.point_in_time = measured
    context = report.Context(
        repeat=args.repeat,
        cap=args.cap,
        load_before=load_before,
        load_after=os.getloadavg(),
        started=stamp,
        minutes=(time.monotonic() - started) / 60,
    )
    old = args.report.read_text(encoding="utf-8") if args.report.exists() else ""
    if args.only is not None:
        command = f"python -m bench --size {args.size} --only {args.only}"
        block = report.point_in_time_block(measured, context, command)
        text = report.splice_point_in_time(old or "# Benchmark results\n", block)
    else:
        # What people wrote below the marker (analysis, tuning runs) survives a new run.
        notes = old[old.index(report.NOTES_MARKER) :] if report.NOTES_MARKER in old else ""
        text = report.render(results, context) + "\n" + ("\n" + notes if notes else "")
    args.report.write_text(text, encoding="utf-8")
    raw = workspace.root / "results.json"
    raw.write_text(json.dumps(dataclasses.asdict(results), indent=1, default=str))
    say(f"wrote {args.report} and {raw}")
    report_path: Path = args.report
    return report_path


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


if __name__ == "__main__":
    main()
