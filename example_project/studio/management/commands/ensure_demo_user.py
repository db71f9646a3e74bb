"""Create the demo superuser, or reset its password if it already exists."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandParser
from django.db import DEFAULT_DB_ALIAS

USERNAME = "demo"
PASSWORD = "demo"


class Command(BaseCommand):
    help = (
        f'Create a superuser "{USERNAME}" with password "{PASSWORD}", or reset it. '
        "For local demos only."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--database",
            default=DEFAULT_DB_ALIAS,
            help='Database alias to use (default: "default").',
        )

    def handle(self, *args: Any, **options: Any) -> None:
        alias: str = options["database"]
        user_model = get_user_model()
        manager = user_model._default_manager.db_manager(alias)
        user = manager.filter(**{user_model.USERNAME_FIELD: USERNAME}).first()
        created = user is None
        if user is None:
            user = user_model(**{user_model.USERNAME_FIELD: USERNAME})
        user.is_active = True
        user.is_staff = True
        user.is_superuser = True
        user.set_password(PASSWORD)
        user.save(using=alias)
        action = "Created" if created else "Reset"
        self.stdout.write(
            self.style.SUCCESS(
                f'{action} superuser "{USERNAME}". Log in at /admin/ with '
                f"username {USERNAME} and password {PASSWORD}."
            )
        )
