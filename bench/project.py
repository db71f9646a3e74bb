"""The example project's database at the benchmark's size, and the files around it."""

from __future__ import annotations

import os
import shutil
import sqlite3
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MANAGE = REPO / "example_project" / "manage.py"
# django-dbbackup lives here (pip install --target), outside the project's virtualenv.
DBBACKUP_LIB = REPO / ".venv-dbbackup"
OUT = REPO / "bench" / "out"
# A fixed end date and seed make the seeded database the same on every machine.
SEED_END_DATE = "2026-01-31"
JOURNAL_MODES = ("wal", "delete")


@dataclass(frozen=True)
class Workspace:
    root: Path
    size: str

    @property
    def seed(self) -> Path:
        return self.root / f"seed-{self.size}.db"

    @property
    def live(self) -> Path:
        return self.root / "live" / "studio.db"

    @property
    def backups(self) -> Path:
        return self.root / "backups"

    @property
    def dbbackups(self) -> Path:
        return self.root / "dbbackups"

    @property
    def copies(self) -> Path:
        return self.root / "copies"

    @property
    def scratch(self) -> Path:
        return self.root / "scratch"

    def env(self, journal_mode: str = "wal", database: Path | None = None) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "DJANGO_SETTINGS_MODULE": "bench.settings",
                "STUDIO_DB_PATH": str(database or self.live),
                "BENCH_BACKUP_DIR": str(self.backups),
                "BENCH_DBBACKUP_DIR": str(self.dbbackups),
                "BENCH_JOURNAL_MODE": journal_mode,
                "PYTHONPATH": os.pathsep.join([str(REPO), str(MANAGE.parent), str(DBBACKUP_LIB)]),
                # dbbackup spools its copy through the temporary directory.
                "TMPDIR": str(self.scratch),
            }
        )
        return env

    def manage(self, *args: str) -> list[str]:
        return [sys.executable, str(MANAGE), *args]

    def prepare(self) -> None:
        for directory in (self.live.parent, self.backups, self.dbbackups, self.copies):
            directory.mkdir(parents=True, exist_ok=True)
        self.scratch.mkdir(parents=True, exist_ok=True)

    def reset_live(self, journal_mode: str) -> None:
        """Make the live database a fresh copy of the seeded one, in ``journal_mode``."""
        remove_database(self.live)
        shutil.copyfile(self.seed, self.live)
        set_journal_mode(self.live, journal_mode)
        os.sync()


def ensure_dbbackup() -> None:
    if not (DBBACKUP_LIB / "dbbackup").is_dir():
        raise SystemExit(
            f"django-dbbackup is not installed in {DBBACKUP_LIB}; run `make bench-deps`."
        )


def seed_database(workspace: Workspace, log: list[str]) -> None:
    """Create the example project's database of the wanted size, once per size."""
    if workspace.seed.exists():
        return
    from . import measure

    workspace.root.mkdir(parents=True, exist_ok=True)
    workspace.scratch.mkdir(parents=True, exist_ok=True)
    building = workspace.root / f"seeding-{workspace.size}.db"
    remove_database(building)
    env = workspace.env(database=building)
    for args in (
        ("migrate", "--no-input", "-v", "0"),
        ("seed_studio", "--size", workspace.size, "--end-date", SEED_END_DATE),
    ):
        result = measure.check(measure.run(workspace.manage(*args), env=env), " ".join(args))
        log.append(result.output.strip().splitlines()[-1] if result.output.strip() else "")
    connection = sqlite3.connect(building, isolation_level=None)
    try:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        connection.execute("PRAGMA journal_mode=DELETE")
    finally:
        connection.close()
    os.replace(building, workspace.seed)


def set_journal_mode(path: Path, journal_mode: str) -> None:
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        mode = connection.execute(f"PRAGMA journal_mode={journal_mode}").fetchone()[0]
    finally:
        connection.close()
    if mode != journal_mode:
        raise RuntimeError(f"{path} is in {mode} mode, not {journal_mode}")


def remove_database(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def empty_directory(directory: Path) -> None:
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)


def file_size(path: Path) -> int:
    return path.stat().st_size
