from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

# Subprocesses started by the tests inherit the folder through the environment, so they
# see the same databases as the test process.
if "STUDIO_TESTS_DIR" not in os.environ:
    os.environ["STUDIO_TESTS_DIR"] = tempfile.mkdtemp(prefix="studio-backups-tests-")
BASE_DIR = Path(os.environ["STUDIO_TESTS_DIR"])

SECRET_KEY = "tests-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
USE_TZ = True
TIME_ZONE = "America/Hermosillo"
LANGUAGE_CODE = "en-us"
LANGUAGES = [("en", "English"), ("es", "Español")]
USE_I18N = True

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_studio_backups",
    "tests.studio",
]

MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]

ROOT_URLCONF = "tests.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

DATABASES: dict[str, dict[str, Any]] = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": BASE_DIR / "default" / "db.sqlite3",
        "TEST": {"NAME": str(BASE_DIR / "default" / "test.sqlite3")},
    },
    # Service tests point this alias at a fresh file of their own (see conftest.studio_db).
    "studio": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("STUDIO_TEST_DB", BASE_DIR / "studio" / "studio.db"),
        "TEST": {"NAME": str(BASE_DIR / "studio" / "test-studio.db")},
    },
}
(BASE_DIR / "default").mkdir(exist_ok=True)
(BASE_DIR / "studio").mkdir(exist_ok=True)

# Tests that run management commands in a subprocess pass the settings through the environment.
STUDIO_BACKUPS: dict[str, object] = json.loads(os.environ.get("STUDIO_TEST_BACKUPS", "{}"))
STORAGES: dict[str, dict[str, Any]] = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    # Off-site copies' storages (a folder, SFTP, S3 on 127.0.0.1), for subprocesses too.
    **json.loads(os.environ.get("STUDIO_TEST_STORAGES", "{}")),
}

STATIC_URL = "/static/"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# Failure mail from subprocesses goes to ADMINS through a real SMTP server on 127.0.0.1.
if "STUDIO_TEST_SMTP_PORT" in os.environ:
    import django

    EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    EMAIL_HOST = "127.0.0.1"
    EMAIL_PORT = int(os.environ["STUDIO_TEST_SMTP_PORT"])
    # Django 6.0 takes addresses; earlier versions take (name, address) pairs.
    ADMINS: list[Any] = (
        ["owner@studio.test"]
        if django.VERSION >= (6, 0)
        else [("Studio owner", "owner@studio.test")]
    )
