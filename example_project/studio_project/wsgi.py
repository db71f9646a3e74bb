"""WSGI entry point for the example tattoo-studio project."""

from __future__ import annotations

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "studio_project.settings")

application = get_wsgi_application()
