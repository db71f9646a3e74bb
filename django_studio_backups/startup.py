"""``STUDIO_BACKUPS["BACKUP_ON_STARTUP"]``: the if-needed backup when a server starts serving.

A process counts as a server when a request reaches Django's WSGI or ASGI handler: that is
what runserver, gunicorn, uWSGI, Daphne and Uvicorn run. Management commands (migrate,
test, ...) never get there, the test client uses a handler of its own, and while tests run
(``setup_test_environment``, which gives ``django.core.mail`` its ``outbox``) a live test
server is not counted either.
"""

from __future__ import annotations

import threading
from typing import Any

from django.core import mail
from django.core.handlers.asgi import ASGIHandler
from django.core.handlers.wsgi import WSGIHandler
from django.core.signals import request_started

from . import conf, cron

DISPATCH_UID = "django_studio_backups.startup"


def arm() -> None:
    if conf.user_settings()["BACKUP_ON_STARTUP"] is True:
        request_started.connect(_on_request_started, dispatch_uid=DISPATCH_UID)


def start_backup_thread() -> threading.Thread:
    # A daemon thread never holds up a server's shutdown; a backup cut short leaves only a
    # temporary file, which the next backup removes.
    # A server's restart is no daily job: it must not tell the monitor that one ran.
    thread = threading.Thread(
        target=cron.daily_backup,
        kwargs={"daily_job": False},
        name="studio-backups-startup",
        daemon=True,
    )
    thread.start()
    return thread


def _on_request_started(sender: type[Any], **kwargs: Any) -> None:
    # disconnect() is True for one caller only, so two first requests arriving together on
    # a threaded server still start one backup.
    if _is_server(sender) and request_started.disconnect(dispatch_uid=DISPATCH_UID):
        start_backup_thread()


def _is_server(handler: type[Any]) -> bool:
    return issubclass(handler, WSGIHandler | ASGIHandler) and not hasattr(mail, "outbox")
