"""Safe, verified backups and restores of a Django project's SQLite database."""

__version__ = "0.1.0"

# No NullHandler on the "django_studio_backups" logger: in a project without LOGGING for it,
# Python's last-resort handler writes its warnings and errors to stderr, which cron mails or
# logs, so a failure of the daily job is never silent.
