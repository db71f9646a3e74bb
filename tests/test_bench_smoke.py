"""A small run of the benchmarks (SIZE=10M, one repetition), so that `make bench` keeps working."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench import project, report

REPO = Path(__file__).resolve().parent.parent


def run_bench(out: Path, report_path: Path, *args: str, timeout: float) -> str:
    """``python -m bench`` at 10M, one run of each measurement, with ``args``; the report."""
    where = ("--out", str(out), "--report", str(report_path))
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--size", "10M", "--repeat", "1", *args, *where],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return report_path.read_text(encoding="utf-8")


@pytest.mark.slow
def test_bench_runs_end_to_end_and_writes_its_report(tmp_path: Path) -> None:
    assert (project.DBBACKUP_LIB / "dbbackup").is_dir(), "run `make bench-deps` first"
    text = run_bench(
        tmp_path / "out",
        tmp_path / "RESULTS.md",
        *("--cap", "3", "--listing", "20,1000", "--writer-seconds", "2"),
        timeout=240,
    )
    for method in ("cp + fsync", "sqlite3 .backup", "VACUUM INTO", "dbbackup", "backup_now (ours)"):
        assert re.search(rf"^\| {re.escape(method)} \| \d+\.\d\d \(", text, re.MULTILINE), method
    for heading in ("WAL mode", "rollback-journal mode", "## 4. Restore", "## 5. `list_backups`"):
        assert heading in text
    assert re.search(r"^\| restore_backup \(ours\) \| \d+\.\d\d ", text, re.MULTILINE)
    assert re.search(r"^\| 1,000 \| \d+\.\d ", text, re.MULTILINE)
    assert "## Targets" in text
    assert text.index("## Targets") < text.index("## 6. Point-in-time recovery")
    # The example project was seeded to the size asked for.
    seeded = tmp_path / "out" / "10M" / "seed-10M.db"
    assert seeded.read_bytes()[:16] == b"SQLite format 3\x00"
    assert 9 * 1024 * 1024 < seeded.stat().st_size < 12 * 1024 * 1024


@pytest.mark.slow
def test_point_in_time_phases_alone_measure_the_rpo_and_keep_the_rest_of_the_report(
    tmp_path: Path,
) -> None:
    report_path = tmp_path / "RESULTS.md"
    earlier = "# Benchmark results\n\n## 1–2. Backup time\n\n| cp + fsync | 0.52 |\n\n"
    notes = f"{report.NOTES_MARKER}\n\n## What the numbers say\n"
    report_path.write_text(earlier + notes, encoding="utf-8")
    text = run_bench(
        tmp_path / "out",
        report_path,
        *("--only", "point-in-time", "--writer-seconds", "3"),
        timeout=300,
    )
    # The other sections and the notes are left as they were, section 6 between them.
    assert text.startswith(earlier)
    assert text.endswith(notes)
    assert "`python -m bench --size 10M --only point-in-time`" in text
    assert re.search(r"^\| 1 \| [\d,]+ \| [\d,]+ \| [\d,]+ \| \d+\.\d\d \| yes \|", text, re.M)
    assert re.search(r"^\| off \| [\d,]+ \| [\d,]+ \| \d+\.\d\d ", text, re.MULTILINE)
    assert re.search(r"^\| on \(`manage.py replicate`\) \| .* \| \d+\.\d\d×", text, re.M)
    for method in ("snapshot backup", "moment from a file replica", "moment from S3 \\(moto\\)"):
        assert re.search(rf"^\| {method}.* \| \d+\.\d\d×", text, re.MULTILINE), method
    assert "- RPO ≤ 2 s at the default sync interval: worst " in text
    assert "runs — holds" in text

    data = json.loads((tmp_path / "out" / "10M" / "results.json").read_text())["point_in_time"]
    [recovery] = data["recovery"]
    # The writer committed all along, the new machine got a prefix of its commits back with
    # no hole, and the RPO was measured from them.
    assert recovery["contiguous"]
    # (One more than logged when the kill fell between a commit and its log line.)
    assert 0 < recovery["recovered"] <= recovery["last_logged"] + 1
    assert recovery["lost_seconds"] >= 0
    assert recovery["latency"]["commits"] > 0
    assert recovery["latency"]["errors"] == 0
    assert data["without_replication"][0]["commits"] > 0
    for method in ("moment from a file replica", "moment from S3 (moto)"):
        [restored] = data["restore"][method]
        assert restored["exact"], method
        assert restored["fetch"] > 0


def test_splicing_section_6_replaces_it_or_adds_it_before_the_notes() -> None:
    block = f"{report.POINT_IN_TIME_BEGIN}\nnew\n{report.POINT_IN_TIME_END}"
    old_block = f"{report.POINT_IN_TIME_BEGIN}\nold\n{report.POINT_IN_TIME_END}"
    notes = f"{report.NOTES_MARKER}\nnotes\n"
    assert report.splice_point_in_time(f"# R\n\n{old_block}\n\n{notes}", block) == (
        f"# R\n\n{block}\n\n{notes}"
    )
    assert report.splice_point_in_time(f"# R\n\n{notes}", block) == (f"# R\n\n{block}\n\n\n{notes}")
    assert report.splice_point_in_time("# R\n", block) == f"# R\n\n{block}\n"
