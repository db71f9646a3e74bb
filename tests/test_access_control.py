"""Who may do what on the admin's Backups page: every URL × method × kind of user, as a table.

A cell is the status the response must have; ``*`` marks the cells where the action happens
(a backup made, verified, downloaded, deleted or restored). In every other cell nothing may
change: the backups, their manifests, the live database and the admin's history stay as
they were.
"""

from __future__ import annotations

import contextlib
import secrets
import string
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import pytest
from django.conf import settings
from django.contrib import admin
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission, User
from django.http import FileResponse
from django.test import Client
from django.urls import reverse
from pytest_django.fixtures import Settings as SettingsWrapper

from django_studio_backups import engine, services
from django_studio_backups.models import Backup
from tests.conftest import StudioDB

if TYPE_CHECKING:
    from django.test.client import _MonkeyPatchedWSGIResponse as Response
else:
    Response = Any

USERS = (
    "anonymous",
    "inactive superuser",
    "active non-staff",
    "staff",
    "view_backup",
    "add_backup",
    "delete_backup",
    "restore_backup",
    "download_backup",
    "superuser",
)
METHODS = ("GET", "POST", "POST without CSRF token")

# login: a redirect to the admin's login page. The columns follow USERS.
TABLE = {
    ("changelist", "GET"): "login login login 403 200 403 403 403 403 200",
    ("changelist", "POST"): "login login login 403 200 403 403 403 403 200",
    ("create", "GET"): "login login login 405 405 405 405 405 405 405",
    ("create", "POST"): "login login login 403 403 302* 403 403 403 302*",
    ("verify", "GET"): "login login login 405 405 405 405 405 405 405",
    ("verify", "POST"): "login login login 403 302* 403 403 403 403 302*",
    ("download", "GET"): "login login login 403 403 403 403 403 200* 200*",
    ("download", "POST"): "login login login 403 403 403 403 403 200* 200*",
    ("delete", "GET"): "login login login 403 403 403 200 403 403 200",
    ("delete", "POST"): "login login login 403 403 403 302* 403 403 302*",
    ("restore", "GET"): "login login login 403 403 403 403 200 403 200",
    ("restore", "POST"): "login login login 403 403 403 403 302* 403 302*",
    # With replication set up; a POST without a moment shows the form again.
    ("restore_moment", "GET"): "login login login 403 403 403 403 200 403 200",
    ("restore_moment", "POST"): "login login login 403 403 403 403 200 403 200",
}
# Django's CSRF check comes before anything else: no one gets further without the token.
for view in ("changelist", "create", "verify", "download", "delete", "restore", "restore_moment"):
    TABLE[view, "POST without CSRF token"] = " ".join(["403"] * len(USERS))


def test_the_table_covers_every_url_of_the_page() -> None:
    backup_admin = admin.site._registry[Backup]
    names = {pattern.name for pattern in backup_admin.get_urls()}
    assert names == {f"django_studio_backups_backup_{view}" for view, _ in TABLE}
    assert {method for _, method in TABLE} == set(METHODS)
    assert all(len(row.split()) == len(USERS) for row in TABLE.values())


def make_user(kind: str) -> User | None:
    if kind == "anonymous":
        return None
    if kind == "inactive superuser":
        user: User = User.objects.create_superuser("inactive", password="pw", is_active=False)
    elif kind == "superuser":
        user = User.objects.create_superuser("boss", password="pw")
    else:
        user = User.objects.create_user(kind, password="pw", is_staff=kind != "active non-staff")
        user.user_permissions.set(
            Permission.objects.filter(
                content_type__app_label="django_studio_backups", codename=kind
            )
        )
    return user


def client_for(user: User | None) -> Client:
    client = Client(enforce_csrf_checks=True)
    if user is not None:
        # force_login sets the session even for an inactive user; the admin must still
        # refuse it.
        client.force_login(user)
    return client


def request(client: Client, view: str, method: str, name: str) -> Response:
    path = reverse(
        f"admin:django_studio_backups_backup_{view}",
        args=[] if view in ("changelist", "create", "restore_moment") else [name],
    )
    if method == "GET":
        return client.get(path)
    data = {"post": "yes"}
    if method == "POST":
        token = "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(32))
        client.cookies[settings.CSRF_COOKIE_NAME] = token
        data["csrfmiddlewaretoken"] = token
    return client.post(path, data)


class State(NamedTuple):
    backups: tuple[tuple[str, str, bytes], ...]  # name, SHA-256, manifest
    clients: tuple[str, ...]
    history: int


def state(db: StudioDB) -> State:
    backups = tuple(
        (b.name, engine.sha256_of(b.path), b.manifest_path.read_bytes()) for b in services.backups()
    )
    return State(backups, tuple(db.clients()), LogEntry.objects.count())


def fresh_state(db: StudioDB) -> str:
    """One backup of Ana and Beto, and Carla added after it; the backup's name."""
    for backup in services.backups():
        services.delete_backup(backup.name)
    with contextlib.closing(db.connect()) as connection:
        connection.execute("DELETE FROM studio_client WHERE name = 'Carla'")
    connection.close()
    name = services.backup_now().name
    db.add_clients("Carla")
    return name


def assert_done(view: str, db: StudioDB, name: str, before: State, r: Response) -> None:
    after = state(db)
    assert after.history == before.history + 1, "the action is not in the admin's history"
    names = [b[0] for b in after.backups]
    if view == "create":
        assert len(names) == 2
        assert name in names
    elif view == "verify":
        assert after.backups[0][2] != before.backups[0][2], "no new verification in the manifest"
    elif view == "download":
        assert isinstance(r, FileResponse)
        assert b"".join(r.streaming_content) == (db.backups / name).read_bytes()
    elif view == "delete":
        assert names == []
    else:
        assert view == "restore"
        assert after.clients == ("Ana", "Beto")
        assert before.clients == ("Ana", "Beto", "Carla")


# Transactional: a restore refuses to run inside the transaction a plain django_db test opens.
@pytest.mark.django_db(databases=["default", "studio"], transaction=True)
@pytest.mark.parametrize(("view", "method"), list(TABLE))
def test_access(
    studio_db: StudioDB, view: str, method: str, settings: SettingsWrapper, tmp_path: Path
) -> None:
    if view == "restore_moment":
        replication = {"URL": f"file://{tmp_path / 'replica'}"}
        settings.STUDIO_BACKUPS = {**settings.STUDIO_BACKUPS, "REPLICATION": replication}
    name = fresh_state(studio_db)
    login = reverse("admin:login")
    for kind, cell in zip(USERS, TABLE[view, method].split(), strict=True):
        where = f"{method} {view} as {kind}"
        client = client_for(make_user(kind))
        before = state(studio_db)
        response = request(client, view, method, name)
        if isinstance(response, FileResponse):
            content = b"".join(response.streaming_content)
            response.streaming_content = iter([content])
        if cell == "login":
            assert response.status_code == 302, where
            assert response["Location"].startswith(f"{login}?next="), where
        else:
            assert response.status_code == int(cell.rstrip("*")), where
        if cell.endswith("*"):
            assert_done(view, studio_db, name, before, response)
            name = fresh_state(studio_db)
        else:
            assert state(studio_db) == before, f"{where} changed something"
            assert not isinstance(response, FileResponse), where
