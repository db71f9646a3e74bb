"""What the management commands share: turning service errors into ``CommandError``."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from collections.abc import Callable, Iterator
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
def failures_printed_once(verbosity: int = 1) -> Iterator[None]:
    """A command reports its failure itself, as a CommandError. Where the project has set up
    no logging, Python's last-resort handler would print that failure's log line too; this
    handler prints, as it would, every warning and error but those (and, with ``-v2``, what
    the app logs as it works)."""
    logger = logging.getLogger("django_studio_backups")
    stderr = logging.StreamHandler()
    stderr.setLevel(logging.INFO if verbosity >= 2 else logging.WARNING)
    stderr.addFilter(_NotRaised())
    level = logger.level
    if not logger.hasHandlers():
        logger.addHandler(stderr)
        if verbosity >= 2 and logger.getEffectiveLevel() > logging.INFO:
            logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(stderr)
        logger.setLevel(level)


@contextlib.contextmanager
def command_errors(verbosity: int = 1) -> Iterator[None]:
    """Service failures as one-line CommandErrors, printed once (``failures_printed_once``)."""
    with failures_printed_once(verbosity):
        try:
            yield
        except (BackupError, ImproperlyConfigured) as exc:
            raise CommandError(str(exc)) from exc


class _ClearTheLineFirst(logging.Filter):
    def __init__(self, clear: Callable[[], None]) -> None:
        super().__init__()
        self.clear = clear

    def filter(self, record: logging.LogRecord) -> bool:
        self.clear()
        return True


@contextlib.contextmanager
def progress_line(out: OutputWrapper, verbosity: int) -> Iterator[Progress | None]:
    """A percentage drawn on a terminal while a copy runs: the progress callback, or None
    when ``out`` is not a terminal or with ``-v0``. The line is cleared before anything the
    app logs (which goes to the same terminal) and when the block ends, so no other output
    runs into it."""
    if verbosity < 1 or not out.isatty():
        yield None
        return
    shown = [-1]  # the percentage on the line; -1 while the line is clear

    def show(done: int, total: int) -> None:
        percent = 100 * done // total if total else 100
        if percent != shown[0]:
            shown[0] = percent
            out.write(f"\r{percent:3d}%", ending="")
            out.flush()

    def clear() -> None:
        if shown[0] != -1:
            shown[0] = -1
            out.write("\r     \r", ending="")
            out.flush()

    logger = logging.getLogger("django_studio_backups")
    first = _ClearTheLineFirst(clear)
    logger.addFilter(first)
    try:
        yield show
    finally:
        logger.removeFilter(first)
        clear()


def human_size(size: int) -> str:
    return str(filesizeformat(size)).replace("\xa0", " ")
