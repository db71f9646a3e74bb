from __future__ import annotations

import logging
import math
import sqlite3
import statistics
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import time_machine
from django.conf import settings as django_settings
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse
from django.utils import translation
from hypothesis import given
from hypothesis import strategies as st
from pytest_django.fixtures import Settings as SettingsWrapper

from django_studio_backups import checks, conf, growth, services, signals
from django_studio_backups.archive import BackupFile
from tests.conftest import StudioDB

# Big enough that one page is 0.1% of it, so a size can be hit within a tenth of a percent.
BASE_PAGES = 1000


def listing(*sizes: int) -> list[BackupFile]:
    """Backups of ``sizes``, newest first, as the archive lists them."""
    moment = datetime(2026, 3, 4, 15, 30, tzinfo=timezone.utc)
    return [
        BackupFile(path=Path(f"backup_20260304_1530{i:02d}.db"), size=size, modified_at=moment)
        for i, size in enumerate(sizes)
    ]


@pytest.mark.parametrize(
    ("newest", "fires"),
    [(151, True), (150, False), (149, False), (100, False), (10, False)],
)
def test_more_than_half_again_the_median_fires(newest: int, fires: bool) -> None:
    found = growth.unusual_growth(listing(newest, *[100] * 7), 0.5)

    assert (found is not None) is fires
    if found is not None:
        assert found.median == 100
        assert found.ratio == pytest.approx(0.51)


def test_the_threshold_is_the_setting() -> None:
    assert growth.unusual_growth(listing(151, *[100] * 7), 0.6) is None
    assert growth.unusual_growth(listing(111, *[100] * 7), 0.1) is not None


def test_the_median_ignores_one_odd_backup() -> None:
    previous = [100, 100, 100, 5000, 100, 100, 100]

    assert growth.unusual_growth(listing(149, *previous), 0.5) is None
    assert growth.unusual_growth(listing(151, *previous), 0.5) is not None


def test_only_the_seven_previous_backups_count() -> None:
    # An eighth, older and tiny backup is not part of the comparison.
    assert growth.unusual_growth(listing(149, *[100] * 7, 1), 0.5) is None


def test_no_warning_before_seven_backups() -> None:
    assert growth.unusual_growth([], 0.5) is None
    assert growth.unusual_growth(listing(1000, *[100] * 6), 0.5) is None


def test_a_damaged_empty_backup_does_not_divide_by_zero() -> None:
    found = growth.unusual_growth(listing(4096, *[0] * 7), 0.5)

    assert found is not None
    assert found.median == 0


@given(
    previous=st.lists(st.integers(4096, 10**10), min_size=7, max_size=7),
    permutation=st.randoms(),
)
def test_fires_at_51_and_is_silent_at_49_percent(previous: list[int], permutation: Any) -> None:
    median = statistics.median(previous)
    shuffled = list(previous)
    permutation.shuffle(shuffled)

    above = growth.unusual_growth(listing(math.ceil(median * 1.51), *shuffled), 0.5)
    below = growth.unusual_growth(listing(math.floor(median * 1.49), *shuffled), 0.5)

    assert above is not None
    assert above.median == median
    assert below is None


def test_describe() -> None:
    found = growth.unusual_growth(listing(3 * 1024 * 1024, *[2 * 1024 * 1024] * 7), 0.2)
    assert found is not None

    assert growth.describe(found) == (
        "The newest backup, backup_20260304_153000.db (3.0\xa0MB), is 50% larger than the "
        "median of the 7 backups before it (2.0\xa0MB)."
    )


# With real backups ------------------------------------------------------------------------


def page_count(path: Path) -> int:
    connection = sqlite3.connect(path)
    try:
        return int(connection.execute("PRAGMA page_count").fetchone()[0])
    finally:
        connection.close()


def grow_to(path: Path, pages: int) -> None:
    """Add rows until the database has at least ``pages`` pages (about one page per row)."""
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        connection.execute("CREATE TABLE IF NOT EXISTS padding (data BLOB)")
        while int(connection.execute("PRAGMA page_count").fetchone()[0]) < pages:
            connection.execute("INSERT INTO padding VALUES (zeroblob(3000))")
    finally:
        connection.close()


@pytest.fixture(autouse=True)
def english() -> Iterator[None]:
    # The messages are translated; a request in Spanish must not leave Spanish active.
    with translation.override("en"):
        yield


@pytest.fixture
def sent() -> Iterator[list[dict[str, Any]]]:
    received: list[dict[str, Any]] = []

    def record(sender: object, **kwargs: Any) -> None:
        received.append(kwargs)

    signals.backup_growth.connect(record)
    yield received
    signals.backup_growth.disconnect(record)


@pytest.fixture
def seven_backups(studio_db: StudioDB) -> StudioDB:
    grow_to(studio_db.path, BASE_PAGES)
    for _ in range(7):
        services.backup_now()
    return studio_db


def median_size() -> float:
    return float(statistics.median(b.size for b in services.backups()[:7]))


def test_a_backup_51_percent_larger_warns(
    seven_backups: StudioDB, sent: list[dict[str, Any]], caplog: pytest.LogCaptureFixture
) -> None:
    median = median_size()
    grow_to(seven_backups.path, math.ceil(median * 1.51 / 4096))

    with caplog.at_level(logging.WARNING, logger="django_studio_backups"):
        backup = services.backup_now()

    [signal] = sent
    assert signal["backup"] == backup
    assert signal["using"] == "studio"
    assert signal["median"] == median
    assert 0.51 <= signal["growth"] < 0.515
    assert signal["growth"] == backup.size / median - 1
    [record] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert f"The newest backup, {backup.name}" in record.getMessage()
    assert "is 51% larger than the median of the 7 backups before it" in record.getMessage()
    message = services.growth_warning()
    assert message is not None
    assert message.startswith(f"The newest backup, {backup.name}")
    [warning] = checks.check_growth()
    assert warning.id == "studio_backups.W030"
    assert warning.msg == message
    assert warning.hint == growth.HINT


def test_a_backup_49_percent_larger_is_silent(
    seven_backups: StudioDB, sent: list[dict[str, Any]], caplog: pytest.LogCaptureFixture
) -> None:
    median = median_size()
    grow_to(seven_backups.path, math.ceil(median * 1.49 / 4096))

    with caplog.at_level(logging.WARNING, logger="django_studio_backups"):
        backup = services.backup_now()

    assert 0.49 <= backup.size / median - 1 < 0.495
    assert sent == []
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert services.growth_warning() is None
    assert checks.check_growth() == []


def test_the_warning_holds_until_backups_catch_up(
    seven_backups: StudioDB, sent: list[dict[str, Any]]
) -> None:
    grow_to(seven_backups.path, 2 * BASE_PAGES)
    for _ in range(4):
        services.backup_now()
    assert len(sent) == 4
    assert services.growth_warning() is not None

    # Four of the seven backups before it are as large now: the median has caught up.
    services.backup_now()

    assert len(sent) == 4
    assert services.growth_warning() is None


def test_the_setting_moves_the_threshold(
    seven_backups: StudioDB, sent: list[dict[str, Any]], settings: SettingsWrapper
) -> None:
    settings.STUDIO_BACKUPS = {**settings.STUDIO_BACKUPS, "GROWTH_WARNING": 0.75}
    grow_to(seven_backups.path, math.ceil(median_size() * 1.6 / 4096))

    services.backup_now()

    assert sent == []
    assert services.growth_warning() is None


def test_no_signal_names_a_backup_that_is_not_the_one_compared(
    seven_backups: StudioDB, sent: list[dict[str, Any]]
) -> None:
    # A backup dated in the future (a clock set wrong, a file copied in) stays the newest
    # one listed; a new backup must not take the blame for its size.
    grow_to(seven_backups.path, 2 * BASE_PAGES)
    with time_machine.travel(datetime.now().astimezone() + timedelta(days=1), tick=False):
        future = services.backup_now()
    assert len(sent) == 1

    services.backup_now()

    assert len(sent) == 1
    message = services.growth_warning()
    assert message is not None
    assert future.name in message


def test_the_check_is_quiet_when_the_backups_cannot_be_listed(
    studio_db: StudioDB, settings: SettingsWrapper, tmp_path: Path
) -> None:
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    settings.STUDIO_BACKUPS = {**settings.STUDIO_BACKUPS, "DIRECTORY": str(not_a_folder)}
    assert checks.check_growth() == []

    # check_settings reports these instead.
    settings.STUDIO_BACKUPS = {"DATABASE": "nowhere"}
    assert checks.check_growth() == []


@pytest.mark.parametrize("value", ["lots", 0, -0.5, True, None, float("nan")])
def test_a_bad_growth_setting_is_reported_and_the_default_used(
    studio_db: StudioDB, settings: SettingsWrapper, value: object
) -> None:
    settings.STUDIO_BACKUPS = {**settings.STUDIO_BACKUPS, "GROWTH_WARNING": value}

    assert [m.id for m in checks.check_settings()] == ["studio_backups.E031"]
    assert conf.get_config().growth_warning == 0.5


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_a_bad_backup_before_migrate_setting_is_reported(
    studio_db: StudioDB, settings: SettingsWrapper, value: object
) -> None:
    settings.STUDIO_BACKUPS = {**settings.STUDIO_BACKUPS, "BACKUP_BEFORE_MIGRATE": value}

    assert [m.id for m in checks.check_settings()] == ["studio_backups.E030"]
    # Backups still work; migrate keeps making its backup until the value is fixed.
    assert services.backup_now().kind == "manual"


def test_good_values(studio_db: StudioDB, settings: SettingsWrapper) -> None:
    settings.STUDIO_BACKUPS = {
        **settings.STUDIO_BACKUPS,
        "GROWTH_WARNING": 1,
        "BACKUP_BEFORE_MIGRATE": False,
    }

    assert checks.check_settings() == []
    assert conf.get_config().growth_warning == 1.0
    assert django_settings.STUDIO_BACKUPS["GROWTH_WARNING"] == 1


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("language", "text"),
    [
        ("en", "is 51% larger than the median of the 7 backups before it"),
        ("es", "es 51% más grande que la mediana de los 7 respaldos anteriores"),
    ],
)
def test_the_admin_shows_the_warning_beside_the_chart(
    seven_backups: StudioDB, client: Client, language: str, text: str
) -> None:
    changelist = reverse("admin:django_studio_backups_backup_changelist")
    client.force_login(User.objects.create_superuser("boss", password="pw"))
    assert 'id="studio-backups-growth"' not in client.get(changelist).content.decode()
    grow_to(seven_backups.path, math.ceil(median_size() * 1.51 / 4096))
    backup = services.backup_now()

    html = client.get(changelist, headers={"accept-language": language}).content.decode()

    chart = html.index('id="studio-backups-chart"')
    warning = html.index('id="studio-backups-growth"')
    # Right under the size chart, inside its box, above the list of backups.
    assert html.index("</svg>", chart) < warning < html.index('id="changelist"')
    assert "</div>" not in html[chart:warning]
    shown = html[warning : html.index("</ul>", warning)]
    assert backup.name in shown
    assert text in shown
