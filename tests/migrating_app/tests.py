from __future__ import annotations

from django.db import connections
from django.test import TestCase


# Run by `manage.py test` in tests/test_migrate_backup.py, not by pytest: it checks that the
# test runner migrated the test database (and, there, that no backup was made of it).
class MigratedTestDatabase(TestCase):
    databases = {"studio"}  # noqa: RUF012 (django-stubs types it as an instance variable)

    def test_the_second_migration_ran(self) -> None:
        with connections["studio"].cursor() as cursor:
            cursor.execute("SELECT name, colour FROM migrating_app_design ORDER BY id")
            rows = cursor.fetchall()
        assert rows == [("ROSE", "black"), ("ANCHOR", "black")], rows
