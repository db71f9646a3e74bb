"""A small run of the benchmarks (SIZE=10M, one repetition), so that `make bench` keeps working."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench import project

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_bench_runs_end_to_end_and_writes_its_report(tmp_path: Path) -> None:
    assert (project.DBBACKUP_LIB / "dbbackup").is_dir(), "run `make bench-deps` first"
    report = tmp_path / "RESULTS.md"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--size",
            "10M",
            "--repeat",
            "1",
            "--cap",
            "3",
            "--listing",
            "20,1000",
            "--out",
            str(tmp_path / "out"),
            "--report",
            str(report),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    text = report.read_text(encoding="utf-8")
    for method in ("cp + fsync", "sqlite3 .backup", "VACUUM INTO", "dbbackup", "backup_now (ours)"):
        assert re.search(rf"^\| {re.escape(method)} \| \d+\.\d\d \(", text, re.MULTILINE), method
    for heading in ("WAL mode", "rollback-journal mode", "## 4. Restore", "## 5. `list_backups`"):
        assert heading in text
    assert re.search(r"^\| restore_backup \(ours\) \| \d+\.\d\d ", text, re.MULTILINE)
    assert re.search(r"^\| 1,000 \| \d+\.\d ", text, re.MULTILINE)
    assert "## Targets" in text
    # The example project was seeded to the size asked for.
    seeded = tmp_path / "out" / "10M" / "seed-10M.db"
    assert seeded.read_bytes()[:16] == b"SQLite format 3\x00"
    assert 9 * 1024 * 1024 < seeded.stat().st_size < 12 * 1024 * 1024
