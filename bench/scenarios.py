"""The measurements: each one runs the real commands as child processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from . import measure, project, writer
from .measure import Run
from .point_in_time import PointInTimeResults
from .project import Workspace

WRITER_WARM_UP = 0.5
WRITER_COOL_DOWN = 0.2
# The no-backup window lasts as long as our backup, and at least this long.
BASELINE_SECONDS = 3.0
# cp's own fsync plus one of the directory: what any durable copy has to pay.
CP_FSYNC = 'cp -- "$1" "$2" && sync -- "$2" "$(dirname -- "$2")"'
LISTING_SIZES = (20, 1_000, 10_000)

BACKUP_METHODS = ("cp + fsync", "sqlite3 .backup", "VACUUM INTO", "dbbackup", "backup_now (ours)")
WRITER_BACKUPS = ("no backup", "backup_now (ours)", "sqlite3 .backup", "dbbackup")
RESTORE_METHODS = ("cp + fsync", "dbrestore", "restore_backup (ours)")


@dataclass
class WriterRun:
    impact: writer.Impact
    seconds: float
    finished: bool
    # The backup's or restore's own error, when it gave up instead of finishing.
    failure: str = ""


@dataclass
class Results:
    size: str
    database_bytes: int = 0
    backup: dict[str, list[Run]] = field(default_factory=dict)
    backup_bytes: dict[str, int] = field(default_factory=dict)
    phases: list[dict[str, float]] = field(default_factory=list)
    writer: dict[str, dict[str, list[WriterRun]]] = field(default_factory=dict)
    restore: dict[str, list[Run]] = field(default_factory=dict)
    restore_writer: dict[str, dict[str, list[WriterRun]]] = field(default_factory=dict)
    listing: dict[int, dict[str, list[float]]] = field(default_factory=dict)
    point_in_time: PointInTimeResults | None = None


class Bench:
    def __init__(self, workspace: Workspace, repeat: int, cap: float, say: Callable[[str], None]):
        self.ws = workspace
        self.repeat = repeat
        self.cap = cap
        self.say = say

    # Commands ------------------------------------------------------------------------

    def backup_command(self, method: str, destination: Path) -> list[str]:
        live = str(self.ws.live)
        if method == "cp + fsync":
            return ["sh", "-c", CP_FSYNC, "sh", live, str(destination)]
        if method == "sqlite3 .backup":
            return ["sqlite3", live, f'.backup "{destination}"']
        if method == "VACUUM INTO":
            return ["sqlite3", live, f"VACUUM INTO '{destination}'"]
        if method == "dbbackup":
            return self.ws.manage("dbbackup", "-q")
        if method == "backup_now (ours)":
            return self.ws.manage("backup_now")
        raise ValueError(method)

    def clear_outputs(self) -> None:
        for directory in (self.ws.copies, self.ws.backups, self.ws.dbbackups, self.ws.scratch):
            project.empty_directory(directory)
        measure.drop_dirty_pages()

    def output_size(self, method: str, destination: Path) -> int:
        folder = {"dbbackup": self.ws.dbbackups, "backup_now (ours)": self.ws.backups}.get(method)
        if folder is None:
            return project.file_size(destination)
        files = [p for p in folder.iterdir() if p.suffix != ".json" and p.is_file()]
        return sum(p.stat().st_size for p in files if not p.name.startswith("."))

    # 1 and 2: backup time and peak memory --------------------------------------------

    def backups(self, results: Results) -> None:
        self.ws.reset_live("wal")
        results.database_bytes = project.file_size(self.ws.live)
        for number in range(self.repeat):
            for method in BACKUP_METHODS:
                self.clear_outputs()
                destination = self.ws.copies / "copy.db"
                result = measure.check(
                    measure.run(self.backup_command(method, destination), env=self.ws.env()),
                    method,
                )
                results.backup.setdefault(method, []).append(result)
                results.backup_bytes[method] = self.output_size(method, destination)
                self.say(f"backup {number + 1}/{self.repeat} {method}: {result.seconds:.2f} s")
        self.clear_outputs()
        for number in range(self.repeat):
            self.ws.reset_live("wal")
            phases = self.run_json(
                [sys.executable, "-m", "bench.phases", str(self.ws.live), str(self.ws.scratch)]
            )
            results.phases.append({k: float(v) for k, v in phases.items()})  # type: ignore[arg-type]
            self.say(f"phases {number + 1}/{self.repeat}")

    def run_json(self, argv: list[str], env: dict[str, str] | None = None) -> dict[str, object]:
        result = measure.check(
            measure.run(argv, env=env or self.ws.env(), cwd=project.REPO), " ".join(argv)
        )
        data: dict[str, object] = json.loads(result.output.strip().splitlines()[-1])
        return data

    # 3: writer impact ----------------------------------------------------------------

    def with_writer(self, journal_mode: str, argv: list[str] | None, seconds: float) -> WriterRun:
        log = self.ws.scratch / "writer.json"
        failure = ""
        process = subprocess.Popen(
            [sys.executable, "-m", "bench.writer", str(self.ws.live), journal_mode, str(log)],
            cwd=project.REPO,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert process.stdout is not None
            if process.stdout.readline().strip() != "ready":
                raise RuntimeError("the writer did not start")
            time.sleep(WRITER_WARM_UP)
            if argv is None:
                started = time.monotonic()
                time.sleep(seconds)
                ended, finished = time.monotonic(), True
            else:
                result = measure.run(argv, env=self.ws.env(journal_mode), cap=self.cap)
                started, ended = result.started_at, result.started_at + result.seconds
                finished = result.finished and result.returncode == 0
                if result.finished and result.returncode != 0:
                    failure = _last_line(result.output)
            time.sleep(WRITER_COOL_DOWN)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)
        run = WriterRun(writer.impact(log, started, ended), ended - started, finished, failure)
        log.unlink()
        return run

    def writer_impact(self, results: Results) -> None:
        for journal_mode in project.JOURNAL_MODES:
            table = results.writer.setdefault(journal_mode, {})
            for number in range(self.repeat):
                for scenario in WRITER_BACKUPS:
                    self.ws.reset_live(journal_mode)
                    self.clear_outputs()
                    argv = None
                    if scenario != "no backup":
                        argv = self.backup_command(scenario, self.ws.copies / "copy.db")
                    seconds = max(
                        BASELINE_SECONDS,
                        _median_seconds(results.backup.get("backup_now (ours)"), 0),
                    )
                    run = self.with_writer(journal_mode, argv, seconds)
                    table.setdefault(scenario, []).append(run)
                    self.say(
                        f"writer {journal_mode} {number + 1}/{self.repeat} {scenario}: "
                        f"{run.seconds:.2f} s{'' if run.finished else ' (did not finish)'}"
                        f"{run.failure}, "
                        f"p99 {run.impact.p99 * 1000:.1f} ms, "
                        f"worst {run.impact.worst * 1000:.0f} ms, "
                        f"{run.impact.locked_errors} locked"
                    )

    # 4: restore --------------------------------------------------------------------

    def restore_sources(self) -> tuple[str, Path]:
        """Make one backup of each kind to restore from; (our backup's name, its path)."""
        self.ws.reset_live("wal")
        self.clear_outputs()
        env = self.ws.env()
        ours = measure.check(measure.run(self.ws.manage("backup_now"), env=env), "backup_now")
        path = Path(ours.output.strip().splitlines()[-1])
        measure.check(measure.run(self.ws.manage("dbbackup", "-q"), env=env), "dbbackup")
        return path.name, path

    def restore_command(self, method: str, name: str, source: Path) -> list[str]:
        if method == "cp + fsync":
            return ["sh", "-c", CP_FSYNC, "sh", str(source), str(self.ws.live)]
        if method == "dbrestore":
            return self.ws.manage("dbrestore", "--noinput", "-q")
        if method == "restore_backup (ours)":
            return self.ws.manage("restore_backup", "--no-input", name)
        raise ValueError(method)

    def forget_safety_backups(self, keep: Path) -> None:
        for path in self.ws.backups.iterdir():
            kept = (keep.name, keep.name + ".json", ".lock", "settings.json")
            if path.name not in kept and path.is_file():
                path.unlink()
        measure.drop_dirty_pages()

    def restores(self, results: Results) -> None:
        name, source = self.restore_sources()
        for journal_mode in project.JOURNAL_MODES:
            table = results.restore_writer.setdefault(journal_mode, {})
            for number in range(self.repeat):
                for method in RESTORE_METHODS:
                    argv = self.restore_command(method, name, source)
                    if journal_mode == "wal":
                        self.ws.reset_live(journal_mode)
                        self.forget_safety_backups(source)
                        result = measure.check(
                            measure.run(argv, env=self.ws.env(journal_mode)), method
                        )
                        results.restore.setdefault(method, []).append(result)
                        self.say(
                            f"restore {number + 1}/{self.repeat} {method}: {result.seconds:.2f} s"
                        )
                    self.ws.reset_live(journal_mode)
                    self.forget_safety_backups(source)
                    run = self.with_writer(journal_mode, argv, 0)
                    table.setdefault(method, []).append(run)
                    self.say(
                        f"restore + writer {journal_mode} {number + 1}/{self.repeat} {method}: "
                        f"{run.seconds:.2f} s, worst {run.impact.worst * 1000:.0f} ms, "
                        f"{run.impact.locked_errors} locked {run.impact.other_errors[:1]}"
                    )
        self.clear_outputs()

    # 5: listing ------------------------------------------------------------------

    def listing(self, results: Results, sizes: tuple[int, ...] = LISTING_SIZES) -> None:
        for count in sizes:
            folder = self.ws.root / f"listing-{count}"
            fill_backup_folder(folder, count)
            measure.drop_dirty_pages()
            env = {**self.ws.env(), "BENCH_BACKUP_DIR": str(folder)}
            timings: dict[str, list[float]] = {"cold": [], "warm": [], "command": []}
            for _ in range(self.repeat):
                data = self.run_json([sys.executable, "-m", "bench.listing", "5"], env=env)
                if data["count"] != count:
                    raise RuntimeError(f"listed {data['count']} backups, not {count}")
                timings["cold"].append(float(data["cold"]))  # type: ignore[arg-type]
                timings["warm"].extend(float(t) for t in data["warm"])  # type: ignore[attr-defined]
                command = measure.check(
                    measure.run(self.ws.manage("list_backups"), env=env), "list_backups"
                )
                timings["command"].append(command.seconds)
            results.listing[count] = timings
            self.say(f"list_backups {count}: cold {min(timings['cold']) * 1000:.1f} ms")


def fill_backup_folder(folder: Path, count: int) -> None:
    """``count`` tiny backups with valid names and manifests, one a day going back."""
    if folder.exists() and len(list(folder.glob("backup_*.db"))) == count:
        return
    project.empty_directory(folder)
    newest = datetime(2026, 1, 31, 3, 0, 0)
    for number in range(count):
        moment = newest - timedelta(days=number)
        path = folder / f"backup_{moment:%Y%m%d_%H%M%S}.db"
        path.write_bytes(b"SQLite format 3\x00" + bytes(84))
        manifest = {
            "format": 1,
            "kind": "daily",
            "created_at": moment.isoformat(),
            "size": 100,
            "sha256": "0" * 64,
            "migrations": [["studio", "0001_initial"]] * 20,
            "verification": {"ok": True, "check": "quick_check", "at": moment.isoformat()},
        }
        Path(f"{path}.json").write_text(json.dumps(manifest))
        stamp = moment.timestamp()
        os.utime(path, (stamp, stamp))


def _median_seconds(runs: list[Run] | None, default: float) -> float:
    if not runs:
        return default
    return measure.Summary.of([r.seconds for r in runs]).median


def _last_line(output: str) -> str:
    lines = output.strip().splitlines()
    return lines[-1] if lines else "no output"
