"""The example studio project, plus django-dbbackup, pointed at the benchmark's files."""

from __future__ import annotations

import json
import os
from pathlib import Path

from studio_project.settings import *  # noqa: F403
from studio_project.settings import DATABASES, INSTALLED_APPS

# django-dbbackup is installed beside the project (PYTHONPATH) only for the benchmark; it
# is not a dependency of django_studio_backups.
INSTALLED_APPS = [*INSTALLED_APPS, "dbbackup"]

DATABASES["default"]["NAME"] = Path(os.environ["STUDIO_DB_PATH"])
if os.environ.get("BENCH_JOURNAL_MODE", "wal") != "wal":
    # The example project switches every connection to WAL; the rollback-journal runs
    # must leave the database in the mode the benchmark put it in.
    DATABASES["default"]["OPTIONS"] = {}

STUDIO_BACKUPS = {
    "DIRECTORY": os.environ["BENCH_BACKUP_DIR"],
    "TIME_ZONE": "America/Hermosillo",
}

STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    "dbbackup": {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": os.environ["BENCH_DBBACKUP_DIR"]},
    },
}

# Our own log lines would only add noise to the benchmark's output.
LOGGING = {"version": 1, "disable_existing_loggers": False}

if os.environ.get("BENCH_REPLICA_URL"):
    # The point-in-time phases: Litestream at its default sync interval.
    STUDIO_BACKUPS["REPLICATION"] = {
        "URL": os.environ["BENCH_REPLICA_URL"],
        "OPTIONS": json.loads(os.environ.get("BENCH_REPLICA_OPTIONS", "{}")),
    }
