"""Processes the fault and load tests run against a database: a writer, and cued service calls."""

from __future__ import annotations

import collections
import contextlib
import itertools
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

from tests.conftest import REPO, StudioDB, command_env

_numbers = itertools.count()


@contextlib.contextmanager
def running_writer(database: Path, folder: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A process committing pairs of rows into ``database`` (table ``pair``) until the end.

    It exits non-zero if any of its commits fails, which the caller sees on leaving.
    """
    stop = folder / f"writer-{next(_numbers)}.stop"
    ready = stop.with_suffix(".ready")
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.processes", "writer", str(database), "wal", str(stop)],
        cwd=REPO,
    )
    try:
        deadline = time.monotonic() + 30
        while not ready.exists():
            assert process.poll() is None, "the writer died before it started writing"
            assert time.monotonic() < deadline, "the writer did not start within 30 s"
            time.sleep(0.01)
        yield process
    finally:
        stop.touch()
        process.wait(timeout=30)
    assert process.returncode == 0, "a commit of the writer failed while it ran"


@contextlib.contextmanager
def client_writer(db: StudioDB, folder: Path) -> Iterator[Path]:
    """A process adding a client every 2 ms; yields the log of the numbers it committed."""
    stop = folder / "writer.stop"
    log = folder / "writer.log"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.processes",
            "client-writer",
            str(db.path),
            str(stop),
            str(log),
        ],
        cwd=REPO,
    )
    try:
        deadline = time.monotonic() + 30
        while not stop.with_suffix(".ready").exists():
            assert process.poll() is None, "the writer died before it started writing"
            assert time.monotonic() < deadline
            time.sleep(0.01)
        yield log
    finally:
        stop.touch()
        process.wait(timeout=60)
    assert process.returncode == 0


class CuedCall:
    """``services.<function>(<argument>)`` in a new process, started only on ``go()``.

    Starting Django takes longer than most of the work under test, so the process is set up
    ahead and a kill is timed from the moment the work starts.
    """

    def __init__(
        self,
        db: StudioDB,
        folder: Path,
        function: str,
        argument: str | None = None,
        *,
        cue: Path | None = None,
        backups: Mapping[str, object] | None = None,
    ) -> None:
        # Calls that share a cue all start when it appears.
        self.cue = cue or folder / f"cue-{next(_numbers)}"
        args = [sys.executable, "-m", "tests.processes", "service-on-cue", str(self.cue), function]
        if argument is not None:
            args.append(argument)
        self.process = subprocess.Popen(
            args,
            cwd=REPO,
            env=command_env(db, **(backups or {})),
            stdout=subprocess.PIPE,
            text=True,
        )
        self.function = function

    def ready(self) -> None:
        """Wait until the process is set up and waits for its cue."""
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line == "ready\n", f"{self.function} did not start: {line!r}"

    def go(self) -> float:
        self.ready()
        self.cue.touch()
        return time.monotonic()

    def kill(self) -> bool:
        """SIGKILL the process; True if it was still running (a real kill)."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)
        self.close()
        return self.process.returncode == -signal.SIGKILL

    def result(self, timeout: float = 120) -> str:
        """What the call returned, as printed; fails if the process failed."""
        output, _ = self.process.communicate(timeout=timeout)
        assert self.process.returncode == 0, f"the call failed with {self.process.returncode}"
        return output.strip()

    def close(self) -> None:
        if self.process.stdout is not None:
            self.process.stdout.close()


class CuedPool:
    """Processes set up ahead for each argument, so a test never waits for one to start."""

    def __init__(self, db: StudioDB, folder: Path, function: str, **backups: object) -> None:
        self.db = db
        self.folder = folder
        self.function = function
        self.backups = backups
        self.waiting: dict[str | None, collections.deque[CuedCall]] = {}

    def take(self, argument: str | None = None, *, ahead: int = 2) -> CuedCall:
        queue = self.waiting.setdefault(argument, collections.deque())
        while len(queue) <= ahead:
            queue.append(
                CuedCall(self.db, self.folder, self.function, argument, backups=self.backups)
            )
        return queue.popleft()

    def close(self) -> None:
        for queue in self.waiting.values():
            for call in queue:
                call.kill()
        self.waiting.clear()
