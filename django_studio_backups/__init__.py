"""Safe, verified backups and restores of a Django project's SQLite database."""

__version__ = "0.1.0"
