"""The Backups page in a real headless Chromium, against pytest-django's live server.

The live server uses the "default" test database (a real file), so these tests back up and
restore the very database the admin's users, sessions and history live in.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.auth.models import Group, User
from pytest_django.fixtures import Settings as SettingsWrapper
from pytest_django.live_server_helper import LiveServer

from django_studio_backups import services
from tests.conftest import StudioDB
from tests.replication_helpers import add_one_by_one, replicating, settle, wait_for_replica

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SCREENSHOTS = Path(__file__).resolve().parent.parent / "artifacts" / "screenshots"
TIMEOUT = 20
ZONE = ZoneInfo("America/Hermosillo")
# What a datetime-local input holds.
INPUT = "%Y-%m-%dT%H:%M:%S"

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# What each language's pages say, for the steps the test takes.
TEXTS = {
    "en": {
        "backups": "Backups",
        "back_up_now": "Back up now",
        "backed_up": "Backed up the database to ",
        "restore": "Restore…",
        "confirm": "Yes, restore it",
        "cancel": "No, take me back",
        "safety_first": "A safety backup of the current data is made first",
        "logged_out": "Users may be logged out",
        "restored": "Restored the database from ",
        "safety": "safety",
        "log_in": "Log in",
    },
    "es": {
        "backups": "Respaldos",
        "back_up_now": "Respaldar ahora",
        "backed_up": "Se respaldó la base de datos en ",
        "restore": "Restaurar…",
        "confirm": "Sí, restaurar",
        "cancel": "No, llévame atrás",
        "safety_first": "Primero se hace un respaldo de seguridad de los datos actuales",
        "logged_out": "Es posible que se cierre la sesión de los usuarios",
        "restored": "Se restauró la base de datos desde ",
        "safety": "de seguridad",
        "log_in": "Iniciar sesión",
    },
}


def chromium_options(language: str, profile: Path) -> Any:
    from selenium.webdriver.chrome.options import Options

    options = Options()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1366,900",
        f"--user-data-dir={profile}",
        f"--lang={language}",
    ):
        options.add_argument(flag)
    options.add_experimental_option(
        "prefs",
        {
            "intl.accept_languages": language,
            "credentials_enable_service": False,
            "profile.password_manager_enabled": False,
        },
    )
    return options


@pytest.fixture
def browser_language() -> str:
    return "en"


@pytest.fixture
def browser(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, browser_language: str
) -> Iterator[Any]:
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        if os.environ.get("CI"):
            pytest.fail(
                f"CI needs {CHROMIUM} and {CHROMEDRIVER}: apt-get install chromium chromium-driver"
            )
        pytest.skip(f"No {CHROMIUM} or {CHROMEDRIVER} (Debian's chromium and chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    # Selenium Manager must never download a browser or a driver.
    monkeypatch.setenv("SE_OFFLINE", "true")
    profile = tmp_path / "chromium-profile"
    profile.mkdir()
    driver = webdriver.Chrome(
        service=Service(executable_path=str(CHROMEDRIVER)),
        options=chromium_options(browser_language, profile),
    )
    driver.set_page_load_timeout(TIMEOUT)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def studio_backups(settings: SettingsWrapper, tmp_path: Path) -> Path:
    """Back up the admin's own database, as a studio's project does."""
    directory = tmp_path / "backups"
    settings.STUDIO_BACKUPS = {
        "DATABASE": "default",
        "DIRECTORY": str(directory),
        "STATE_FILE": str(tmp_path / "settings.json"),
        "TIME_ZONE": "America/Hermosillo",
    }
    return directory


class Page:
    """The few things a person does in the admin, with waits instead of sleeps."""

    def __init__(self, driver: Any, server: LiveServer, language: str) -> None:
        self.driver = driver
        self.server = server
        self.language = language
        self.text = TEXTS[language]

    def open(self, path: str) -> None:
        self.driver.get(self.server.url + path)

    def wait_for(self, css: str) -> Any:
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions
        from selenium.webdriver.support.wait import WebDriverWait

        return WebDriverWait(self.driver, TIMEOUT).until(
            expected_conditions.presence_of_element_located((By.CSS_SELECTOR, css))
        )

    def find(self, css: str) -> Any:
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.CSS_SELECTOR, css)

    def find_all(self, css: str) -> list[Any]:
        from selenium.webdriver.common.by import By

        return list(self.driver.find_elements(By.CSS_SELECTOR, css))

    def click_and_wait(self, element: Any, css: str) -> Any:
        element.click()
        return self.wait_for(css)

    def log_in(self, username: str, password: str) -> None:
        self.wait_for("#login-form")
        self.find("#id_username").send_keys(username)
        self.find("#id_password").send_keys(password)
        self.click_and_wait(self.find("#login-form [type=submit]"), "#content")

    def on_login_page(self) -> bool:
        return "/admin/login/" in self.driver.current_url

    def messages(self) -> list[str]:
        return [li.text for li in self.find_all("ul.messagelist li")]

    def body(self) -> str:
        return str(self.find("body").text)

    def screenshot(self, name: str) -> None:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        target = SCREENSHOTS / f"{self.language}-{name}.png"
        assert self.driver.save_screenshot(str(target)), target
        assert target.stat().st_size > 10_000, f"{target} looks empty"


@pytest.mark.parametrize("browser_language", ["en", "es"])
def test_back_up_change_data_and_restore(
    browser: Any, live_server: LiveServer, studio_backups: Path, browser_language: str
) -> None:
    User.objects.create_superuser("recepcion", password="tinta-2026")
    page = Page(browser, live_server, browser_language)
    text = page.text
    # Some history, so that the chart has a line to draw.
    services.backup_now(kind="daily")
    Group.objects.bulk_create(Group(name=f"Artista {i}") for i in range(300))

    page.open("/admin/")
    assert page.on_login_page()
    page.screenshot("01-login")
    page.log_in("recepcion", "tinta-2026")
    page.click_and_wait(
        page.find("a[href='/admin/django_studio_backups/backup/']"), "#studio-backups-last"
    )
    assert page.find("#content h1").text == text["backups"]
    page.click_and_wait(
        page.find(f"#studio-backups-create [value='{text['back_up_now']}']"),
        "ul.messagelist li.success",
    )
    [message] = page.messages()
    assert message.startswith(text["backed_up"])
    made = services.backups()[0]
    assert made.kind == "manual"
    assert made.name in message
    assert len(page.find_all("#result_list tbody tr")) == 2
    assert len(page.find_all("#studio-backups-chart circle")) == 2
    page.screenshot("02-backups")

    # The studio changes its data after the backup.
    page.open("/admin/auth/group/add/")
    page.wait_for("#id_name").send_keys("Turno de noche")
    page.click_and_wait(page.find("[name=_save]"), "ul.messagelist li.success")
    assert Group.objects.filter(name="Turno de noche").exists()

    page.open("/admin/django_studio_backups/backup/")
    row = page.wait_for(f"tr[data-backup='{made.name}']")
    page.click_and_wait(
        row.find_element("link text", text["restore"]), "#studio-backups-restore-details"
    )
    confirmation = page.body()
    assert made.name in confirmation
    assert services.list_backups()[0]["display"] in confirmation
    assert text["safety_first"] in confirmation
    assert text["logged_out"] in confirmation
    page.screenshot("03-restore-confirmation")
    # Cancel leaves everything as it was.
    cancel = page.find("a.cancel-link")
    assert cancel.text == text["cancel"]
    page.click_and_wait(cancel, "#studio-backups-last")
    assert Group.objects.filter(name="Turno de noche").exists()
    assert len(services.backups()) == 2

    row = page.wait_for(f"tr[data-backup='{made.name}']")
    page.click_and_wait(
        row.find_element("link text", text["restore"]), "#studio-backups-restore-details"
    )
    page.click_and_wait(page.find(f"input[value='{text['confirm']}']"), "#content")
    # Sessions live in the database: the restore may have logged us out.
    if page.on_login_page():
        page.log_in("recepcion", "tinta-2026")
        page.open("/admin/django_studio_backups/backup/")
    page.wait_for("#studio-backups-last")
    restored = [m for m in page.messages() if m.startswith(text["restored"])]
    assert restored, page.messages()
    assert made.name in restored[0]
    safety = [b for b in services.backups() if b.kind == "safety"]
    assert len(safety) == 1
    safety_row = page.find(f"tr[data-backup='{safety[0].name}']")
    assert text["safety"] in safety_row.text
    page.screenshot("04-restored")

    # The data is as it was when the backup was made.
    assert not Group.objects.filter(name="Turno de noche").exists()
    assert Group.objects.filter(name="Artista 0").exists()
    page.open("/admin/auth/group/?q=Turno")
    page.wait_for("#changelist")
    assert "Turno de noche" not in page.body()
    entry = LogEntry.objects.filter(object_repr=made.name, action_flag=CHANGE).get()
    assert entry.user.username == "recepcion"


def test_a_damaged_backup_cannot_be_restored_and_a_restore_says_what_it_takes(
    browser: Any, live_server: LiveServer, studio_backups: Path
) -> None:
    User.objects.create_superuser("recepcion", password="tinta-2026")
    good = services.backup_now()
    damaged = services.backup_now()
    with damaged.path.open("r+b") as f:
        f.seek(4096)
        f.write(b"\xff" * 64)
    assert services.verify(damaged.name) != []
    # Three more people, whom a restore of the good backup would take away.
    for name in ("ana", "beto", "carla"):
        User.objects.create_user(name)
    page = Page(browser, live_server, "en")
    page.open("/admin/django_studio_backups/backup/")
    page.log_in("recepcion", "tinta-2026")
    page.wait_for("#result_list")

    rows = {row.get_attribute("data-backup"): row for row in page.find_all("#result_list tbody tr")}
    from selenium.webdriver.common.by import By

    button = rows[damaged.name].find_element(By.CSS_SELECTOR, ".studio-backups-restore")
    assert button.tag_name == "button"
    assert not button.is_enabled()
    assert "damaged" in button.get_attribute("title")
    assert "Damaged" in rows[damaged.name].text
    page.screenshot("damaged-backup")

    link = rows[good.name].find_element(By.CSS_SELECTOR, ".studio-backups-restore")
    assert link.is_enabled()
    page.click_and_wait(link, "#studio-backups-changes")
    changes = page.find("#studio-backups-changes").text
    assert "Users: 4 now → 1 in the backup (3 will be lost)" in changes
    assert "Everything saved after " in page.find("#studio-backups-since").text
    page.screenshot("restore-what-it-takes")


@pytest.mark.django_db(databases=["default", "studio"], transaction=True)
def test_restore_to_a_moment_with_the_picker(
    browser: Any,
    live_server: LiveServer,
    studio_db: StudioDB,
    settings: SettingsWrapper,
    tmp_path: Path,
) -> None:
    User.objects.create_superuser("recepcion", password="tinta-2026")
    replica = {"URL": f"file://{tmp_path / 'replica'}", "SYNC_INTERVAL": 0.5, "LAG_WARNING": 2}
    with replicating(studio_db, settings, replica, {}):
        add_one_by_one(studio_db, "a0")
        moment = settle(3)
        add_one_by_one(studio_db, "b0")
        wait_for_replica(studio_db, {"b0"})
        deadline = time.monotonic() + 60
        while not (seen := services.replication_seen()).current or seen.end is None:
            assert time.monotonic() < deadline, seen
            time.sleep(0.2)

        page = Page(browser, live_server, "en")
        page.open("/admin/django_studio_backups/backup/")
        page.log_in("recepcion", "tinta-2026")
        window = page.wait_for("#studio-backups-window").text
        assert window.startswith("Any moment can be restored from ")
        page.screenshot("replication-box")
        page.click_and_wait(page.find("#studio-backups-restore-moment"), "#studio-backups-moment")
        picker = page.find("input[name=moment]")
        assert picker.get_attribute("type") == "datetime-local"
        assert picker.get_attribute("min") <= moment.astimezone(ZONE).strftime(INPUT)
        # The picker's own controls differ by browser and language; its value is standard.
        browser.execute_script(
            "arguments[0].value = arguments[1]", picker, moment.astimezone(ZONE).strftime(INPUT)
        )
        page.screenshot("moment-picker")
        page.click_and_wait(
            page.find("#studio-backups-moment [type=submit]"), "#studio-backups-restore-details"
        )
        [fetched] = [b for b in services.backups() if b.kind == "point-in-time"]
        assert fetched.name in page.body()
        assert "Clients: 4 now → 3 in the backup (1 will be lost)" in page.body()
        page.screenshot("moment-confirmation")
        page.click_and_wait(page.find("input[value='Yes, restore it']"), "#studio-backups-last")
        assert any(
            m.startswith(f"Restored the database from {fetched.name}.") for m in page.messages()
        )
    assert studio_db.clients() == ["Ana", "Beto", "a0"]
