"""The example project's settings, plus what a test gives it through the environment.

Only the processes a test starts itself use this module (``DJANGO_SETTINGS_MODULE``); the
lines they install in the crontab run the example project's own settings, as cron would.
"""

from __future__ import annotations

import os

from studio_project.settings import *  # noqa: F403
from studio_project.settings import STUDIO_BACKUPS as EXAMPLE_BACKUPS

CRONTAB_EXECUTABLE = os.environ.get("STUDIO_TEST_CRONTAB", "/usr/bin/crontab")
STUDIO_BACKUPS = {
    **EXAMPLE_BACKUPS,
    "BACKUP_ON_STARTUP": os.environ.get("STUDIO_TEST_BACKUP_ON_STARTUP") == "1",
    "CRON_SCHEDULE": os.environ.get(
        "STUDIO_TEST_CRON_SCHEDULE", EXAMPLE_BACKUPS.get("CRON_SCHEDULE", "0 3 * * *")
    ),
}
