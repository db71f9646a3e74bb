from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _


class Backup(models.Model):
    """A backup file, for the admin's permissions and history; no table holds these rows.

    The backup folder is the only record of the backups (``services.backups()`` lists it),
    so the model is unmanaged: migrating creates its content type and permissions only.
    """

    name = models.CharField(_("name"), max_length=255, primary_key=True)

    class Meta:
        managed = False
        verbose_name = _("backup")
        verbose_name_plural = _("backups")
        default_permissions = ("view", "add", "delete")
        permissions = (
            ("restore_backup", _("Can restore the database from a backup")),
            ("download_backup", _("Can download a backup")),
        )

    def __str__(self) -> str:
        return self.name
