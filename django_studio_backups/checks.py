"""System checks for the ``STUDIO_BACKUPS`` setting (ids ``studio_backups.E…``/``W…``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.apps import AppConfig
from django.core import checks

from . import conf


@checks.register()
def check_settings(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    return [
        checks.Error(problem.message, hint=problem.hint, id=problem.id)
        for problem in conf.problems()
    ]
