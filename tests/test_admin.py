from __future__ import annotations

import ast
import contextlib
import gettext
import hashlib
import json
import logging
import os
import re
import shutil
import tracemalloc
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import pytest
from django.contrib.admin.models import ADDITION, CHANGE, DELETION, LogEntry
from django.contrib.auth.models import Permission, User
from django.contrib.messages import get_messages
from django.db import connections
from django.http import FileResponse
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from pytest_django.fixtures import Settings as SettingsWrapper

from django_studio_backups import locking, services
from django_studio_backups.archive import BackupFile
from django_studio_backups.engine import sha256_of
from django_studio_backups.models import Backup
from django_studio_backups.size_chart import size_chart
from tests.conftest import StudioDB, mounted_tmpfs, undeletable

if TYPE_CHECKING:
    from django.test.client import _MonkeyPatchedWSGIResponse as Response
else:
    Response = Any

pytestmark = pytest.mark.django_db(databases=["default", "studio"])
# A restore refuses to run inside a transaction, so its tests do not wrap one around it.
restores = pytest.mark.django_db(databases=["default", "studio"], transaction=True)

ZONE = ZoneInfo("America/Hermosillo")


def url(view: str, name: str | None = None) -> str:
    args = [name] if name is not None else []
    return reverse(f"admin:django_studio_backups_backup_{view}", args=args)


def staff(*codenames: str, username: str = "staff") -> User:
    user: User = User.objects.create_user(username, password="pw", is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(
            content_type__app_label="django_studio_backups", codename__in=codenames
        )
    )
    return user


def logged_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def texts(response: Response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def entries() -> list[tuple[int, str, str]]:
    return [
        (e.action_flag, e.object_repr, e.change_message) for e in LogEntry.objects.order_by("pk")
    ]


# Who may do what ---------------------------------------------------------------------


# Every URL, method and kind of user: tests/test_access_control.py. What users see:


def test_staff_without_the_view_permission_do_not_see_the_app(studio_db: StudioDB) -> None:
    response = logged_in(staff()).get(reverse("admin:index"))
    assert url("changelist") not in response.content.decode()
    response = logged_in(staff("view_backup", username="viewer")).get(reverse("admin:index"))
    assert url("changelist") in response.content.decode()


def test_view_only_users_see_no_buttons_they_cannot_use(studio_db: StudioDB) -> None:
    name = services.backup_now().name
    page = logged_in(staff("view_backup")).get(url("changelist")).content.decode()
    assert name in page
    assert url("verify", name) in page
    for view in ("restore", "download", "delete"):
        assert url(view, name) not in page
    assert url("create") not in page


def test_superusers_see_every_button(studio_db: StudioDB, admin_client: Client) -> None:
    name = services.backup_now().name
    page = admin_client.get(url("changelist")).content.decode()
    for view in ("restore", "download", "delete", "verify"):
        assert url(view, name) in page
    assert url("create") in page


@pytest.mark.parametrize("view", ["create", "verify"])
def test_actions_refuse_get(studio_db: StudioDB, admin_client: Client, view: str) -> None:
    name = services.backup_now().name
    response = admin_client.get(url(view, None if view == "create" else name))
    assert response.status_code == 405
    assert len(services.backups()) == 1
    assert LogEntry.objects.count() == 0


@pytest.mark.parametrize("view", ["create", "verify", "delete", "restore"])
def test_actions_need_the_csrf_token(studio_db: StudioDB, admin_user: User, view: str) -> None:
    name = services.backup_now().name
    studio_db.add_clients("Carla")
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)
    response = client.post(url(view, None if view == "create" else name), {"post": "yes"})
    assert response.status_code == 403
    assert [b.name for b in services.backups()] == [name]
    assert studio_db.clients() == ["Ana", "Beto", "Carla"]


# The listing -------------------------------------------------------------------------


def test_the_listing_shows_every_backup_newest_first(
    studio_db: StudioDB, admin_client: Client
) -> None:
    first = services.backup_now(kind="daily")
    studio_db.add_clients(*(f"client {i}" for i in range(2000)))
    second = services.backup_now()
    # The order is the backups' own: a file touched since says nothing of when it was made.
    os.utime(second.path, (second.path.stat().st_atime, second.path.stat().st_mtime - 3600))
    second = services.find_backup(second.name)
    response = admin_client.get(url("changelist"))
    page = response.content.decode()
    assert response.status_code == 200
    table = page.split('id="result_list"')[1]
    assert table.index(second.name) < table.index(first.name)
    for backup in (first, second):
        made = datetime.fromisoformat(backup.manifest["created_at"])
        assert made.astimezone(ZONE).strftime("%d/%m/%Y %H:%M") in table
    assert ">daily<" in page
    assert ">manual<" in page
    assert "KB" in page  # human-readable sizes
    # The daily backup passed integrity_check; the manual one passed quick_check, but its
    # file has changed since (its time did), so it counts as unchecked again.
    assert page.count("icon-yes.svg") == 1
    assert not second.check
    assert f"Last backup: <strong>{services.get_last_backup_display()}</strong>" in page
    # The chart: a point for each backup, drawn on the server.
    assert 'id="studio-backups-chart"' in page
    assert page.count('<circle class="dot"') == 2
    assert "<script" not in page.split('id="studio-backups-chart"')[1].split("</svg>")[0]
    assert 'class="breadcrumbs"' in page
    assert "admin/css/base.css" in page
    assert "No backup has been made yet." not in page


def test_an_empty_folder(studio_db: StudioDB, admin_client: Client) -> None:
    page = admin_client.get(url("changelist")).content.decode()
    assert "There are no backups yet." in page
    assert "No backup has been made yet." in page
    assert "Last backup: <strong>—</strong>" in page
    assert 'id="studio-backups-chart"' not in page


def test_a_stale_backup_is_a_warning(studio_db: StudioDB, admin_client: Client) -> None:
    services.backup_now()
    two_days_ago = timezone.now().astimezone(ZONE) - timedelta(days=2)
    studio_db.state_file.write_text(json.dumps({"last_backup_at": two_days_ago.isoformat()}))
    page = admin_client.get(url("changelist")).content.decode()
    assert (
        f"The last backup was made on {two_days_ago.strftime('%d/%m/%Y %H:%M')}, "
        "more than a day ago." in page
    )


def test_unusual_growth_is_a_warning(studio_db: StudioDB, admin_client: Client) -> None:
    for _ in range(8):
        services.backup_now()
    assert "larger than the median" not in admin_client.get(url("changelist")).content.decode()
    with sqlite3_connection(studio_db.path) as connection:
        connection.execute("CREATE TABLE filler (data BLOB)")
        connection.execute("INSERT INTO filler VALUES (randomblob(1048576))")
    newest = services.backup_now()
    page = admin_client.get(url("changelist")).content.decode()
    # Once, beside the chart, not among the warnings at the top as well.
    assert page.count(f"The newest backup, {newest.name} (") == 1
    assert 'id="studio-backups-growth"' in page


def test_a_failed_backup_is_reported_and_then_a_warning(
    studio_db: StudioDB, admin_client: Client
) -> None:
    with mounted_tmpfs(studio_db.backups, "ro,size=1m"):
        response = admin_client.post(url("create"), follow=True)
        assert response.redirect_chain == [(url("changelist"), 302)]
        [message] = texts(response)
        assert message == "The backup failed. The backup folder cannot be written."
        page = response.content.decode()
        assert "The last backup attempt, on " in page
        assert "Ask whoever set up the server to check that the backup folder exists" in page
        # The exact reason once, as the warning's detail.
        assert page.count("Read-only file system") == 1
        assert f"Technical detail: Cannot use the backup folder {studio_db.backups}" in page
        assert services.backups() == []
    assert LogEntry.objects.count() == 0
    # A successful backup afterwards clears the warning.
    response = admin_client.post(url("create"), follow=True)
    assert "The last backup attempt" not in response.content.decode()


def warning_texts(page: str) -> list[str]:
    """The page's warnings, without their technical detail."""
    return [
        text.split("<br>")[0] for text in re.findall(r'<li class="warning">(.*?)</li>', page, re.S)
    ]


@pytest.mark.parametrize(
    ("language", "message", "sentence"),
    [
        (
            "en",
            "The backup failed. The backup folder cannot be written.",
            "Ask whoever set up the server to check that the backup folder exists",
        ),
        (
            "es",
            "El respaldo falló. No se puede escribir en la carpeta de respaldos.",
            "Pida a quien instaló el servidor que compruebe que la carpeta de respaldos existe",
        ),
    ],
)
def test_a_failure_in_the_admin_is_told_for_people(
    studio_db: StudioDB, admin_client: Client, language: str, message: str, sentence: str
) -> None:
    services.backup_now()
    # Files cannot be made in the folder (chattr +i): the copy's temporary file is refused,
    # with "[Errno 1] Operation not permitted: '.../backups/.tmp-...'".
    with undeletable(studio_db.backups):
        response = admin_client.post(url("create"), follow=True, HTTP_ACCEPT_LANGUAGE=language)
    page = response.content.decode()
    assert texts(response) == [message]
    assert sentence in page
    # The detail once, and no temporary file's name anywhere.
    assert page.count("Operation not permitted") == 1
    assert ".tmp-" not in page
    reason = services.last_failure()
    assert reason is not None
    assert reason.reason.endswith(
        f"cannot write in the backup folder {studio_db.backups}: [Errno 1] Operation not permitted"
    )
    if language == "es":
        # No English sentence inside the Spanish ones: English stays in the detail.
        for text in warning_texts(page):
            assert "failed" not in text
            assert "cannot" not in text


def test_messages_keep_the_case_of_file_names(studio_db: StudioDB, admin_client: Client) -> None:
    backup = services.backup_now()
    response = admin_client.post(url("verify", backup.name), follow=True)
    page = response.content.decode()
    assert f"The backup {backup.name} is intact" in page
    assert backup.name.capitalize() not in page


def listed(name: str, moment: datetime, size: int) -> BackupFile:
    return BackupFile(
        Path(name), size, moment, manifest={"created_at": moment.isoformat(), "size": size}
    )


def day(moment: datetime) -> str:
    return str(moment.day)


def test_the_chart_spreads_backups_of_the_same_second() -> None:
    moment = datetime(2026, 3, 4, 15, 30, 45, tzinfo=ZONE)
    backups = [listed(f"b{i}", moment, 100 * (i + 1)) for i in range(3)]
    chart = size_chart(backups, day)
    assert chart is not None
    assert [round(p.x) for p in chart.points] == [80, 354, 628]
    assert [round(p.y) for p in chart.points] == [105, 59, 12]
    [only] = size_chart(backups[:1], day).points  # type: ignore[union-attr]
    assert round(only.x) == 354
    empty = size_chart([listed("e", moment, 0)], day)
    assert empty is not None
    assert empty.points[0].y == empty.bottom
    assert size_chart([], day) is None


def test_the_chart_places_backups_by_time() -> None:
    start = datetime(2026, 3, 1, tzinfo=ZONE)
    backups = [
        listed("c", start + timedelta(days=4), 400),
        listed("a", start, 200),
        listed("b", start + timedelta(days=1), 300),
    ]
    chart = size_chart(backups, day)
    assert chart is not None
    assert [p.name for p in chart.points] == ["a", "b", "c"]
    assert [round(p.x) for p in chart.points] == [80, 217, 628]
    assert chart.polyline.startswith("80.0,")
    assert (chart.first_display, chart.last_display, chart.largest) == ("1", "5", 400)


# Back up now -------------------------------------------------------------------------


def test_back_up_now(studio_db: StudioDB, admin_client: Client, admin_user: User) -> None:
    response = admin_client.post(url("create"), follow=True)
    [backup] = services.backups()
    assert backup.kind == "manual"
    assert studio_db.clients(backup.path) == ["Ana", "Beto"]
    [message] = texts(response)
    assert message.startswith(f"Backed up the database to {backup.name} (")
    assert backup.name in response.content.decode()
    [entry] = LogEntry.objects.all()
    assert (entry.user, entry.action_flag, entry.object_repr, entry.object_id) == (
        admin_user,
        ADDITION,
        backup.name,
        backup.name,
    )
    assert entry.get_change_message() == "Backed up the database."
    assert entry.content_type.model_class() is Backup
    assert str(Backup(name=backup.name)) == backup.name


# Names that are not listed backups -----------------------------------------------------


def bad_names(studio_db: StudioDB, outside: Path) -> list[str]:
    studio_db.backups.mkdir(exist_ok=True)
    # A symlink with a backup's name that points out of the folder.
    (studio_db.backups / "backup_20990101_000000.db").symlink_to(outside)
    return [
        "backup_20200101_000000.db",  # well-formed, but no such backup
        "backup_20990101_000000.db",
        "..",
        ".",
        "...",
        "settings.json",
        "studio.db",
        "backup_20200101_000000.db\x00",
        "%2e%2e",
        ".lock",
    ]


@pytest.mark.parametrize("view", ["verify", "download", "delete", "restore"])
def test_names_that_are_not_listed_backups_are_refused(
    studio_db: StudioDB, admin_client: Client, tmp_path: Path, view: str
) -> None:
    real = services.backup_now().name
    outside = tmp_path / "secret.db"
    shutil.copyfile(studio_db.path, outside)
    studio_db.add_clients("Carla")
    for name in bad_names(studio_db, outside):
        for method in ("get", "post"):
            response = getattr(admin_client, method)(url(view, name), {"post": "yes"}, follow=True)
            if view == "verify" and method == "get":
                assert response.status_code == 405
                continue
            assert response.redirect_chain == [(url("changelist"), 302)], name
            [message] = texts(response)
            assert "Perhaps it was deleted?" in message
            assert not isinstance(response, FileResponse)
    assert outside.exists()
    assert studio_db.clients() == ["Ana", "Beto", "Carla"]
    assert [b.name for b in services.backups()] == [real]
    assert LogEntry.objects.count() == 0


@pytest.mark.parametrize("view", ["verify", "download", "delete", "restore"])
@pytest.mark.parametrize(
    "path",
    [
        "../settings.json",
        "..%2Fsettings.json",
        "%2E%2E%2Fsettings.json",
        "..%252Fsettings.json",
        "/etc/passwd",
        "%2Fetc%2Fpasswd",
        "..\\settings.json",
    ],
)
def test_paths_never_reach_a_view(
    studio_db: StudioDB, admin_client: Client, view: str, path: str
) -> None:
    services.backup_now()
    prefix = url("changelist")
    response = admin_client.post(f"{prefix}{path}/{view}/", {"post": "yes"})
    # Either no URL matches, or the view finds no backup of that name.
    assert response.status_code in (302, 404)
    if response.status_code == 302:
        assert response["Location"] == url("changelist")
    assert not isinstance(response, FileResponse)
    assert len(services.backups()) == 1
    assert LogEntry.objects.count() == 0


# Verify ------------------------------------------------------------------------------


def test_verify_an_intact_backup(studio_db: StudioDB, admin_client: Client) -> None:
    backup = services.backup_now()
    response = admin_client.post(url("verify", backup.name), follow=True)
    assert texts(response) == [
        f"The backup {backup.name} is intact: it matches its checksum and passes SQLite's checks."
    ]
    assert entries() == [(CHANGE, backup.name, "Verified: intact.")]


def test_verify_a_damaged_backup(studio_db: StudioDB, admin_client: Client) -> None:
    backup = services.backup_now()
    with backup.path.open("r+b") as f:
        f.seek(200)
        f.write(b"\xff" * 64)
    response = admin_client.post(url("verify", backup.name), follow=True)
    [message] = texts(response)
    assert message.startswith(f"The backup {backup.name} is damaged: do not restore it.<br>")
    assert "SHA-256" in message
    assert response.content.decode().count("icon-no.svg") == 1
    assert entries() == [(CHANGE, backup.name, "Verified: damaged.")]


# Download ----------------------------------------------------------------------------


def test_download_sends_the_file(
    studio_db: StudioDB, admin_client: Client, admin_user: User
) -> None:
    backup = services.backup_now()
    response = admin_client.get(url("download", backup.name))
    assert isinstance(response, FileResponse)
    assert response.streaming
    assert response["Content-Disposition"] == f'attachment; filename="{backup.name}"'
    assert b"".join(response.streaming_content) == backup.path.read_bytes()
    assert entries() == [(CHANGE, backup.name, "Downloaded.")]


def test_download_streams_in_constant_memory(studio_db: StudioDB, admin_client: Client) -> None:
    with sqlite3_connection(studio_db.path) as connection:
        connection.execute("CREATE TABLE filler (data BLOB)")
        for _ in range(40):
            connection.execute("INSERT INTO filler VALUES (randomblob(1048576))")
    backup = services.backup_now()
    assert backup.size > 40 * 1024 * 1024
    digest = hashlib.sha256()
    tracemalloc.start()
    try:
        response = admin_client.get(url("download", backup.name))
        for chunk in response.streaming_content:  # type: ignore[attr-defined]
            digest.update(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert digest.hexdigest() == backup.sha256
    assert peak < 2 * 1024 * 1024, f"{peak} bytes held while sending {backup.size} bytes"


@contextlib.contextmanager
def sqlite3_connection(path: Path) -> Iterator[Any]:
    import sqlite3

    connection = sqlite3.connect(path, isolation_level=None)
    try:
        yield connection
    finally:
        connection.close()


# Delete ------------------------------------------------------------------------------


def test_delete_asks_first(studio_db: StudioDB, admin_client: Client) -> None:
    backup = services.backup_now()
    page = admin_client.get(url("delete", backup.name)).content.decode()
    assert f"Are you sure you want to delete the backup “{backup.name}”" in page
    assert 'name="post" value="yes"' in page
    assert 'class="button cancel-link"' in page
    # A POST without the confirmation only shows the question again.
    response = admin_client.post(url("delete", backup.name))
    assert response.status_code == 200
    assert [b.name for b in services.backups()] == [backup.name]
    assert LogEntry.objects.count() == 0


def test_delete(studio_db: StudioDB, admin_client: Client) -> None:
    keep = services.backup_now()
    backup = services.backup_now()
    response = admin_client.post(url("delete", backup.name), {"post": "yes"}, follow=True)
    assert texts(response) == [f"Deleted the backup {backup.name}."]
    assert not backup.path.exists()
    assert not backup.manifest_path.exists()
    assert [b.name for b in services.backups()] == [keep.name]
    assert entries() == [(DELETION, backup.name, "Deleted.")]


def test_a_failed_delete_is_reported(studio_db: StudioDB, admin_client: Client) -> None:
    backup = services.backup_now()
    # Immutable, as a file on a failing disk: unlink() fails, even for root.
    with undeletable(backup.path):
        response = admin_client.post(url("delete", backup.name), {"post": "yes"}, follow=True)
    [message] = texts(response)
    assert message.startswith("The backup was not deleted. The backup folder cannot be written.")
    assert f"Technical detail: Could not delete {backup.name}: " in message
    assert backup.path.exists()
    assert LogEntry.objects.count() == 0


def test_delete_waits_for_a_running_backup(
    studio_db: StudioDB, admin_client: Client, settings: SettingsWrapper
) -> None:
    backup = services.backup_now()
    settings.STUDIO_BACKUPS = {**settings.STUDIO_BACKUPS, "LOCK_TIMEOUT": 0.2}
    # What a backup or restore in another process holds while it runs.
    with locking.exclusive(studio_db.backups / locking.LOCK_NAME, 1):
        response = admin_client.post(url("delete", backup.name), {"post": "yes"}, follow=True)
    [message] = texts(response)
    assert message.startswith(
        "The backup was not deleted. The database or the backup folder stayed busy for too long."
    )
    assert "Technical detail: Cannot use the backup folder " in message
    assert "another backup, restore or off-site copy" in message
    assert backup.path.exists()
    assert LogEntry.objects.count() == 0


# Restore -----------------------------------------------------------------------------


def test_restore_asks_first(studio_db: StudioDB, admin_client: Client) -> None:
    backup = services.backup_now()
    studio_db.add_clients("Carla")
    response = admin_client.get(url("restore", backup.name))
    page = response.content.decode()
    assert response.status_code == 200
    assert f"restore the database from the backup “{backup.name}”" in page
    row = services.list_backups()[0]
    assert row["display"] in page
    assert "KB" in page
    assert "A safety backup of the current data is made first" in page
    assert "Users may be logged out" in page
    assert "sessions live in the database" in page
    assert 'name="post" value="yes"' in page
    assert f'href="{url("changelist")}" class="button cancel-link"' in page
    assert "predates" not in page
    response = admin_client.post(url("restore", backup.name))
    assert response.status_code == 200
    assert studio_db.clients() == ["Ana", "Beto", "Carla"]
    assert len(services.backups()) == 1


@restores
def test_restore(studio_db: StudioDB, admin_client: Client, admin_user: User) -> None:
    backup = services.backup_now()
    studio_db.add_clients("Carla")
    response = admin_client.post(url("restore", backup.name), {"post": "yes"}, follow=True)
    assert studio_db.clients() == ["Ana", "Beto"]
    [safety] = [b for b in services.backups() if b.kind == "safety"]
    assert studio_db.clients(safety.path) == ["Ana", "Beto", "Carla"]
    assert texts(response) == [
        f"Restored the database from {backup.name}. The data as it was just before is in "
        f"the safety backup {safety.name}."
    ]
    page = response.content.decode()
    assert safety.name in page
    assert ">safety<" in page
    [entry] = LogEntry.objects.all()
    assert (entry.user, entry.action_flag, entry.object_repr) == (admin_user, CHANGE, backup.name)
    assert entry.change_message == (
        f"Restored the database from this backup. Safety backup: {safety.name}."
    )


@restores
def test_restore_without_a_live_database(studio_db: StudioDB, admin_client: Client) -> None:
    backup = services.backup_now()
    connections["studio"].close()
    studio_db.path.unlink()
    for suffix in ("-wal", "-shm"):
        studio_db.path.with_name(studio_db.path.name + suffix).unlink(missing_ok=True)
    response = admin_client.post(url("restore", backup.name), {"post": "yes"}, follow=True)
    assert texts(response) == [f"Restored the database from {backup.name}."]
    assert studio_db.clients() == ["Ana", "Beto"]


@restores
def test_restoring_an_older_schema_says_to_migrate(
    studio_db: StudioDB, admin_client: Client
) -> None:
    backup = services.backup_now()
    # An older backup: one that lacks the last migration of the 'studio' app.
    with sqlite3_connection(backup.path) as connection:
        connection.execute("DELETE FROM django_migrations WHERE app = 'studio'")
    manifest = json.loads(backup.manifest_path.read_text())
    manifest.update(sha256=sha256_of(backup.path), size=backup.path.stat().st_size)
    backup.manifest_path.write_text(json.dumps(manifest))
    page = admin_client.get(url("restore", backup.name)).content.decode()
    assert "run migrate after the restore: studio.0001_initial" in page
    response = admin_client.post(url("restore", backup.name), {"post": "yes"}, follow=True)
    assert texts(response)[1] == (
        "The backup predates migrations of the current code; run migrate: studio.0001_initial"
    )


def test_restoring_a_newer_schema_warns(studio_db: StudioDB, admin_client: Client) -> None:
    backup = services.backup_now()
    with sqlite3_connection(backup.path) as connection:
        connection.execute(
            "INSERT INTO django_migrations (app, name, applied) "
            "VALUES ('studio', '0099_future', '2030-01-01')"
        )
    page = admin_client.get(url("restore", backup.name)).content.decode()
    assert "migrations the current code does not know: studio.0099_future" in page


@restores
def test_a_corrupt_backup_is_not_restored(studio_db: StudioDB, admin_client: Client) -> None:
    services.backup_now()
    studio_db.add_clients("Carla")
    corrupt = studio_db.backups / "backup_20200101_000000.db"
    corrupt.write_bytes(b"SQLite format 3\x00" + os.urandom(8192))
    response = admin_client.post(url("restore", corrupt.name), {"post": "yes"}, follow=True)
    [message] = texts(response)
    assert message.startswith("The restore failed; the database is as it was. ")
    assert corrupt.name in message
    assert studio_db.clients() == ["Ana", "Beto", "Carla"]
    assert LogEntry.objects.count() == 0
    assert not [b for b in services.backups() if b.kind == "safety"]
    # The confirmation page says so before anyone tries.
    response = admin_client.get(url("restore", corrupt.name), follow=True)
    assert response.redirect_chain == [(url("changelist"), 302)]
    [message] = texts(response)
    assert message.startswith("This backup cannot be restored. SQLite found damage. ")
    assert f"Technical detail: {corrupt.name} cannot be restored: " in message


# Restoring the admin's own database ----------------------------------------------------


@pytest.fixture
def default_backups(settings: SettingsWrapper, tmp_path: Path) -> Path:
    settings.STUDIO_BACKUPS = {
        "DATABASE": "default",
        "DIRECTORY": str(tmp_path / "backups"),
        "STATE_FILE": str(tmp_path / "settings.json"),
    }
    return tmp_path / "backups"


@pytest.mark.django_db(transaction=True)
def test_restore_into_the_admins_database_keeps_the_history_entry(
    default_backups: Path, admin_user: User
) -> None:
    client = logged_in(admin_user)
    backup = services.backup_now()
    User.objects.create_user("made-after-the-backup")
    response = client.post(url("restore", backup.name), {"post": "yes"}, follow=True)
    assert not User.objects.filter(username="made-after-the-backup").exists()
    # The session was in the backup too, so the admin stays logged in.
    assert response.status_code == 200
    assert response.redirect_chain == [(url("changelist"), 302)]
    [entry] = LogEntry.objects.all()
    assert (entry.user, entry.action_flag, entry.object_repr) == (admin_user, CHANGE, backup.name)


@pytest.mark.django_db(transaction=True)
def test_restore_by_a_user_the_backup_does_not_know(
    default_backups: Path, caplog: pytest.LogCaptureFixture
) -> None:
    backup = services.backup_now()
    newcomer = User.objects.create_superuser("newcomer", password="pw")
    client = logged_in(newcomer)
    with caplog.at_level(logging.WARNING, logger="django_studio_backups"):
        response = client.post(url("restore", backup.name), {"post": "yes"})
    assert response.status_code == 302
    assert not User.objects.filter(username="newcomer").exists()
    assert LogEntry.objects.count() == 0
    assert (
        f"Not recording the restore of {backup.name} in the admin history: the user newcomer "
        "is not in the restored database" in caplog.text
    )
    # Their session went with the restore: the next page asks them to log in.
    page = client.get(url("changelist"))
    assert page.status_code == 302
    assert page["Location"].startswith(reverse("admin:login"))
    # The success message travels in a cookie, so it is still shown after logging in.
    assert any(
        m.startswith(f"Restored the database from {backup.name}.")
        for m in texts(client.get(reverse("admin:login")))
    )


# Spanish -----------------------------------------------------------------------------


def test_the_page_speaks_spanish(studio_db: StudioDB, admin_client: Client) -> None:
    backup = services.backup_now(kind="daily")
    page = admin_client.get(url("changelist"), HTTP_ACCEPT_LANGUAGE="es").content.decode()
    assert 'lang="es"' in page
    assert "Respaldos" in page
    assert "Último respaldo:" in page
    assert "Respaldar ahora" in page
    assert "Restaurar…" in page
    assert "Descargar" in page
    assert "Verificar" in page
    assert ">diaria<" in page
    confirm = admin_client.get(url("restore", backup.name), HTTP_ACCEPT_LANGUAGE="es")
    text = confirm.content.decode()
    assert "Primero se hace un respaldo de seguridad de los datos actuales" in text
    assert "Sí, restaurar" in text
    response = admin_client.post(url("create"), HTTP_ACCEPT_LANGUAGE="es", follow=True)
    assert texts(response)[0].startswith("Se respaldó la base de datos en ")


def po_entries(path: Path) -> list[dict[str, Any]]:
    """The entries of a .po file: their fields (strings joined) and their flags."""
    found = []
    for block in path.read_text(encoding="utf-8").split("\n\n"):
        entry: dict[str, Any] = {"flags": ""}
        key = ""
        for line in block.strip().splitlines():
            if line.startswith("#,"):
                entry["flags"] += line
            elif line.startswith('"'):
                entry[key] += ast.literal_eval(line)
            elif not line.startswith("#"):
                key, _, value = line.partition(" ")
                entry[key] = ast.literal_eval(value)
        found.append(entry)
    return found


def test_every_message_has_a_current_spanish_translation() -> None:
    directory = Path(services.__file__).parent / "locale" / "es" / "LC_MESSAGES"
    entries = po_entries(directory / "django.po")
    with (directory / "django.mo").open("rb") as f:
        compiled = gettext.GNUTranslations(f)
    assert len(entries) > 50
    for entry in entries[1:]:
        assert "fuzzy" not in entry["flags"], entry
        if "msgid_plural" in entry:
            forms = [entry[f"msgstr[{n}]"] for n in range(3)]
            assert all(forms), entry
            assert compiled.ngettext(entry["msgid"], entry["msgid_plural"], 1) == forms[0]
            assert compiled.ngettext(entry["msgid"], entry["msgid_plural"], 2) == forms[2]
        else:
            assert entry["msgstr"], entry
            # The committed .mo must match the .po: the tests read the compiled file.
            assert compiled.gettext(entry["msgid"]) == entry["msgstr"], entry


@pytest.mark.parametrize("view", ["delete", "restore"])
def test_a_backup_deleted_after_the_confirmation_page(
    studio_db: StudioDB, admin_client: Client, monkeypatch: pytest.MonkeyPatch, view: str
) -> None:
    backup = services.backup_now()
    admin_client.get(url(view, backup.name))

    delete = services.delete_backup

    def deleted_meanwhile(name: str, **kwargs: object) -> None:
        delete(name)  # by someone else, a moment before this one
        services.find_backup(name)  # raises BackupNotFound, as the real call would

    monkeypatch.setattr(
        services, {"delete": "delete_backup", "restore": "restore"}[view], deleted_meanwhile
    )
    response = admin_client.post(url(view, backup.name), {"post": "yes"}, follow=True)
    assert texts(response) == [
        f"There is no backup called “{backup.name}”. Perhaps it was deleted?"
    ]


def test_the_listing_tells_what_is_known_of_each_backup(
    studio_db: StudioDB, admin_client: Client
) -> None:
    verified = services.backup_if_needed()
    assert verified is not None
    changed, damaged, foreign = (services.backup_now() for _ in range(3))
    os.utime(changed.path, (1_700_000_000, 1_700_000_000))
    with damaged.path.open("r+b") as f:
        f.seek(4096)
        f.write(b"\xff" * 64)
    assert services.verify(damaged.name) != []
    foreign.manifest_path.unlink()
    page = admin_client.get(url("changelist")).content.decode()
    cells = dict(
        re.findall(
            r'<tr data-backup="([^"]+)">.*?class="studio-backups-check"><img [^>]*title="([^"]+)"',
            page,
            re.S,
        )
    )
    assert cells[verified.name].startswith("Verified")
    assert cells[changed.name].startswith("Unknown: the file changed since")
    assert cells[damaged.name].startswith("Damaged")
    assert cells[foreign.name].startswith("Unknown: it came without its .json file")
    # Verify adopts the one without a manifest.
    admin_client.post(url("verify", foreign.name))
    page = admin_client.get(url("changelist")).content.decode()
    assert ">put back<" in page
    # The damaged one cannot be restored, even by its address.
    response = admin_client.get(url("restore", damaged.name), follow=True)
    assert texts(response) == [
        f"The backup {damaged.name} is damaged: it cannot be restored. Restore another one."
    ]
