"""What the management commands share: turning service errors into ``CommandError``."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from collections.abc import Iterator
from datetime import datetime

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import CommandError, CommandParser, OutputWrapper
from django.template.defaultfilters import filesizeformat

from ..exceptions import RAISED, BackupError
from ..services import Progress


def as_json(value: object) -> str:
    """JSON for scripts: times in ISO 8601 (``2026-12-01T09:30:42-07:00``), paths as text."""

    def convert(item: object) -> str:
        if isinstance(item, datetime):
            return item.isoformat()
        return str(item)

    return json.dumps(value, indent=2, default=convert)


@contextlib.contextmanager
def quiet_when_the_reader_leaves() -> Iterator[None]:
    """``list_backups | head``: once the reader has closed the pipe, stop without a
    traceback, as command-line tools do."""
    try:
        yield
        sys.stdout.flush()
    except BrokenPipeError:
        # Python would try to flush stdout again at exit, and fail the same way.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)


def add_database_argument(parser: CommandParser) -> None:
    parser.add_argument(
        "--database",
        default=None,
        help="The database alias to use (default: STUDIO_BACKUPS['DATABASE'], or 'default').",
    )


class _NotRaised(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not any(getattr(record, key, False) for key in RAISED)


@contextlib.contextmanager
def failures_printed_once() -> Iterator[None]:
    """A command reports its failure itself, as a CommandError. Where the project has set up
    no logging, Python's last-resort handler would print that failure's log line too; this
    handler prints, as it would, every warning and error but those."""
    logger = logging.getLogger("django_studio_backups")
    stderr = logging.StreamHandler()
    stderr.setLevel(logging.WARNING)
    stderr.addFilter(_NotRaised())
    if not logger.hasHandlers():
        logger.addHandler(stderr)
    try:
        yield
    finally:
        logger.removeHandler(stderr)


@contextlib.contextmanager
def command_errors() -> Iterator[None]:
    """Service failures as one-line CommandErrors, printed once (``failures_printed_once``)."""
    with failures_printed_once():
        try:
            yield
        except (BackupError, ImproperlyConfigured) as exc:
            raise CommandError(str(exc)) from exc


def terminal_progress(out: OutputWrapper) -> Progress | None:
    """A progress callback that draws a percentage on a terminal; None when not a TTY."""
    if not out.isatty():
        return None
    last = [-1]

    def show(done: int, total: int) -> None:
        percent = 100 * done // total if total else 100
        if percent != last[0]:
            last[0] = percent
            out.write(f"\r{percent:3d}%", ending="")
            out.flush()

    return show


def end_progress(out: OutputWrapper) -> None:
    if out.isatty():
        out.write("\r     \r", ending="")


def human_size(size: int) -> str:
    return str(filesizeformat(size)).replace("\xa0", " ")
