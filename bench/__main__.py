"""``python -m bench``: run every measurement and write the Markdown report."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from datetime import datetime
from pathlib import Path

from . import project, report
from .scenarios import LISTING_SIZES, Bench, Results


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
    args = parser.parse_args(argv)
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
    bench.backups(results)
    bench.writer_impact(results)
    bench.restores(results)
    bench.listing(results, tuple(int(n) for n in args.listing.split(",")))
    context = report.Context(
        repeat=args.repeat,
        cap=args.cap,
        load_before=load_before,
        load_after=os.getloadavg(),
        started=stamp,
        minutes=(time.monotonic() - started) / 60,
    )
    notes = ""
    if args.report.exists():
        # What people wrote below the marker (analysis, tuning runs) survives a new run.
        old = args.report.read_text(encoding="utf-8")
        if report.NOTES_MARKER in old:
            notes = old[old.index(report.NOTES_MARKER) :]
    text = report.render(results, context) + "\n"
    args.report.write_text(text + ("\n" + notes if notes else ""), encoding="utf-8")
    raw = workspace.root / "results.json"
    raw.write_text(json.dumps(dataclasses.asdict(results), indent=1, default=str))
    say(f"wrote {args.report} and {raw}")
    report_path: Path = args.report
    return report_path


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


if __name__ == "__main__":
    main()
