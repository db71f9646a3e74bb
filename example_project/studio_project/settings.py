"""Settings for the example tattoo-studio project (development/demo use only)."""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import Any

import django

BASE_DIR = Path(__file__).resolve().parent.parent


def _env_flag(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


SECRET_KEY = os.environ.get(
    "STUDIO_SECRET_KEY", "django-insecure-demo-only-do-not-use-this-key-in-production"
)
DEBUG = _env_flag("STUDIO_DEBUG", True)
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_studio_backups",
    "django_crontab",
    "studio",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "studio_project.urls"

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
            ],
        },
    },
]

WSGI_APPLICATION = "studio_project.wsgi.application"

DATABASES: dict[str, dict[str, Any]] = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": Path(os.environ.get("STUDIO_DB_PATH", BASE_DIR / "var" / "studio.db")),
    }
}
if django.VERSION >= (5, 1):
    # SQLite's init_command option only exists since Django 5.1.
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
LANGUAGES = [
    ("en", "English"),
    ("es", "Español"),
]
TIME_ZONE = "America/Hermosillo"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "var" / "static"

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

STUDIO_BACKUPS: dict[str, Any] = {
    "MAX_BACKUPS": 20,
    "TIME_ZONE": "America/Hermosillo",
    # A heartbeat monitor (healthchecks.io or a self-hosted Healthchecks): requested after each
    # daily backup, and at URL/fail after any failure.
    "HEARTBEAT_URL": os.environ.get("STUDIO_HEARTBEAT_URL") or None,
}

# Every failed backup, off-site copy or restore is mailed to ADMINS.
if os.environ.get("STUDIO_ADMIN_EMAIL"):
    # Django 6.0 takes addresses; earlier versions take (name, address) pairs.
    ADMINS: list[Any] = (
        [os.environ["STUDIO_ADMIN_EMAIL"]]
        if django.VERSION >= (6, 0)
        else [("Studio owner", os.environ["STUDIO_ADMIN_EMAIL"])]
    )
    EMAIL_HOST = os.environ.get("STUDIO_EMAIL_HOST", "localhost")
    EMAIL_PORT = int(os.environ.get("STUDIO_EMAIL_PORT", "25"))
SERVER_EMAIL = "backups@studio.example"

# The daily backup: `manage.py crontab add --verbosity 0` installs it (django_studio_backups
# adds its job to CRONJOBS, at STUDIO_BACKUPS["CRON_SCHEDULE"], 03:00 by default).
# `crontab add` and `crontab remove` replace every line carrying this comment: unique per project.
CRONTAB_COMMENT = f"django-studio-backups example project in {BASE_DIR}"
CRONTAB_DJANGO_MANAGE_PATH = str(BASE_DIR / "manage.py")
# cron starts jobs with an almost empty environment: pass on what these settings read from it.
CRONTAB_COMMAND_PREFIX = " ".join(
    f"{name}={shlex.quote(os.environ[name])}"
    for name in (
        "STUDIO_DB_PATH",
        "STUDIO_HEARTBEAT_URL",
        "STUDIO_ADMIN_EMAIL",
        "STUDIO_EMAIL_HOST",
        "STUDIO_EMAIL_PORT",
    )
    if name in os.environ
)
# The job's log lines (and any traceback) go to a file beside the database.
CRONTAB_COMMAND_SUFFIX = (
    f">> {shlex.quote(str(Path(DATABASES['default']['NAME']).parent / 'cron.log'))} 2>&1"
)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "simple": {"format": "{asctime} {levelname} {name}: {message}", "style": "{"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "simple"},
    },
    "loggers": {
        "django_studio_backups": {
            "handlers": ["console"],
            "level": "INFO",
            "propagate": False,
        },
    },
}
