"""Turning the results into the Markdown of bench/RESULTS.md."""

from __future__ import annotations

import math
import os
import platform
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from . import point_in_time, project
from .measure import Run, Summary
from .point_in_time import Latency, PointInTimeResults
from .scenarios import Results, WriterRun

MIB = 1024 * 1024
BASELINE = "cp + fsync"
OURS_BACKUP = "backup_now (ours)"
OURS_RESTORE = "restore_backup (ours)"
NOTES_MARKER = "<!-- Notes: kept when the benchmark rewrites the tables above. -->"
# `--only point-in-time` rewrites what lies between these two, and leaves the rest.
POINT_IN_TIME_BEGIN = "<!-- Point-in-time phases: begin. -->"
POINT_IN_TIME_END = "<!-- Point-in-time phases: end. -->"
RPO_TARGET = 2.0
REPLICATION_P99_TARGET = 1.2


@dataclass(frozen=True)
class Context:
    repeat: int
    cap: float
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float]
    started: str
    minutes: float


def seconds(summary: Summary) -> str:
    return f"{summary.median:.2f} ({summary.low:.2f}–{summary.high:.2f})"


def millis(summary: Summary) -> str:
    if math.isnan(summary.median):
        return "–"
    return f"{summary.median * 1000:.1f} ({summary.low * 1000:.1f}–{summary.high * 1000:.1f})"


def ratio(value: float, baseline: float) -> str:
    return f"{value / baseline:.2f}×" if baseline > 0 else "–"


def time_of(runs: list[Run]) -> Summary:
    return Summary.of([r.seconds for r in runs])


def rss_of(runs: list[Run]) -> str:
    return f"{max(r.max_rss for r in runs) / MIB:.0f}"


def command_output(argv: list[str]) -> str:
    try:
        text = subprocess.run(argv, capture_output=True, text=True, check=False).stdout
    except OSError:
        return "not installed"
    return text.strip().splitlines()[0] if text.strip() else "unknown"


def machine() -> list[str]:
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next(
                (line.split(":", 1)[1].strip() for line in f if line.startswith("model name")),
                cpu,
            )
    except OSError:
        pass
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3
    filesystem = command_output(["findmnt", "-n", "-o", "FSTYPE,SOURCE", "-T", str(project.OUT)])
    return [
        f"- {platform.system()} {platform.release()} {platform.machine()}; {cpu}, "
        f"{os.cpu_count()} cores; {memory:.0f} GiB RAM; files on {filesystem}",
    ]


def versions() -> list[str]:
    import django

    from django_studio_backups import __version__

    dbbackup = "not installed"
    for path in project.DBBACKUP_LIB.glob("django_dbbackup-*.dist-info"):
        dbbackup = path.name.removeprefix("django_dbbackup-").removesuffix(".dist-info")
    return [
        f"- Python {platform.python_version()}, SQLite {sqlite3.sqlite_version} (Python), "
        f"sqlite3 CLI {command_output(['sqlite3', '--version']).split(' ')[0]}, "
        f"Django {django.get_version()}, django-dbbackup {dbbackup}, "
        f"django-studio-backups {__version__}, {command_output(['cp', '--version'])}",
    ]


def writer_rows(table: dict[str, list[WriterRun]], baseline_p99: float) -> list[str]:
    rows = [
        "| during | duration s | finished | commits/s | p50 ms | p99 ms | p99 vs no backup "
        '| worst commit ms | "database is locked" | other errors |',
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for scenario, runs in table.items():
        finished = sum(r.finished for r in runs)
        failures = sorted({r.failure for r in runs if r.failure})
        if failures:
            outcome = f"{len(runs) - finished} of {len(runs)} failed: {'; '.join(failures)}"
        elif finished < len(runs):
            outcome = f"{len(runs) - finished} of {len(runs)} killed at the cap"
        else:
            outcome = "yes"
        duration = Summary.of([r.seconds for r in runs])
        p99 = Summary.of([r.impact.p99 for r in runs])
        others = sorted({e for r in runs for e in r.impact.other_errors})
        rows.append(
            f"| {scenario} | {seconds(duration)} | "
            f"{outcome} | "
            f"{Summary.of([r.impact.commits_per_second for r in runs]).median:,.0f} | "
            f"{millis(Summary.of([r.impact.p50 for r in runs]))} | {millis(p99)} | "
            f"{ratio(p99.median, baseline_p99)} | "
            f"{millis(Summary.of([r.impact.worst for r in runs]))} | "
            f"{sum(r.impact.locked_errors for r in runs)} | {'; '.join(others) or '–'} |"
        )
    return rows


def render(results: Results, context: Context) -> str:
    lines = [
        "# Benchmark results",
        "",
        f"`make bench SIZE={results.size}`, run {context.started} "
        f"({context.minutes:.0f} minutes): the example studio project's database, "
        f"{results.database_bytes / MIB:,.0f} MiB, in the page cache. Each figure is the "
        f"median (min–max) of {context.repeat} runs; ratios compare medians of the same run.",
        "",
        "## Machine",
        *machine(),
        f"- Load average before: {context.load_before[0]:.2f}, after: {context.load_after[0]:.2f} "
        "(other processes shared the machine; compare ratios rather than absolute times)",
        *versions(),
        "",
    ]
    base = time_of(results.backup[BASELINE]).median
    lines += [
        "## 1–2. Backup time and peak memory (idle database, WAL mode)",
        "",
        "| method | seconds | vs cp + fsync | peak RSS MiB | output MiB |",
        "|---|---|---|---|---|",
    ]
    for method, runs in results.backup.items():
        summary = time_of(runs)
        lines.append(
            f"| {method} | {seconds(summary)} | {ratio(summary.median, base)} | "
            f"{rss_of(runs)} | {results.backup_bytes[method] / MIB:,.0f} |"
        )
    lines += [
        "",
        "Where the time of `backup_now` and `restore_backup` goes (engine calls in one process):",
        "",
    ]
    lines += ["| phase | seconds |", "|---|---|"]
    for phase in results.phases[0]:
        summary = Summary.of([p[phase] for p in results.phases])
        if not phase.startswith("live journal"):
            lines.append(f"| {phase} | {seconds(summary)} |")
    for journal_mode, table in results.writer.items():
        baseline = Summary.of([r.impact.p99 for r in table["no backup"]]).median
        lines += [
            "",
            f"## 3. Writer impact, {'WAL' if journal_mode == 'wal' else 'rollback-journal'} mode",
            "",
            "One process inserts a client per transaction (autocommit, 5 s busy timeout, "
            f"{'synchronous=NORMAL' if journal_mode == 'wal' else 'synchronous=FULL'}) while the "
            f"backup runs; sqlite3 .backup is killed after {context.cap:.0f} s.",
            "",
            *writer_rows(table, baseline),
        ]
    restore_base = time_of(results.restore[BASELINE]).median
    lines += [
        "",
        "## 4. Restore (WAL mode)",
        "",
        "| method | seconds | vs cp + fsync | peak RSS MiB |",
        "|---|---|---|---|",
    ]
    for method, runs in results.restore.items():
        summary = time_of(runs)
        lines.append(
            f"| {method} | {seconds(summary)} | {ratio(summary.median, restore_base)} | "
            f"{rss_of(runs)} |"
        )
    for journal_mode, table in results.restore_writer.items():
        lines += [
            "",
            f"Writer during a restore, {'WAL' if journal_mode == 'wal' else 'rollback-journal'} "
            "mode (p99 compared with the no-backup run above):",
            "",
            *writer_rows(
                table,
                Summary.of(
                    [r.impact.p99 for r in results.writer[journal_mode]["no backup"]]
                ).median,
            ),
        ]
    lines += [
        "",
        "## 5. `list_backups`",
        "",
        "`services.list_backups()` in a running process: first call (manifests not cached) and "
        "later calls; and the whole `manage.py list_backups` command, Django start-up included.",
        "",
        "| backups | first call ms | later calls ms | command s |",
        "|---|---|---|---|",
    ]
    for count, timings in results.listing.items():
        lines.append(
            f"| {count:,} | {millis(Summary.of(timings['cold']))} | "
            f"{millis(Summary.of(timings['warm']))} | {seconds(Summary.of(timings['command']))} |"
        )
    lines += ["", "## Targets", "", *targets(results), ""]
    if results.point_in_time is not None:
        command = f"make bench SIZE={results.size}"
        lines += [point_in_time_block(results.point_in_time, context, command), ""]
    return "\n".join(lines)


def point_in_time_block(results: PointInTimeResults, context: Context, command: str) -> str:
    """Section 6, between its markers, with its own run line: `--only` reruns it alone."""
    litestream = command_output([str(Path(sys.executable).parent / "litestream"), "version"])
    seconds_written = f"{results.writer_seconds:g}"
    lines = [
        POINT_IN_TIME_BEGIN,
        "## 6. Point-in-time recovery (Litestream)",
        "",
        f"`{command}`, run {context.started} ({context.minutes:.0f} minutes; load average "
        f"{context.load_before[0]:.2f} before, {context.load_after[0]:.2f} after): the "
        f"example project's database, {results.database_bytes / MIB:,.0f} MiB. Litestream "
        f"{litestream}, run by `manage.py replicate` at the default sync interval (1 s). Each "
        f"figure is the median (min–max) of {context.repeat} runs, all in the same run.",
        "",
        "### RPO: the commits lost with the disk",
        "",
        f"A writer process commits one row every {results.interval * 1000:g} ms (autocommit, "
        f"WAL, synchronous=NORMAL; each id and time logged once its commit has returned) for "
        f"{seconds_written} s while `manage.py replicate` sends the database to a file "
        "replica. Then the writer, `replicate` and its Litestream are killed together (kill -9 "
        "of their process groups) and the database, its -wal and -shm are deleted. A new "
        "machine (an empty folder, the same settings) runs `manage.py restore_backup --at "
        "latest --no-input`. Seconds lost: the time of the last logged commit minus that of "
        "the newest commit recovered.",
        "",
        "| run | commits logged | newest recovered | commits lost | seconds lost "
        "| ids 1…n without a hole | recovery on the new machine s |",
        "|---|---|---|---|---|---|---|",
    ]
    for number, run in enumerate(results.recovery, 1):
        lines.append(
            f"| {number} | {run.last_logged:,} | {run.recovered:,} | {run.lost_rows:,} | "
            f"{run.lost_seconds:.2f} | {'yes' if run.contiguous else '**no**'} | "
            f"{run.recovery_seconds:.2f} |"
        )
    lines += [
        "",
        "### Writer latency with replication on and off",
        "",
        f"The same writer for {seconds_written} s on the same database, without "
        "`replicate`, and with it (the RPO runs above, once the replica had caught up); "
        f"the first {point_in_time.WARM_UP:g} s of each run are left out.",
        "",
        "| replication | commits (all runs) | commits/s | p50 ms | p99 ms | worst commit ms "
        "| errors | p99 vs off |",
        "|---|---|---|---|---|---|---|---|",
    ]
    off = Summary.of([r.p99 for r in results.without_replication]).median
    on = Summary.of([r.latency.p99 for r in results.recovery]).median
    for label, runs in (
        ("off", results.without_replication),
        ("on (`manage.py replicate`)", [r.latency for r in results.recovery]),
    ):
        lines.append(latency_row(label, runs, off))
    lines += [
        "",
        "### Restoring the database to a moment",
        "",
        f"Replicas of the {results.database_bytes / MIB:,.0f} MiB database plus "
        f"{point_in_time.ROWS_AROUND_THE_MOMENT} commits before a moment and as many after "
        f"it ({point_in_time.QUIET:g} s apart), with `replicate` stopped before the restores. "
        "A moment: `services.fetch_moment` (Litestream's restore into the backup folder, "
        "`quick_check`, SHA-256, published as a backup) then `services.restore` of it; the "
        "baseline is `services.restore` of a snapshot backup of the same database. Both "
        "restores check the backup, make a safety backup first and copy in one transaction. "
        "The command column is the whole process, Python and Django start-up included.",
        "",
        "| method | fetch s | restore s | command s | vs snapshot | the moment's data exactly |",
        "|---|---|---|---|---|---|",
    ]
    snapshot = Summary.of([r.command for r in results.restore[point_in_time.SNAPSHOT]]).median
    for method, restores in results.restore.items():
        command_time = Summary.of([r.command for r in restores])
        fetched = (
            "–"
            if method == point_in_time.SNAPSHOT
            else seconds(Summary.of([r.fetch for r in restores]))
        )
        exact = sum(r.exact for r in restores)
        lines.append(
            f"| {method} | {fetched} | {seconds(Summary.of([r.restore for r in restores]))} | "
            f"{seconds(command_time)} | {ratio(command_time.median, snapshot)} | "
            f"{'–' if method == point_in_time.SNAPSHOT else f'{exact} of {len(restores)}'} |"
        )
    worst = max(r.lost_seconds for r in results.recovery)
    median = Summary.of([r.lost_seconds for r in results.recovery]).median
    contiguous = sum(r.contiguous for r in results.recovery)

    def mark(ok: bool) -> str:
        return "met" if ok else "**not met**"

    lines += [
        "",
        "Targets:",
        "",
        f"- RPO ≤ {RPO_TARGET:g} s at the default sync interval: worst {worst:.2f} s, median "
        f"{median:.2f} s — {mark(worst <= RPO_TARGET)}",
        f"- Recovered ids contiguous from 1 (no hole): {contiguous} of {len(results.recovery)} "
        f"runs — {'holds' if contiguous == len(results.recovery) else '**broken**'}",
        f"- Writer p99 with replication ≤ {REPLICATION_P99_TARGET:g}× without: "
        f"{on * 1000:.2f} ms vs {off * 1000:.2f} ms = {ratio(on, off)} — "
        f"{mark(on <= REPLICATION_P99_TARGET * off)}",
        POINT_IN_TIME_END,
    ]
    return "\n".join(lines)


def latency_row(label: str, runs: list[Latency], baseline_p99: float) -> str:
    p99 = Summary.of([r.p99 for r in runs])
    return (
        f"| {label} | {sum(r.commits for r in runs):,} | "
        f"{Summary.of([r.commits_per_second for r in runs]).median:,.0f} | "
        f"{fine_millis(Summary.of([r.p50 for r in runs]))} | {fine_millis(p99)} | "
        f"{fine_millis(Summary.of([r.worst for r in runs]))} | {sum(r.errors for r in runs)} | "
        f"{ratio(p99.median, baseline_p99)} |"
    )


def fine_millis(summary: Summary) -> str:
    return f"{summary.median * 1000:.2f} ({summary.low * 1000:.2f}–{summary.high * 1000:.2f})"


def splice_point_in_time(old: str, block: str) -> str:
    """``old`` report with its section 6 replaced by ``block`` (added before the notes if it
    had none)."""
    if POINT_IN_TIME_BEGIN in old and POINT_IN_TIME_END in old:
        start = old.index(POINT_IN_TIME_BEGIN)
        end = old.index(POINT_IN_TIME_END) + len(POINT_IN_TIME_END)
        return old[:start] + block + old[end:]
    if NOTES_MARKER in old:
        start = old.index(NOTES_MARKER)
        return old[:start] + block + "\n\n\n" + old[start:]
    return old.rstrip("\n") + "\n\n" + block + "\n"


def targets(results: Results) -> list[str]:
    base = time_of(results.backup[BASELINE]).median
    ours = time_of(results.backup[OURS_BACKUP]).median
    cli = time_of(results.backup["sqlite3 .backup"]).median
    dbbackup = time_of(results.backup["dbbackup"]).median
    rss = max(r.max_rss for r in results.backup[OURS_BACKUP]) / MIB
    wal = results.writer["wal"]
    wal_base = Summary.of([r.impact.p99 for r in wal["no backup"]]).median
    wal_ours = Summary.of([r.impact.p99 for r in wal[OURS_BACKUP]]).median
    wal_worst = max(r.impact.worst for r in wal[OURS_BACKUP])
    finished = all(r.finished for r in wal[OURS_BACKUP])
    journal = results.writer["delete"][OURS_BACKUP]
    locked = sum(r.impact.locked_errors for r in journal)
    journal_worst = max(r.impact.worst for r in journal)
    restore = time_of(results.restore[OURS_RESTORE]).median
    restore_base = time_of(results.restore[BASELINE]).median
    listing = results.listing.get(1_000)

    def mark(ok: bool) -> str:
        return "met" if ok else "**not met**"

    lines = [
        f"- Backup within 1.3× of cp + fsync: {ours / base:.2f}× — {mark(ours <= 1.3 * base)}",
        f"- Faster than sqlite3 .backup ({cli:.2f} s) and dbbackup ({dbbackup:.2f} s): "
        f"{ours:.2f} s — {mark(ours < cli and ours < dbbackup)}",
        f"- Finishes while a writer runs (WAL): {mark(finished)}",
        f"- Peak RSS below 100 MB: {rss:.0f} MiB — {mark(rss * MIB < 100e6)}",
        f"- WAL writer p99 during a backup ≤ 3× no backup: {wal_ours * 1000:.1f} ms vs "
        f"{wal_base * 1000:.1f} ms = {wal_ours / wal_base:.1f}× — {mark(wal_ours <= 3 * wal_base)}",
        f"- No WAL writer stall over 100 ms: worst {wal_worst * 1000:.0f} ms — "
        f"{mark(wal_worst <= 0.1)}",
        f'- No "database is locked" in rollback-journal mode: {locked} — {mark(locked == 0)}; '
        f"longest stall {journal_worst * 1000:.0f} ms",
        f"- Restore within 2× of cp + fsync: {restore / restore_base:.2f}× — "
        f"{mark(restore <= 2 * restore_base)}",
    ]
    if listing is not None:
        cold = Summary.of(listing["cold"]).median
        lines.append(
            f"- list_backups with 1,000 files under 50 ms: {cold * 1000:.1f} ms (first call) — "
            f"{mark(cold < 0.05)}"
        )
    return lines
