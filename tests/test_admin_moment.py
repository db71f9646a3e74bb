"""The admin's part of point-in-time restores: the window and the replication's state on the
Backups page, read from what `manage.py replicate` recorded (never from the network), and
"Restore to a moment…", with the real Litestream and a folder replica."""

from __future__ import annotations

import contextlib
import hashlib
import re
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from django.contrib.admin.models import ADDITION, CHANGE, LogEntry
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone
from pytest_django.fixtures import Settings as SettingsWrapper

from django_studio_backups import (
    archive,
    conf,
    locking,
    replication,
    replication_record,
    services,
    state,
)
from django_studio_backups.replication_conf import get_replication_config
from tests.conftest import StudioDB
from tests.replication_helpers import add_one_by_one, replicating, settle, wait_for_replica
from tests.test_admin import logged_in, staff, texts, url

# A restore refuses to run inside a transaction.
pytestmark = pytest.mark.django_db(databases=["default", "studio"], transaction=True)

ZONE = ZoneInfo("America/Hermosillo")
INPUT = "%Y-%m-%dT%H:%M:%S"


@pytest.fixture
def replica(tmp_path: Path) -> dict[str, Any]:
    # LAG_WARNING 2: the watcher records what Litestream says every second.
    return {"URL": f"file://{tmp_path / 'replica'}", "SYNC_INTERVAL": 0.5, "LAG_WARNING": 2}


@pytest.fixture
def configured(studio_db: StudioDB, settings: SettingsWrapper, replica: dict[str, Any]) -> None:
    """Replication set up, `replicate` not running."""
    settings.STUDIO_BACKUPS = {**settings.STUDIO_BACKUPS, "REPLICATION": replica}


def recorded_after(moment: datetime, timeout: float = 60) -> services.ReplicationSeen:
    """What `replicate` records once it has asked Litestream after ``moment``."""
    deadline = time.monotonic() + timeout
    while True:
        seen = services.replication_seen()
        if seen.current and seen.at is not None and seen.at > moment and seen.lag == 0:
            return seen
        assert time.monotonic() < deadline, f"replicate recorded nothing after {moment}: {seen}"
        time.sleep(0.2)


def attribute(page: str, name: str) -> str:
    [tag] = re.findall(r'<input [^>]*name="moment"[^>]*>', page)
    found = re.search(rf'\b{name}="([^"]*)"', tag)
    assert found is not None, tag
    return found.group(1)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_restore_to_a_moment_between_two_groups_of_writes(
    studio_db: StudioDB,
    settings: SettingsWrapper,
    replica: dict[str, Any],
    admin_client: Client,
    admin_user: User,
) -> None:
    with replicating(studio_db, settings, replica, {}):
        add_one_by_one(studio_db, "a0", "a1")
        # The picker gives whole seconds: a margin of more than one on either side.
        moment = settle(3)
        add_one_by_one(studio_db, "b0", "b1")
        wait_for_replica(studio_db, {"b0", "b1"})
        seen = recorded_after(timezone.now())
        assert seen.start is not None
        assert seen.start < moment

        page = admin_client.get(url("changelist")).content.decode()
        start = seen.start.astimezone(ZONE).strftime("%d/%m/%Y %H:%M")
        until = r"(now|\d+ seconds? ago)"
        assert re.search(rf"Any moment can be restored from {start} to {until}\.", page)
        assert re.search(r"Replication: running, up to date \(as of \d\d:\d\d:\d\d\)\.", page)
        assert url("restore_moment") in page
        assert "not running" not in page

        form = admin_client.get(url("restore_moment"))
        assert form.status_code == 200
        page = form.content.decode()
        assert 'type="datetime-local"' in page
        assert 'step="1"' in page
        # The window, in the studio's time zone, to the second.
        earliest = datetime.strptime(attribute(page, "min"), INPUT).replace(tzinfo=ZONE)
        assert timedelta(0) <= earliest - seen.start < timedelta(seconds=1)
        latest = datetime.strptime(attribute(page, "max"), INPUT).replace(tzinfo=ZONE)
        assert abs(latest - timezone.now()) < timedelta(seconds=5)
        assert "In the studio&#x27;s time (America/Hermosillo), to the second." in page

        chosen = moment.astimezone(ZONE).strftime(INPUT)
        response = admin_client.post(url("restore_moment"), {"moment": chosen})
        [fetched] = [b for b in services.backups() if b.kind == "point-in-time"]
        assert response.status_code == 302
        assert response["Location"] == url("restore", fetched.name)
        assert studio_db.clients(fetched.path) == ["Ana", "Beto", "a0", "a1"]
        # Nothing is restored yet: the same confirmation as for any backup comes first.
        assert studio_db.clients() == ["Ana", "Beto", "a0", "a1", "b0", "b1"]
        confirmation = admin_client.get(response["Location"]).content.decode()
        assert f"restore the database from the backup “{fetched.name}”" in confirmation
        assert "Clients: 6 now → 4 in the backup (2 will be lost)" in confirmation
        assert "from the replica" in confirmation  # its kind
        assert "A safety backup of the current data is made first" in confirmation

        response = admin_client.post(response["Location"], {"post": "yes"}, follow=True)
    assert studio_db.clients() == ["Ana", "Beto", "a0", "a1"]
    [safety] = [b for b in services.backups() if b.kind == "safety"]
    assert studio_db.clients(safety.path) == ["Ana", "Beto", "a0", "a1", "b0", "b1"]
    assert texts(response)[0] == (
        f"Restored the database from {fetched.name}. The data as it was just before is in "
        f"the safety backup {safety.name}."
    )
    history = [
        (e.action_flag, e.object_repr, e.change_message) for e in LogEntry.objects.order_by("pk")
    ]
    assert history == [
        (
            ADDITION,
            fetched.name,
            "Fetched from the replica: the database as it was at "
            f"{moment.astimezone(ZONE).strftime('%d/%m/%Y %H:%M:%S')}.",
        ),
        (
            CHANGE,
            fetched.name,
            f"Restored the database from this backup. Safety backup: {safety.name}.",
        ),
    ]


def test_a_moment_after_the_replicas_last_change_says_how_old_the_data_is(
    studio_db: StudioDB,
    settings: SettingsWrapper,
    replica: dict[str, Any],
    admin_client: Client,
) -> None:
    with replicating(studio_db, settings, replica, {}) as replicator:
        add_one_by_one(studio_db, "r0")
        wait_for_replica(studio_db, {"r0"})
        code, output = replicator.stop()
        assert code == 0, output
    # Replication stopped (unnoticed); the studio goes on working.
    time.sleep(2)
    studio_db.add_clients("unreplicated")
    chosen = settle().astimezone(ZONE).replace(microsecond=0)
    response = admin_client.post(
        url("restore_moment"), {"moment": chosen.strftime(INPUT)}, follow=True
    )
    [fetched] = [b for b in services.backups() if b.kind == "point-in-time"]
    assert response.redirect_chain == [(url("restore", fetched.name), 302)]
    assert studio_db.clients(fetched.path) == ["Ana", "Beto", "r0"]
    assert fetched.created_at < chosen - timedelta(seconds=2)
    when = fetched.created_at.astimezone(ZONE).strftime("%d/%m/%Y %H:%M:%S")
    assert texts(response) == [
        f"The replica holds no change between {when} and the moment chosen, "
        f"{chosen.strftime('%d/%m/%Y %H:%M:%S')}: the backup holds the data as it was at "
        f"{when}. If “manage.py replicate” was not running then, what was saved after it is "
        "not in the replica; the safety backup made before the restore keeps it."
    ]
    assert LogEntry.objects.get().change_message == (
        f"Fetched from the replica: the database as it was at {when}."
    )


def test_a_bad_moment_shows_the_form_again_and_changes_nothing(
    studio_db: StudioDB,
    settings: SettingsWrapper,
    replica: dict[str, Any],
    admin_client: Client,
) -> None:
    with replicating(studio_db, settings, replica, {}):
        add_one_by_one(studio_db, "a0")
        wait_for_replica(studio_db, {"a0"})
        seen = recorded_after(timezone.now())
        assert seen.start is not None
        oldest = seen.start.astimezone(ZONE).strftime("%d/%m/%Y %H:%M:%S")
        backups = sorted(b.name for b in services.backups())
        cases = {
            "": "Choose the date and time to restore.",
            "yesterday at five": "“yesterday at five” is not a date and time. Pick one in the "
            "calendar, or type it as ",
            "2999-01-01T00:00:00": "01/01/2999 00:00:00 has not happened yet: choose a moment "
            "in the past.",
            "2001-01-01T00:00": "The replica does not go back to 01/01/2001 00:00:00: the "
            f"oldest moment it can restore is {oldest}. Choose a later moment, or restore an "
            "older backup from the list.",
        }
        for given, error in cases.items():
            response = admin_client.post(url("restore_moment"), {"moment": given})
            assert response.status_code == 200, given
            page = response.content.decode()
            assert "Please correct the error below." in page
            [shown] = re.findall(r'<ul class="errorlist[^"]*"[^>]*><li>(.*?)</li>', page, re.S)
            assert shown.replace("&#x27;", "'").startswith(error), shown
            assert f'value="{given}"' in page or not given
            assert studio_db.clients() == ["Ana", "Beto", "a0"]
            assert sorted(b.name for b in services.backups()) == backups
    assert LogEntry.objects.count() == 0


# What the page says of the replication, from the record ---------------------------------


def record(config: conf.Config, **values: Any) -> None:
    state.update(config.state_file, **{state.REPLICATION_SEEN: values})


def ago(**span: float) -> timedelta:
    """A time that long before the test runs."""
    return timedelta(**span)


@contextlib.contextmanager
def running(config: conf.Config) -> Iterator[None]:
    """As `manage.py replicate` says it runs: by holding its lock."""
    archive.ensure_directory(config.directory)
    with locking.exclusive(config.directory / replication.LOCK_NAME, 0):
        yield


def box(client: Client) -> tuple[str, str, list[str]]:
    """The window, the state and the warnings the Backups page shows."""
    page = client.get(url("changelist")).content.decode()
    window = re.search(r'<p id="studio-backups-window">(.*?)</p>', page, re.S)
    state_line = re.search(r'<p id="studio-backups-replication-state">(.*?)</p>', page, re.S)
    assert window is not None
    assert state_line is not None
    warnings = re.findall(r'<li class="warning">(.*?)</li>', page, re.S)
    return window.group(1), state_line.group(1), warnings


NOT_RUNNING = (
    "Continuous replication is not running: what is saved from now on cannot be restored to a "
    "moment. Ask whoever set up the server to start “manage.py replicate”."
)


@pytest.mark.usefixtures("configured")
@pytest.mark.parametrize(
    ("is_running", "values", "window", "state_line", "warning"),
    [
        (False, None, "The moments that can be restored are not known yet.", "not running.", ""),
        (
            True,
            # (A record a little ahead of this clock: still now.)
            {"at": ago(seconds=-2), "start": ago(days=2), "end": ago(minutes=5), "lag": 0},
            "Any moment can be restored from {start} to now.",
            r"running, up to date \(as of \d\d:\d\d:\d\d\)\.",
            None,
        ),
        (
            True,
            None,
            "The moments that can be restored are not known yet.",
            "running; it reports its state a few seconds after it starts.",
            None,
        ),
        (
            True,
            {"at": ago(seconds=3), "start": ago(days=2), "end": ago(seconds=9), "lag": 0},
            "Any moment can be restored from {start} to [34] seconds ago.",
            r"running, up to date \(as of \d\d:\d\d:\d\d\)\.",
            None,
        ),
        (
            True,
            {"at": ago(seconds=1), "start": ago(days=2), "end": ago(seconds=2), "lag": 1},
            "Any moment can be restored from {start} to [23] seconds ago.",
            r"running, 1 second behind \(as of \d\d:\d\d:\d\d\)\.",
            None,
        ),
        (
            True,
            {"at": ago(seconds=1), "start": ago(days=2), "end": ago(seconds=91), "lag": 90},
            "Any moment can be restored from {start} to 1.minute ago.",
            r"running, 90 seconds behind \(as of \d\d:\d\d:\d\d\)\.",
            "The replica is 90 seconds behind: the newest changes cannot be restored to a moment "
            "yet. If it keeps happening, ask whoever set up the server to check the replica’s "
            "storage.",
        ),
        (
            True,
            {
                "at": ago(minutes=10),
                "start": ago(days=2),
                "end": ago(hours=3, minutes=1),
                "lag": 0,
                "error": "litestream ltx failed: timeout",
            },
            "Any moment can be restored from {start} to 3.hours?, 1.minutes? ago.",
            r"running, not reported since \d\d/\d\d/\d{4} \d\d:\d\d\.",
            r"Continuous replication has not reported since \d\d/\d\d/\d{4} \d\d:\d\d: what the "
            "page says of it may be out of date. If it keeps happening, ask whoever set up the "
            "server to check the replica’s storage.<br>"
            '<small class="studio-backups-detail">Technical detail: litestream ltx failed: '
            "timeout</small>",
        ),
        (
            False,
            {"at": ago(days=3), "start": ago(days=9), "end": ago(days=3, minutes=1), "lag": 0},
            r"Any moment can be restored from {start} to \d\d/\d\d/\d{{4}} \d\d:\d\d\.",
            "not running.",
            "",
        ),
        (
            False,
            {"at": ago(minutes=1), "start": None, "end": None, "lag": 0},
            "The replica holds nothing yet: no moment can be restored from it.",
            "not running.",
            "",
        ),
    ],
)
def test_the_page_shows_the_recorded_window_and_state(
    studio_db: StudioDB,
    admin_client: Client,
    is_running: bool,
    values: dict[str, Any] | None,
    window: str,
    state_line: str,
    warning: str | None,
) -> None:
    config = conf.get_config()
    now = timezone.now()
    if values is not None:
        values = {
            k: (now - v).isoformat() if isinstance(v, timedelta) else v for k, v in values.items()
        }
        record(config, **values)
    with running(config) if is_running else contextlib.nullcontext():
        shown_window, shown_state, warnings = box(admin_client)
    start = ""
    if values is not None and values["start"] is not None:
        start = datetime.fromisoformat(values["start"]).astimezone(ZONE).strftime("%d/%m/%Y %H:%M")
    assert re.fullmatch(window.format(start=start), shown_window), shown_window
    assert re.fullmatch(f"Replication: {state_line}", shown_state), shown_state
    # "" stands for the warning that replication is not running.
    expected = [] if warning is None else [re.escape(NOT_RUNNING) if warning == "" else warning]
    replication_warnings = [w for w in warnings if "replica" in w.lower()]
    assert len(replication_warnings) == len(expected), warnings
    for pattern, shown in zip(expected, replication_warnings, strict=True):
        assert re.fullmatch(pattern, shown.replace("&#x27;", "’").replace("'", "’")), shown


def test_an_unreadable_record_is_no_record(studio_db: StudioDB, configured: None) -> None:
    config = conf.get_config()
    record(config, at="not a time", start=3, lag="fast", error="")
    seen = services.replication_seen()
    assert (seen.at, seen.start, seen.end, seen.lag, seen.error) == (None,) * 5
    state.update(config.state_file, **{state.REPLICATION_SEEN: ["not", "a", "dict"]})
    assert services.replication_seen().at is None
    replication_record.note_failure(config, "the replica is down")
    assert services.replication_seen().error == "the replica is down"
    config.state_file.write_text("{not json")
    assert services.replication_seen().at is None


def test_the_watcher_records_why_litestream_could_not_be_asked(
    studio_db: StudioDB, settings: SettingsWrapper, replica: dict[str, Any], tmp_path: Path
) -> None:
    broken = {**replica, "BINARY": str(tmp_path / "no-litestream"), "LAG_WARNING": 0.1}
    settings.STUDIO_BACKUPS = {**settings.STUDIO_BACKUPS, "REPLICATION": broken}
    config = conf.get_config()
    found = get_replication_config()
    assert found is not None
    stopping = threading.Event()
    watcher = threading.Thread(target=replication._watch, args=(config, found, stopping))
    watcher.start()
    try:
        deadline = time.monotonic() + 30
        while services.replication_seen().error is None:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        stopping.set()
        watcher.join()
    assert "is not an executable file" in (services.replication_seen().error or "")


# Who sees it, and what else can go wrong ------------------------------------------------


def test_without_replication_there_is_no_box_and_no_page(
    studio_db: StudioDB, admin_client: Client
) -> None:
    page = admin_client.get(url("changelist")).content.decode()
    assert 'id="studio-backups-replication"' not in page
    assert url("restore_moment") not in page
    assert admin_client.get(url("restore_moment")).status_code == 404


@pytest.mark.usefixtures("configured")
def test_only_users_who_may_restore_see_the_button(studio_db: StudioDB) -> None:
    viewer = logged_in(staff("view_backup"))
    page = viewer.get(url("changelist")).content.decode()
    assert "studio-backups-window" in page
    assert url("restore_moment") not in page
    assert viewer.get(url("restore_moment")).status_code == 403
    assert viewer.post(url("restore_moment"), {"moment": "2001-01-01T00:00"}).status_code == 403
    restorer = logged_in(staff("view_backup", "restore_backup", username="restorer"))
    assert url("restore_moment") in restorer.get(url("changelist")).content.decode()
    assert restorer.get(url("restore_moment")).status_code == 200


def test_wrong_settings_are_a_warning_and_an_error(
    studio_db: StudioDB, settings: SettingsWrapper, admin_client: Client
) -> None:
    settings.STUDIO_BACKUPS = {**settings.STUDIO_BACKUPS, "REPLICATION": {"URL": "ftp://x/y"}}
    page = admin_client.get(url("changelist")).content.decode()
    assert "Continuous replication does not run: its settings are wrong." in page
    assert 'id="studio-backups-replication"' not in page
    response = admin_client.get(url("restore_moment"), follow=True)
    assert response.redirect_chain == [(url("changelist"), 302)]
    [message] = texts(response)
    assert message.startswith("Continuous replication does not run: its settings are wrong.")
    assert "Technical detail: STUDIO_BACKUPS[&#x27;REPLICATION&#x27;]" in message


@pytest.mark.usefixtures("configured")
def test_an_empty_replica_and_a_missing_litestream(
    studio_db: StudioDB, settings: SettingsWrapper, replica: dict[str, Any], admin_client: Client
) -> None:
    before = digest(studio_db.path)
    # Nothing was ever replicated.
    response = admin_client.post(url("restore_moment"), {"moment": "2026-01-01T10:00:00"})
    assert response.status_code == 200
    page = response.content.decode()
    assert "The replica cannot restore that moment. Check that “manage.py replicate” is " in page
    assert "Technical detail: The replica holds nothing yet" in page
    # Litestream cannot run at all: an error message, and the form again.
    settings.STUDIO_BACKUPS = {
        **settings.STUDIO_BACKUPS,
        "REPLICATION": {**replica, "BINARY": "/nonexistent/litestream"},
    }
    response = admin_client.post(url("restore_moment"), {"moment": "2026-01-01T10:00:00"})
    assert response.status_code == 200
    [message] = texts(response)
    assert message.startswith(
        "The database could not be fetched from the replica; nothing was changed. "
    )
    assert "/nonexistent/litestream is not an executable file" in message
    assert 'id="studio-backups-moment"' in response.content.decode()
    assert digest(studio_db.path) == before
    assert services.backups() == []
    assert LogEntry.objects.count() == 0


@pytest.mark.usefixtures("configured")
def test_the_box_and_the_form_speak_spanish(studio_db: StudioDB, admin_client: Client) -> None:
    record(
        conf.get_config(),
        at=timezone.now().isoformat(),
        start=(timezone.now() - timedelta(days=1)).isoformat(),
        end=timezone.now().isoformat(),
        lag=0,
    )
    page = admin_client.get(url("changelist"), HTTP_ACCEPT_LANGUAGE="es").content.decode()
    assert "Se puede restaurar cualquier momento desde el " in page
    assert re.search(r"hasta (ahora|hace \d+ segundos?)\.", page)
    assert "Replicación: detenida." in page
    assert "Restaurar a un momento…" in page
    form = admin_client.post(
        url("restore_moment"), {"moment": "ayer"}, HTTP_ACCEPT_LANGUAGE="es"
    ).content.decode()
    assert "“ayer” no es una fecha y hora." in form
    assert "En la hora del estudio (America/Hermosillo), al segundo." in form
    assert 'value="Continuar"' in form
