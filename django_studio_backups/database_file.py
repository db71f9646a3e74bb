"""The file behind a SQLite ``NAME`` in ``DATABASES``, as SQLite opens it: a path or a
``file:`` URI, in memory or not, and whether its URI parameters take away the locks that
backups and restores rely on.

Nothing here knows about Django: ``conf`` and ``premigrate`` pass the ``NAME`` in.
"""

from __future__ import annotations

import os
import urllib.parse
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class DatabaseFile:
    # The file itself, symlinks resolved; None for a database in memory.
    path: Path | None
    # A URI parameter that makes SQLite open the file without the usual locks, if any.
    unsafe: str | None = None


# SQLite URI parameters under which Django's connections would not take the locks that a
# backup's read transaction and a restore's write transaction rely on.
UNSAFE_PARAMETERS = ("vfs", "nolock", "immutable")


def database_file(name: object) -> DatabaseFile:
    """The file behind a SQLite ``NAME`` as Django opens it (with ``uri=True``).

    A ``file:`` URI is parsed as SQLite does. The path is resolved (SQLite itself follows
    symlinks, and keeps the -wal and -journal beside the real file).
    """
    # SQLite reads the name as a C string: it ends at a NUL.
    text = str(os.fspath(name) if isinstance(name, os.PathLike) else name or "").split("\x00")[0]
    if text in ("", ":memory:"):
        return DatabaseFile(None)
    unsafe = None
    if text.startswith("file:"):
        parsed = urllib.parse.urlsplit(text)
        parameters = urllib.parse.parse_qs(parsed.query)
        if parameters.get("mode") == ["memory"] or urllib.parse.unquote(parsed.path) in (
            "",
            ":memory:",
        ):
            return DatabaseFile(None)
        found = [
            f"{key}={parameters[key][0]}"
            for key in UNSAFE_PARAMETERS
            if key in parameters and (key == "vfs" or _uri_boolean(parameters[key][0]))
        ]
        if parsed.netloc not in ("", "localhost"):
            found.append(f"the URI authority {parsed.netloc!r}")
        unsafe = ", ".join(found) or None
        text = urllib.parse.unquote(parsed.path)
    return DatabaseFile(Path(os.path.realpath(text)), unsafe)


def _uri_boolean(value: str) -> bool:
    # As sqlite3_uri_boolean() reads it with a default of false: "yes", "true", "on" or a
    # number other than 0.
    lowered = value.lower()
    if lowered.isdigit():
        return int(lowered) != 0
    return lowered in ("yes", "true", "on")
