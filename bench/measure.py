"""Running a command as a child process and measuring its wall time and peak memory."""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

POLL = 0.005
TIME = "/usr/bin/time"


@dataclass(frozen=True)
class Run:
    seconds: float
    # Peak resident set size of the child and of every process it waited for, in bytes.
    max_rss: int
    returncode: int
    finished: bool
    started_at: float
    output: str


@dataclass(frozen=True)
class Summary:
    median: float
    low: float
    high: float
    count: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Summary:
        if not values:
            raise ValueError("no values to summarise")
        return cls(statistics.median(values), min(values), max(values), len(values))


def run(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    cap: float | None = None,
) -> Run:
    """Run ``argv`` to its end, or kill it after ``cap`` seconds (``finished`` is then False).

    The peak RSS comes from GNU time: Linux carries a process's peak RSS across exec(), so
    the rusage of a child spawned straight from this (larger) process would report this
    process's peak, not the command's. GNU time is a small process of its own.
    """
    stem = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-{os.getpid()}-{time.monotonic_ns()}"
    log, rss = stem.with_suffix(".log"), stem.with_suffix(".rss")
    with open(log, "w+b") as out:
        started = time.monotonic()
        process = subprocess.Popen(
            [TIME, "--quiet", "-f", "%M", "-o", str(rss), *argv],
            env=dict(env) if env is not None else None,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        finished = True
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            if cap is not None and time.monotonic() - started > cap:
                finished = False
                os.killpg(process.pid, signal.SIGKILL)
                pid, status, usage = os.wait4(process.pid, 0)
                break
            time.sleep(POLL)
        seconds = time.monotonic() - started
        # Popen must not try to reap the child a second time.
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        output = out.read().decode("utf-8", "replace")
    log.unlink()
    try:
        max_rss = int(rss.read_text().split()[-1]) * 1024
    except (OSError, ValueError, IndexError):
        # Killed at the cap: GNU time died with its command; its own rusage is the best left.
        max_rss = usage.ru_maxrss * 1024
    rss.unlink(missing_ok=True)
    return Run(
        seconds=seconds,
        max_rss=max_rss,
        returncode=process.returncode,
        finished=finished,
        started_at=started,
        output=output,
    )


def check(result: Run, what: str) -> Run:
    if result.finished and result.returncode != 0:
        raise RuntimeError(f"{what} failed with exit code {result.returncode}:\n{result.output}")
    return result


def drop_dirty_pages() -> None:
    # Write back what earlier runs left dirty, so one method does not pay for another's I/O.
    os.sync()
