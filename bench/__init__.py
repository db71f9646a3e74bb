"""Benchmarks of django_studio_backups against cp, the sqlite3 CLI and django-dbbackup.

Run them with ``make bench`` (``SIZE=100M`` for a quick run), or ``python -m bench --help``.
"""
