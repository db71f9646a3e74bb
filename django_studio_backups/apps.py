from __future__ import annotations

from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class StudioBackupsConfig(AppConfig):
    name = "django_studio_backups"
    verbose_name = _("Backups")
    default_auto_field = "django.db.models.AutoField"

    def ready(self) -> None:
        # Importing checks registers the system checks.
        from . import checks, cron, startup  # noqa: F401

        cron.add_job()
        startup.arm()
        # Importing these connects their signal receivers.
        from . import growth, premigrate  # noqa: F401
