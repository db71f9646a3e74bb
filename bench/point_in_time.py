"""Point-in-time recovery through Litestream, measured with every part real: ``manage.py
replicate`` runs the Litestream binary installed beside Python, the S3 replica is moto's
server, the writer is a process of its own.

- RPO: a writer commits while ``replicate`` runs; then the disk dies (kill -9 of the
  writer and of ``replicate`` with its Litestream, the database files deleted) and a new
  machine recovers with ``restore_backup --at latest``: the seconds of commits lost.
- The same writer's commit latency without ``replicate``, in the same run.
- Restoring the database at the benchmark's size to a moment, from a folder replica and
  from S3, against restoring a snapshot backup of the same database.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from . import measure, paced_writer, project
from .writer import percentile

if TYPE_CHECKING:
    from .scenarios import Bench

WRITER_SECONDS = 30.0
# The writer's first commits (its table created, a cold page cache) are left out of its
# latency, with replication on and off alike.
WARM_UP = 0.5
CATCH_UP_TIMEOUT = 600.0
# Quiet on each side of the moment restored: the replica syncs once a second by default.
QUIET = 1.5
ROWS_AROUND_THE_MOMENT = 200
SNAPSHOT = "snapshot backup (services.restore)"
FILE_REPLICA = "moment from a file replica"
S3_REPLICA = "moment from S3 (moto)"
RESTORE_METHODS = (SNAPSHOT, FILE_REPLICA, S3_REPLICA)
S3_REGION = "us-east-1"
# moto accepts any key; Litestream reads these from its environment.
S3_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


@dataclass
class Latency:
    commits: int
    commits_per_second: float
    p50: float
    p99: float
    worst: float
    errors: int


@dataclass
class Recovery:
    # The newest commit the writer logged, and the newest one the new machine got back.
    last_logged: int
    recovered: int
    # Time of the last logged commit minus the time of the newest recovered one.
    lost_seconds: float
    # The recovered ids are 1, 2, ... with no hole: the replica is a consistent prefix.
    contiguous: bool
    # `manage.py restore_backup --at latest --no-input` on the new machine, start-up included.
    recovery_seconds: float
    latency: Latency

    @property
    def lost_rows(self) -> int:
        return max(0, self.last_logged - self.recovered)


@dataclass
class MomentRestore:
    # Litestream's restore into the backup folder, checked and published (0 for a snapshot).
    fetch: float
    # services.restore of it: checks, safety backup, one transaction.
    restore: float
    # The whole process, Python and Django start-up included.
    command: float
    # The restored database holds exactly the commits made before the moment.
    exact: bool


@dataclass
class PointInTimeResults:
    writer_seconds: float
    interval: float
    database_bytes: int = 0
    recovery: list[Recovery] = field(default_factory=list)
    without_replication: list[Latency] = field(default_factory=list)
    restore: dict[str, list[MomentRestore]] = field(default_factory=dict)


class PointInTime:
    def __init__(self, bench: Bench, writer_seconds: float = WRITER_SECONDS) -> None:
        self.bench = bench
        self.ws = bench.ws
        self.writer_seconds = writer_seconds

    @property
    def replicas(self) -> Path:
        return self.ws.root / "replicas"

    def file_env(self, name: str) -> dict[str, str]:
        return {**self.ws.env(), "BENCH_REPLICA_URL": f"file://{self.replicas / name}"}

    def s3_env(self, endpoint: str, bucket: str) -> dict[str, str]:
        options = {"endpoint": endpoint, "region": S3_REGION, "force-path-style": True}
        env = {
            **self.ws.env(),
            **S3_CREDENTIALS,
            "BENCH_REPLICA_URL": f"s3://{bucket}/bench",
            "BENCH_REPLICA_OPTIONS": json.dumps(options),
        }
        # Litestream 0.5.17 cannot start its S3 client at all with AWS_CA_BUNDLE set.
        env.pop("AWS_CA_BUNDLE", None)
        return env

    def fresh_live(self) -> None:
        """The seeded database alone in its folder (no Litestream state beside it), and
        empty backup and replica folders."""
        project.empty_directory(self.ws.live.parent)
        self.ws.reset_live("wal")
        self.bench.clear_outputs()
        project.empty_directory(self.replicas)

    @contextlib.contextmanager
    def replicating(self, env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
        """``manage.py replicate`` in a process group of its own, once the replica holds
        the whole database; stopped with SIGTERM at the end unless killed before."""
        said = self.ws.scratch / "replicate.log"
        with open(said, "ab") as log:
            process = subprocess.Popen(
                self.ws.manage("replicate"),
                env=env,
                cwd=project.REPO,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            try:
                self.caught_up(env)
            except RuntimeError as exc:
                raise RuntimeError(f"{exc}\nmanage.py replicate said:\n{said.read_text()}") from exc
            yield process
        finally:
            if process.poll() is None:
                process.terminate()
                process.wait(timeout=120)

    def caught_up(self, env: dict[str, str]) -> None:
        self.bench.run_json(
            [sys.executable, "-m", "bench.moments", "caught-up", str(CATCH_UP_TIMEOUT)], env=env
        )

    def start_writer(self, log: Path) -> subprocess.Popen[str]:
        log.unlink(missing_ok=True)
        process = subprocess.Popen(
            [sys.executable, "-m", "bench.paced_writer", str(self.ws.live), str(log)],
            cwd=project.REPO,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        assert process.stdout is not None
        if process.stdout.readline().strip() != "ready":
            raise RuntimeError("the paced writer did not start")
        return process

    # RPO and the writer's latency ------------------------------------------------------

    def recovery_and_latency(self, results: PointInTimeResults) -> None:
        results.database_bytes = project.file_size(self.ws.seed)
        for number in range(self.bench.repeat):
            # Without replication first, then with it, in each round: a drift in the
            # machine's load touches both.
            off = self.writer_alone()
            results.without_replication.append(off)
            self.bench.say(
                f"writer without replication {number + 1}/{self.bench.repeat}: "
                f"p99 {off.p99 * 1000:.2f} ms, worst {off.worst * 1000:.0f} ms"
            )
            run = self.lose_the_disk()
            results.recovery.append(run)
            self.bench.say(
                f"RPO {number + 1}/{self.bench.repeat}: {run.lost_seconds:.2f} s "
                f"({run.lost_rows} of {run.last_logged} commits) lost, ids "
                f"{'contiguous' if run.contiguous else 'WITH A HOLE'}, recovered in "
                f"{run.recovery_seconds:.2f} s; writer p99 {run.latency.p99 * 1000:.2f} ms, "
                f"worst {run.latency.worst * 1000:.0f} ms"
            )

    def writer_alone(self) -> Latency:
        self.fresh_live()
        log = self.ws.scratch / "commits.log"
        writer = self.start_writer(log)
        time.sleep(self.writer_seconds)
        writer.kill()
        writer.wait()
        return latency(paced_writer.read_log(log))

    def lose_the_disk(self) -> Recovery:
        self.fresh_live()
        env = self.file_env("rpo")
        log = self.ws.scratch / "commits.log"
        with self.replicating(env) as replicate:
            writer = self.start_writer(log)
            time.sleep(self.writer_seconds)
            # The disk dies: the command and its Litestream (one process group), and the
            # writer, all at once.
            os.killpg(replicate.pid, signal.SIGKILL)
            writer.kill()
            replicate.wait()
            writer.wait()
        commits = paced_writer.read_log(log)
        shutil.rmtree(self.ws.live.parent)
        machine = self.ws.root / "new-machine"
        project.empty_directory(machine)
        database = machine / "studio.db"
        recovered = measure.check(
            measure.run(
                self.ws.manage("restore_backup", "--at", "latest", "--no-input"),
                env={**env, "STUDIO_DB_PATH": str(database), "BENCH_BACKUP_DIR": str(machine)},
            ),
            "restore_backup --at latest on a new machine",
        )
        ids = committed_ids(database)
        newest = ids[-1] if ids else 0
        last = commits.ids[-1]
        if newest >= last:
            lost = 0.0
        elif newest == 0:
            # Not one commit came back: everything since the writer started was lost.
            lost = commits.times[-1] - commits.times[0]
        else:
            lost = commits.times[-1] - commits.time_of(newest)
        shutil.rmtree(machine)
        self.ws.live.parent.mkdir(parents=True)
        return Recovery(
            last_logged=last,
            recovered=newest,
            lost_seconds=lost,
            contiguous=ids == list(range(1, len(ids) + 1)),
            recovery_seconds=recovered.seconds,
            latency=latency(commits),
        )

    # Restoring a moment ----------------------------------------------------------------

    def restores(self, results: PointInTimeResults) -> None:
        from tests.offsite_servers import BUCKET, S3Server

        results.database_bytes = project.file_size(self.ws.seed)
        self.fresh_live()
        snapshot = self.snapshot()
        moto = self.ws.root / "moto"
        project.empty_directory(moto)
        server = S3Server(moto)
        server.start()
        try:
            sources = {
                FILE_REPLICA: self.file_env("moment"),
                S3_REPLICA: self.s3_env(server.endpoint, BUCKET),
            }
            moments = {}
            for method, env in sources.items():
                moments[method] = self.replica_with_a_moment(env)
                self.bench.say(f"{method}: replica ready")
            for number in range(self.bench.repeat):
                for method in RESTORE_METHODS:
                    self.ws.reset_live("wal")
                    self.bench.forget_safety_backups(snapshot)
                    if method == SNAPSHOT:
                        argv = ["snapshot", snapshot.name]
                        env, expected = self.ws.env(), None
                    else:
                        moment, expected = moments[method]
                        argv, env = ["to-moment", moment.isoformat()], sources[method]
                    run = measure.check(
                        measure.run(
                            [sys.executable, "-m", "bench.moments", *argv],
                            env=env,
                            cwd=project.REPO,
                        ),
                        f"{method}",
                    )
                    timings = json.loads(run.output.strip().splitlines()[-1])
                    restored = MomentRestore(
                        fetch=float(timings.get("fetch", 0.0)),
                        restore=float(timings["restore"]),
                        command=run.seconds,
                        exact=expected is None or committed_ids(self.ws.live) == expected,
                    )
                    results.restore.setdefault(method, []).append(restored)
                    self.bench.say(
                        f"restore {number + 1}/{self.bench.repeat} {method}: fetch "
                        f"{restored.fetch:.2f} s, restore {restored.restore:.2f} s, command "
                        f"{restored.command:.2f} s{'' if restored.exact else ', NOT THE MOMENT'}"
                    )
        finally:
            server.stop()
        self.bench.clear_outputs()
        project.empty_directory(self.replicas)

    def snapshot(self) -> Path:
        made = measure.check(
            measure.run(self.ws.manage("backup_now"), env=self.ws.env()), "backup_now"
        )
        return Path(made.output.strip().splitlines()[-1])

    def replica_with_a_moment(self, env: dict[str, str]) -> tuple[datetime, list[int]]:
        """A replica of the seeded database plus commits before and after a moment; the
        moment, and the ids of the commits before it."""
        project.empty_directory(self.ws.live.parent)
        self.ws.reset_live("wal")
        with self.replicating(env):
            before = commit_rows(self.ws.live, 1, ROWS_AROUND_THE_MOMENT)
            time.sleep(QUIET)
            moment = datetime.now().astimezone()
            time.sleep(QUIET)
            commit_rows(self.ws.live, len(before) + 1, ROWS_AROUND_THE_MOMENT)
            self.caught_up(env)
        return moment, before


def commit_rows(database: Path, first: int, count: int) -> list[int]:
    """Commit ``count`` rows of the writer's table, one transaction each; their ids."""
    ids = list(range(first, first + count))
    with contextlib.closing(sqlite3.connect(database, isolation_level=None)) as connection:
        connection.execute(paced_writer.CREATE)
        for number in ids:
            connection.execute(paced_writer.INSERT, (number, time.time()))
    return ids


def committed_ids(database: Path) -> list[int]:
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as connection:
        try:
            rows = connection.execute(f"SELECT id FROM {paced_writer.TABLE} ORDER BY id")
        except sqlite3.OperationalError:
            return []  # not even the table: nothing the writer committed came back
        return [row[0] for row in rows]


def latency(commits: paced_writer.CommitLog) -> Latency:
    if not commits.times:
        raise RuntimeError("the paced writer committed nothing")
    start = commits.times[0] + WARM_UP
    durations = sorted(
        d for t, d in zip(commits.times, commits.durations, strict=True) if t >= start
    )
    span = commits.times[-1] - start
    return Latency(
        commits=len(durations),
        commits_per_second=len(durations) / max(span, 1e-9),
        p50=percentile(durations, 50),
        p99=percentile(durations, 99),
        worst=max(durations, default=float("nan")),
        errors=len(commits.errors),
    )
