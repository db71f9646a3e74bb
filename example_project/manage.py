#!/usr/bin/env python
"""Command-line entry point for the example tattoo-studio project."""

from __future__ import annotations

import os
import sys
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent
REPO_ROOT = PROJECT_DIR.parent


def main() -> None:
    # The repository root makes the checked-out django_studio_backups importable without
    # installing it; the project directory makes this work from any working directory.
    for path in (REPO_ROOT, PROJECT_DIR):
        sys.path.insert(0, str(path))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "studio_project.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
