from __future__ import annotations

from django.db import models


# Installed only by the tests that need a migration to apply (tests/test_migrate_backup.py).
class Design(models.Model):
    name = models.CharField(max_length=100)
    colour = models.CharField(max_length=20, default="black")

    def __str__(self) -> str:
        return self.name
