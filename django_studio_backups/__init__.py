"""Safe, verified backups and restores of a Django project's SQLite database."""

import logging

__version__ = "0.1.0"

# A library's logger stays silent until the project configures it (LOGGING); failures also
# reach callers as return values, CommandError, the state file and the backup_failed signal.
logging.getLogger("django_studio_backups").addHandler(logging.NullHandler())
