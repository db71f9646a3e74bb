from __future__ import annotations

import contextlib
import io
import json
import logging
import re
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.core.management.base import OutputWrapper

from django_studio_backups import engine, services
from django_studio_backups.management.base import progress_line
from tests.conftest import REPO, StudioDB, command_env, fill_database, mounted_tmpfs, run_manage


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def call(*args: str, **kwargs: Any) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out, **kwargs)
    return out.getvalue()


def test_backup_now_prints_the_path(studio_db: StudioDB) -> None:
    result = run_manage(studio_db, "backup_now")
    assert result.returncode == 0, result.stderr
    path = Path(result.stdout.strip())
    assert path.parent == studio_db.backups
    assert studio_db.clients(path) == ["Ana", "Beto"]
    # Not a terminal: no progress drawn.
    assert "%" not in result.stdout


def test_a_failing_command_exits_non_zero_with_one_line(
    studio_db: StudioDB, tmp_path: Path
) -> None:
    with mounted_tmpfs(tmp_path / "ro", "ro,size=64k") as readonly:
        result = run_manage(studio_db, "backup_now", DIRECTORY=str(readonly))
        assert result.returncode == 1
        assert result.stderr.startswith("CommandError: Cannot use the backup folder")
        assert "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
        traced = run_manage(studio_db, "backup_now", "--traceback", DIRECTORY=str(readonly))
        assert traced.returncode == 1
        assert "Traceback" in traced.stderr


def test_a_misconfiguration_is_a_command_error(studio_db: StudioDB) -> None:
    result = run_manage(studio_db, "list_backups", "--database", "nope")
    assert result.returncode == 1
    assert "CommandError: STUDIO_BACKUPS uses the database alias 'nope'" in result.stderr


def test_progress_is_drawn_on_a_terminal(
    studio_db: StudioDB, monkeypatch: pytest.MonkeyPatch
) -> None:
    fill_database(studio_db.path, 32)
    monkeypatch.setattr(engine, "POLL_INTERVAL", 0.001)
    # The project logs to the terminal the progress is drawn on.
    terminal = Terminal()
    handler = logging.StreamHandler(terminal)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger = logging.getLogger("django_studio_backups")
    logger.addHandler(handler)
    monkeypatch.setattr(logger, "level", logging.INFO)
    try:
        call_command("backup_now", stdout=terminal)
    finally:
        logger.removeHandler(handler)
    text = terminal.getvalue()
    assert "%" in text
    assert "INFO Backed up" in text
    assert text.rstrip().endswith(".db")
    # Nothing follows a percentage on its line: the line is cleared before a log line
    # (100%2026-12-01 09:37:12,832 INFO … was the bug).
    assert re.search(r"\d%[^\r]", text) is None, text


def test_backup_if_needed_once_a_day(studio_db: StudioDB) -> None:
    first = run_manage(studio_db, "backup_if_needed")
    assert first.returncode == 0, first.stderr
    assert Path(first.stdout.strip()).exists()
    second = run_manage(studio_db, "backup_if_needed")
    assert second.returncode == 0
    assert second.stdout.startswith("Today's backup already exists (last backup: ")
    assert len(services.list_backups()) == 1


def test_list_backups_table_and_json(studio_db: StudioDB) -> None:
    assert call("list_backups") == "No backups yet.\n"
    path = services.create_backup_now()
    assert path is not None
    table = call("list_backups").splitlines()
    assert table[0].split() == ["NAME", "DATE", "SIZE", "KIND", "VERIFIED"]
    assert table[1].startswith(path.name)
    assert table[1].split()[-2:] == ["manual", "quick"]
    rows = json.loads(call("list_backups", "--json"))
    assert rows[0]["name"] == path.name
    assert rows[0]["path"] == str(path)
    assert rows[0]["size"] == path.stat().st_size
    # ISO 8601, as scripts expect: 2026-12-01T09:30:42-07:00.
    made = datetime.fromisoformat(rows[0]["created_at"])
    assert rows[0]["created_at"] == made.isoformat()
    assert "T" in rows[0]["created_at"]


def test_list_backups_stops_quietly_when_the_reader_leaves(studio_db: StudioDB) -> None:
    # Enough backups for more output than a pipe holds (manifests are all listing reads).
    studio_db.backups.mkdir()
    for n in range(3000):
        name = f"backup_20260101_{n // 3600:02d}{n // 60 % 60:02d}{n % 60:02d}.db"
        (studio_db.backups / name).write_bytes(b"")
        (studio_db.backups / f"{name}.json").write_text('{"kind": "daily"}')
    process = subprocess.Popen(
        [sys.executable, "-m", "django", "list_backups"],
        env=command_env(studio_db),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    assert process.stdout.readline().startswith("NAME")
    process.stdout.close()  # as `head -1` does
    errors = process.communicate(timeout=60)[1]
    assert "Traceback" not in errors
    assert "BrokenPipeError" not in errors


def test_list_backups_shows_a_failed_attempt(studio_db: StudioDB, tmp_path: Path) -> None:
    assert services.create_backup_now() is not None
    with mounted_tmpfs(tmp_path / "ro", "ro,size=64k") as readonly:
        failed = run_manage(studio_db, "backup_now", DIRECTORY=str(readonly))
        assert failed.returncode == 1
    result = run_manage(studio_db, "list_backups")
    assert result.returncode == 0
    assert result.stderr.startswith("Warning: the last backup attempt failed at ")
    assert "Read-only file system" in result.stderr
    assert services.create_backup_now() is not None
    assert run_manage(studio_db, "list_backups").stderr == ""


def test_restore_backup_without_asking(studio_db: StudioDB) -> None:
    backup = services.create_backup_now()
    assert backup is not None
    studio_db.add_clients("Carla")
    result = run_manage(studio_db, "restore_backup", backup.name, "--no-input")
    assert result.returncode == 0, result.stderr
    assert studio_db.clients() == ["Ana", "Beto"]
    lines = result.stdout.splitlines()
    assert lines[0] == f"Restored {backup.name}."
    safety = lines[1].removeprefix("Safety backup of the previous data: ")
    assert studio_db.clients(studio_db.backups / safety) == ["Ana", "Beto", "Carla"]


@pytest.mark.parametrize(
    ("answer", "restored"),
    [("yes\n", True), ("y\n", True), ("Y\n", True), ("no\n", False), ("", False)],
)
def test_restore_backup_asks_first(studio_db: StudioDB, answer: str, restored: bool) -> None:
    backup = services.create_backup_now()
    assert backup is not None
    studio_db.add_clients("Carla")
    result = run_manage(studio_db, "restore_backup", backup.name, input=answer)
    # What the restore takes away, before the question.
    assert "  Clients: 3 now -> 2 in the backup (1 will be lost)" in result.stdout
    assert "A safety backup of the current data is made first" in result.stdout
    assert "Restore? [y/N]" in result.stdout
    assert result.returncode == 0, result.stderr
    if restored:
        assert studio_db.clients() == ["Ana", "Beto"]
    else:
        assert result.stdout.rstrip().endswith("Cancelled.")
        assert studio_db.clients() == ["Ana", "Beto", "Carla"]


def test_restore_backup_names_migration_differences(studio_db: StudioDB) -> None:
    with contextlib.closing(studio_db.connect()) as connection:
        connection.execute("DELETE FROM django_migrations WHERE app = 'studio'")
        connection.execute(
            "INSERT INTO django_migrations (app, name, applied) "
            "VALUES ('studio', '0099_future', '2026-01-01')"
        )
    backup = services.create_backup_now()
    assert backup is not None
    err = io.StringIO()
    call_command("restore_backup", backup.name, "--no-input", stdout=io.StringIO(), stderr=err)
    assert "predates these migrations; run migrate after the restore: studio.0001_initial" in (
        err.getvalue()
    )
    assert "migrations this code does not know: studio.0099_future" in err.getvalue()


def test_restore_backup_of_a_bad_file_fails(studio_db: StudioDB) -> None:
    backup = services.create_backup_now()
    assert backup is not None
    backup.write_bytes(b"not a database at all" * 10)
    with pytest.raises(CommandError, match="cannot be restored"):
        call_command("restore_backup", backup.name, "--no-input")
    result = run_manage(studio_db, "restore_backup", "../studio.db", "--no-input")
    assert result.returncode == 1
    assert "is not in the backup folder" in result.stderr


def test_restore_shows_progress_on_a_terminal(
    studio_db: StudioDB, monkeypatch: pytest.MonkeyPatch
) -> None:
    fill_database(studio_db.path, 32)
    backup = services.create_backup_now()
    assert backup is not None
    monkeypatch.setattr(engine, "POLL_INTERVAL", 0.001)
    out = Terminal()
    call_command("restore_backup", backup.name, "--no-input", stdout=out)
    assert "%" in out.getvalue()
    assert f"Restored {backup.name}." in out.getvalue()


def test_verify_backups(studio_db: StudioDB) -> None:
    assert call("verify_backups") == "No backups to verify.\n"
    good = services.create_backup_now()
    bad = services.create_backup_now()
    assert good is not None
    assert bad is not None
    assert call("verify_backups", "--full").splitlines()[-1] == "All 2 backups passed."
    with open(bad, "r+b") as f:
        f.seek(5000)
        f.write(b"\x00\x01\x02")
    result = run_manage(studio_db, "verify_backups")
    assert result.returncode == 1
    # Each message once, without the name twice.
    assert f"BAD  {bad.name} does not match the SHA-256" in result.stdout
    assert f"OK   {good.name}" in result.stdout
    assert "1 of 2 backups failed verification." in result.stderr
    assert call("verify_backups", good.name) == f"OK   {good.name}\nThe backup passed.\n"
    with pytest.raises(CommandError, match="1 of 1 backup failed verification"):
        call_command("verify_backups", bad.name, stdout=io.StringIO())
    with pytest.raises(CommandError, match="no backup called"):
        call_command("verify_backups", "backup_20000101_000000.db")


def test_restore_backup_onto_a_lost_database(studio_db: StudioDB) -> None:
    backup = services.create_backup_now()
    assert backup is not None
    for suffix in ("", "-wal", "-shm"):
        Path(f"{studio_db.path}{suffix}").unlink(missing_ok=True)
    out = call("restore_backup", backup.name, "--no-input")
    assert out == f"Restored {backup.name}.\n"
    assert studio_db.clients() == ["Ana", "Beto"]


def test_progress_is_redrawn_only_when_the_percentage_changes() -> None:
    out = Terminal()
    with progress_line(OutputWrapper(out), 1) as show:
        assert show is not None
        for done in (0, 1, 2, 50, 100):
            show(done, 200)
        show(0, 0)
        assert out.getvalue() == "\r  0%\r  1%\r 25%\r 50%\r100%"
    # Cleared at the end, so that what follows starts a line of its own.
    assert out.getvalue().endswith("\r100%\r     \r")
    with progress_line(OutputWrapper(io.StringIO()), 1) as show:
        assert show is None
    with progress_line(OutputWrapper(Terminal()), 0) as show:
        assert show is None


def test_v0_prints_nothing_but_problems(studio_db: StudioDB) -> None:
    assert call("backup_now", verbosity=0) == ""
    assert call("backup_if_needed", verbosity=0) == ""
    assert call("verify_backups", verbosity=0) == ""
    assert call("restore_backup", "--latest", "--no-input", verbosity=0) == ""
    [damaged, *_] = services.backups()
    damaged.path.write_bytes(b"x" * damaged.size)
    out = io.StringIO()
    with pytest.raises(CommandError, match="1 of 2 backups failed verification"):
        call_command("verify_backups", verbosity=0, stdout=out)
    [line] = out.getvalue().splitlines()
    assert line.startswith(f"BAD  {damaged.name} does not match the SHA-256 in its manifest")


def test_v2_shows_what_the_app_logs(studio_db: StudioDB) -> None:
    quiet = run_manage(studio_db, "backup_now")
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr == ""
    chatty = run_manage(studio_db, "backup_now", "-v2")
    assert chatty.returncode == 0, chatty.stderr
    assert f"Backed up {studio_db.path} to {chatty.stdout.strip()}" in chatty.stderr


def test_verify_backups_json(studio_db: StudioDB) -> None:
    assert json.loads(call("verify_backups", "--json")) == []
    good = services.backup_now()
    bad = services.backup_now()
    with open(bad.path, "r+b") as f:
        f.seek(5000)
        f.write(b"\x00\x01\x02")
    result = run_manage(studio_db, "verify_backups", "--json", "--full")
    assert result.returncode == 1
    assert json.loads(result.stdout) == [
        {
            "name": bad.name,
            "check": "integrity_check",
            "problems": [f"{bad.name} does not match the SHA-256 in its manifest"],
            "passed": False,
        },
        {"name": good.name, "check": "integrity_check", "problems": [], "passed": True},
    ]
    assert result.stderr.strip() == "CommandError: 1 of 2 backups failed verification."


def test_restore_backup_latest(studio_db: StudioDB) -> None:
    with pytest.raises(CommandError, match="There is no backup to restore yet"):
        call_command("restore_backup", "--latest", "--no-input")
    older = services.backup_now()
    studio_db.add_clients("Carla")
    newest = services.backup_now()
    studio_db.add_clients("Dora")
    out = call("restore_backup", "--latest", "--no-input")
    assert out.splitlines()[:2] == [
        f"The latest backup is {newest.name}.",
        f"Restored {newest.name}.",
    ]
    assert studio_db.clients() == ["Ana", "Beto", "Carla"]
    # A backup that failed its check is passed over, and so is the restore's safety backup.
    assert services.backups()[0].kind == "safety"
    assert services.verify(older, full=True) == []
    newest.path.write_bytes(b"x" * newest.size)
    assert services.verify(newest) != []
    assert services.latest_backup() == services.find_backup(older.name)
    for both in (["restore_backup", newest.name, "--latest"], ["restore_backup"]):
        with pytest.raises(CommandError, match="Name the backup to restore, or pass --latest"):
            call_command(*both, "--no-input")


def test_restore_backup_latest_twice_does_not_undo_the_first(studio_db: StudioDB) -> None:
    # The safety backup holds the data the restore replaced: were it "the latest", a second
    # run (a retried script, say) would put back what the first took away.
    services.backup_now()
    studio_db.add_clients("Carla")
    call("restore_backup", "--latest", "--no-input")
    assert services.backups()[0].kind == "safety"
    call("restore_backup", "--latest", "--no-input")
    assert studio_db.clients() == ["Ana", "Beto"]
