"""A good guest on any platform: where Python has no fcntl (Windows, simulated here by taking
the module away), Django starts, check warns, backups are refused with one clear line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO, StudioDB, command_env

WITHOUT_FCNTL = (
    "import sys; sys.modules['fcntl'] = None; "  # import fcntl now raises ImportError
    "from django.core.management import execute_from_command_line; "
    "execute_from_command_line(['manage.py', *sys.argv[1:]])"
)


def without_fcntl(db: StudioDB, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_FCNTL, *args],
        env=command_env(db),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_without_fcntl_django_starts_and_check_warns(studio_db: StudioDB) -> None:
    checked = without_fcntl(studio_db, "check")
    assert checked.returncode == 0, checked.stderr
    assert "studio_backups.W013" in checked.stderr
    assert "Traceback" not in checked.stderr


def test_without_fcntl_a_backup_is_refused_in_one_line(studio_db: StudioDB) -> None:
    refused = without_fcntl(studio_db, "backup_now")
    assert refused.returncode == 1
    [line] = [x for x in refused.stderr.splitlines() if x.startswith("CommandError: ")]
    assert "this Python has no file locks" in line
    assert "Traceback" not in refused.stderr
    assert not list(studio_db.backups.glob("backup_*.db"))


def test_without_locks_every_lock_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from django_studio_backups import checks, locking

    monkeypatch.setattr(locking, "LOCKS_AVAILABLE", False)
    with pytest.raises(locking.LockUnavailable), locking.exclusive(tmp_path, 1):
        pass
    [warning] = checks.check_file_locks()
    assert warning.id == "studio_backups.W013"
