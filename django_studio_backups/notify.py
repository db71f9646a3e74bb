"""Telling a person: e-mail to ``settings.ADMINS`` and a heartbeat monitor.

Every failure (a daily, manual or pre-migrate backup, an off-site copy, a restore) is mailed
to the project's ADMINS with ``mail_admins`` unless ``STUDIO_BACKUPS["NOTIFY_ADMINS"]`` is
False, and requested as ``HEARTBEAT_URL/fail`` (the healthchecks.io convention). A daily
job that succeeds requests ``HEARTBEAT_URL`` itself, so the monitor also notices the day on
which no job ran. Django's test environment gets no heartbeat.

Both go out in the background with short timeouts: a mail server or monitor that is down or
hangs never delays nor fails a backup, and an admin request never waits for them. A process
waits for them at exit, for ``background.EXIT_WAIT`` seconds at most.
"""

from __future__ import annotations

import logging
import queue
import socket
import threading
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core import mail
from django.core.mail import get_connection, mail_admins
from django.utils import timezone

from . import background, conf

logger = logging.getLogger("django_studio_backups")

HEARTBEAT_TIMEOUT = 10.0
MAIL_TIMEOUT = 30.0
# healthchecks.io keeps the first 100 kB of a ping's body; a reason is far shorter.
MAX_BODY = 10_000

WHAT_FAILED = {
    "daily": "The daily backup",
    "manual": "A backup made by hand",
    "pre-migrate": "The backup before migrate",
    "safety": "The safety backup before a restore",
    "offsite": "An off-site copy",
    "restore": "A restore",
    "replication": "Replication",
}
SUBJECTS = {
    "offsite": "Off-site copy failed on {host}",
    "restore": "Restore failed on {host}",
    "replication": "Replication failed on {host}",
}
SUBJECT = "Backup failed on {host}"


def failure(kind: str, reason: str, *, database: Path | str | None) -> None:
    """Tell a person that work of ``kind`` failed, and why; returns at once."""
    options = conf.user_settings()
    if options["NOTIFY_ADMINS"] is not False and settings.ADMINS:
        background.start("mailing the ADMINS", _mail, kind, reason, database, wait_at_exit=True)
    url = options["HEARTBEAT_URL"]
    if conf.is_heartbeat_url(url) and not _in_tests():
        _queue_ping(fail_url(url), reason)


def daily_succeeded() -> None:
    """Tell the heartbeat monitor that today's backup exists and passed its checks."""
    url = conf.user_settings()["HEARTBEAT_URL"]
    if conf.is_heartbeat_url(url) and not _in_tests():
        _queue_ping(url, None)


def _in_tests() -> bool:
    # Django's test environment (which also sends mail to a list, mail.outbox): a project's
    # own tests must not report to the monitor that watches its production backups.
    return hasattr(mail, "outbox")


def fail_url(url: str) -> str:
    """``url`` with ``/fail`` added to its path, its query kept."""
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(path=parts.path.rstrip("/") + "/fail"))


def host() -> str:
    return socket.gethostname()


def message(kind: str, reason: str, database: Path | str | None) -> tuple[str, str]:
    """The subject and body of the mail about a failure."""
    subject = SUBJECTS.get(kind, SUBJECT).format(host=host())
    what = WHAT_FAILED.get(kind, f"A {kind} backup")
    of = f" of {database}" if database is not None else ""
    body = (
        f"{what}{of} failed on {host()} at {timezone.now().isoformat(timespec='seconds')}.\n"
        f"\n"
        f"Reason: {reason}\n"
        f"\n"
        f"The Backups page of the admin shows the state of the backups. On the server,\n"
        f"`manage.py list_backups` lists them and `manage.py check --deploy` looks for\n"
        f"problems in the settings.\n"
    )
    return subject, body


def _mail(kind: str, reason: str, database: Path | str | None) -> None:
    subject, body = message(kind, reason, database)
    # A mail server that accepts the connection and never answers must not hold the
    # process; a timeout in the project's settings is the project's choice.
    options: dict[str, Any] = {}
    if getattr(settings, "EMAIL_TIMEOUT", None) is None:
        options["timeout"] = MAIL_TIMEOUT
    try:
        mail_admins(subject, body, connection=get_connection(**options))
    except Exception as exc:
        logger.error("Could not mail the ADMINS about the failure: %s: %s", type(exc).__name__, exc)


# Pings go out one after the other, in the order they were asked for: a failure followed by
# a success (a damaged backup replaced by a new one) must leave the monitor up.
_pings: queue.SimpleQueue[tuple[str, str | None]] = queue.SimpleQueue()
_guard = threading.Lock()
_sending = False


def _queue_ping(url: str, reason: str | None) -> None:
    global _sending
    with _guard:
        _pings.put((url, reason))
        if _sending:
            return
        _sending = True
    background.start("requesting HEARTBEAT_URL", _send_pings, wait_at_exit=True)


def _send_pings() -> None:
    global _sending
    while True:
        with _guard:
            try:
                url, reason = _pings.get_nowait()
            except queue.Empty:
                _sending = False
                return
        _ping(url, reason)


def _ping(url: str, reason: str | None) -> None:
    data = None if reason is None else reason.encode()[:MAX_BODY]
    request = urllib.request.Request(url, data=data, method="GET" if data is None else "POST")
    request.add_header("User-Agent", "django-studio-backups")
    try:
        with urllib.request.urlopen(request, timeout=HEARTBEAT_TIMEOUT) as response:
            response.read()
    except Exception as exc:  # URLError, timeouts, a broken answer (http.client's errors)
        logger.warning("Could not reach the heartbeat monitor at %s: %s", _shown(url), exc)


def _shown(url: str) -> str:
    # A ping URL is a secret (anyone holding it can report for the job): log its host only.
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}/…"
