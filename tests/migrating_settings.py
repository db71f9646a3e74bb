"""tests.settings with tests.migrating_app installed, for ``manage.py migrate`` subprocesses."""

from __future__ import annotations

import json
import os

from tests.settings import *  # noqa: F403
from tests.settings import DATABASES, INSTALLED_APPS

INSTALLED_APPS = [*INSTALLED_APPS, "tests.migrating_app"]
DATABASES["studio"]["NAME"] = os.environ["MIGRATING_TEST_DB"]
if "MIGRATING_TEST_TEST_DB" in os.environ:
    # No dependency on "default": `manage.py test` then sets up the studio database alone.
    DATABASES["studio"]["TEST"] = {
        "NAME": os.environ["MIGRATING_TEST_TEST_DB"],
        "DEPENDENCIES": [],
    }
STUDIO_BACKUPS = json.loads(os.environ["MIGRATING_TEST_BACKUPS"])
