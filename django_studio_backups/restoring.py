"""The restore pipeline: validate, take the safety backup under the restore's own lock,
restore, check, and put back only what SQLite finds damaged.

``services.restore`` is the public face of it; nothing here is public API but
``RestoreReport``.
"""

from __future__ import annotations

import concurrent.futures
import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from django.apps import apps
from django.db import connections, router
from django.db.models import Model

from . import archive, backing_up, engine, engine_restore, notify, offsite, retention, signals
from .archive import BackupFile
from .conf import Config
from .exceptions import RAISED, BackupFailed, BackupNotFound, RestoreFailed
from .replication_conf import replicated

logger = logging.getLogger("django_studio_backups")

# What "the latest backup" never is: a copy of a damaged database, or a safety backup, which
# holds the data a restore replaced (a second `restore_backup --latest` would undo the first).
NOT_LATEST = frozenset({"damaged", retention.SAFETY})


@dataclass(frozen=True)
class RestoreReport:
    restored: BackupFile
    safety_backup: BackupFile | None
    # Migrations the current code has that the backup lacks, and the reverse.
    missing_migrations: list[tuple[str, str]] = field(default_factory=list)
    unknown_migrations: list[tuple[str, str]] = field(default_factory=list)
    # Why the restored database could not be checked right after the restore (it stayed
    # busy); None once it passed. The restore stands either way.
    warning: str | None = None

    @property
    def checked(self) -> bool:
        return self.warning is None


def validate(config: Config, backup: BackupFile) -> None:
    """Refuse what cannot be restored (all but the integrity_check)."""
    try:
        if backup.manifest_path.exists() and backup.sha256 is None:
            # Without its checksum a changed file could pass for the backup that was made.
            raise engine.CheckFailed("its manifest is damaged, so its SHA-256 is unknown")
        if backup.sha256 is not None and engine.sha256_of(backup.path) != backup.sha256:
            raise engine.CheckFailed(
                "it does not match the SHA-256 in its manifest, so it changed after it was made"
            )
        if not engine.has_table(backup.path, "django_migrations"):
            raise engine.NotADatabase("it is a SQLite database, but not a Django one")
        engine.check_restorable(backup.path, config.database_path)
    except (engine.EngineError, sqlite3.Error, OSError) as exc:
        raise RestoreFailed(f"{backup.name} cannot be restored: {exc}") from exc


def restore_file(
    config: Config,
    backup: BackupFile,
    progress: engine.Progress | None,
    before_commit: Callable[[], None],
    *,
    wait_first: bool,
) -> tuple[BackupFile | None, str | None]:
    """Restore ``backup`` into the live database after a safety backup of it, taken under
    the restore's own write lock; (the safety backup, why the result is unchecked)."""
    safety: BackupFile | None = None

    def take_safety_backup() -> None:
        # Called once the restore holds the write lock: no one can commit between this
        # copy and the restore, so it is exactly the data that the restore replaces.
        nonlocal safety
        try:
            safety = backing_up.publish_backup(config, "safety", None, under_restore=True)
        except BackupFailed as exc:
            raise RestoreFailed(f"No restore without a safety backup: {exc}") from exc

    close_connections(config.alias)
    try:
        if wait_first:
            # In rollback-journal mode the copy's lock keeps the site's readers out too, so
            # it is not held while the check ends: the check ends first.
            before_commit()
        warning = engine_restore.restore_into(
            backup.path,
            config.database_path,
            timeout=config.lock_timeout,
            progress=progress,
            before_commit=None if wait_first else before_commit,
            while_locked=take_safety_backup if backing_up.has_data(config.database_path) else None,
            passive=replicated(config.alias),
        )
    except engine.CheckFailed as exc:
        # Committed, and SQLite found the restored database damaged: the safety backup
        # holds the data it replaced, so it stays (and counts), whatever happens next.
        if safety is None:
            raise RestoreFailed(
                f"{exc}; there was no database before it to put back", database_changed=True
            ) from exc
        backing_up.record_backup(config, safety, protected={backup.path})
        raise put_back(config, safety, str(exc)) from exc
    except (RestoreFailed, engine.EngineError, sqlite3.Error, OSError) as exc:
        # Refused by before_commit, or rolled back: the live database is as it was, so
        # the safety backup is a second copy of it. (Anything else, a KeyboardInterrupt
        # say, may have come after the commit: the safety backup stays.)
        if safety is not None:
            try:
                archive.delete_backup(safety)
            except OSError as cleanup:  # pragma: no cover - a file just written, undeletable
                logger.error("Could not delete the unneeded %s: %s", safety.name, cleanup)
        if isinstance(exc, RestoreFailed):
            raise
        raise RestoreFailed(f"{backup.name} was not restored: {exc}") from exc
    finally:
        # Django's connections may hold pages of the old database in their caches;
        # the next query opens a fresh connection and sees the restored data.
        close_connections(config.alias)
    return safety, warning


def put_back(config: Config, safety: BackupFile, problem: str) -> RestoreFailed:
    """Put ``safety`` back over a restored database that failed its check, after keeping a
    copy of what is live then (with anything written since the restore); what to raise."""
    kept: list[BackupFile] = []

    def keep_what_is_live() -> None:
        kept.append(backing_up.publish_damaged(config, problem))

    try:
        engine_restore.restore_into(
            safety.path,
            config.database_path,
            timeout=config.lock_timeout,
            while_locked=keep_what_is_live,
            passive=replicated(config.alias),
        )
    except engine.CheckFailed as exc:
        # Put back, and committed: but the data from before fails its check too (it was
        # damaged already, and the safety backup kept it as it was).
        logger.critical(
            "The live database %s failed its check after a restore; the safety backup %s was "
            "put back, and fails its check too: %s",
            config.database_path,
            safety.path,
            exc,
        )
        return RestoreFailed(
            f"{problem}. The data from before the restore was put back from {safety.name}, "
            f"and fails its check too ({exc}); what the database held just before that is "
            f"kept in {kept[0].name}"
        )
    except (engine.EngineError, BackupFailed, sqlite3.Error, OSError) as exc:
        logger.critical(
            "The live database %s failed its check after a restore and was not put back from "
            "the safety backup %s: %s",
            config.database_path,
            safety.path,
            exc,
        )
        return RestoreFailed(
            f"{problem}. It could not be put back from the safety backup {safety.name} "
            f"({exc}): the live database is the restored one",
            database_changed=True,
        )
    return RestoreFailed(
        f"{problem}. The data from before the restore was put back from {safety.name}; "
        f"what the database held just before that is kept in {kept[0].name}"
    )


def close_connections(alias: str) -> None:
    connections[alias].close()


# How long comparing the row counts may take: on a large database, with a cold cache, the
# tables not counted by then are shown as such.
COUNT_WITHIN = 2.0


@dataclass(frozen=True)
class Change:
    """How many rows of one model the live database holds, and the backup (None: not
    counted in the time allowed)."""

    model: type[Model]
    now: int | None
    in_backup: int | None


def row_changes(config: Config, backup: BackupFile) -> list[Change]:
    """The models whose row counts differ between the live database and ``backup`` (or
    were not counted within ``COUNT_WITHIN``): what a restore would take away or bring
    back, most rows lost first. ``RestoreFailed`` if either cannot be read."""
    models = {
        model._meta.db_table: model
        for model in apps.get_models()
        if router.allow_migrate_model(config.alias, model)
    }
    deadline = time.monotonic() + COUNT_WITHIN
    # Both files at once, on two cores: SQLite lets go of the GIL while it counts.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        in_backup = pool.submit(
            engine.count_rows, backup.path, models, live=False, deadline=deadline
        )
        try:
            now = (
                engine.count_rows(config.database_path, models, live=True, deadline=deadline)
                if backing_up.has_data(config.database_path)
                else dict.fromkeys(models, 0)
            )
            then = in_backup.result()
        except (engine.EngineError, sqlite3.Error, OSError) as exc:
            raise RestoreFailed(f"Cannot compare {backup.name} with the database: {exc}") from exc
    changes = [
        Change(model, now[table], then[table])
        for table, model in models.items()
        if now[table] != then[table] or now[table] is None
    ]

    def order(change: Change) -> tuple[int, int, str]:
        name = str(change.model._meta.verbose_name_plural)
        if change.now is None or change.in_backup is None:
            return (1, 0, name)
        return (0, change.in_backup - change.now, name)

    return sorted(changes, key=order)


def migration_difference(
    backup: BackupFile,
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(migrations the code has and the backup lacks, migrations only the backup has)."""
    from django.db.migrations.loader import MigrationLoader

    try:
        recorded = set(backing_up.recorded_migrations(backup.path))
    except (sqlite3.Error, OSError) as exc:
        raise RestoreFailed(f"{backup.name} cannot be restored: {exc}") from exc
    known = set(MigrationLoader(None, ignore_no_migrations=True).disk_migrations)
    return sorted(known - recorded), sorted(recorded - known)


def restore(
    config: Config,
    name_or_path: Path | str,
    progress: engine.Progress | None,
    *,
    copy_in_background: bool = False,
) -> RestoreReport:
    """Restore a listed backup onto the live database, after a safety backup of it (see
    ``services.restore``)."""
    try:
        if connections[config.alias].in_atomic_block:
            # The caller's own transaction would hold the lock the restore needs, or see the
            # old data afterwards. (Admin views that restore are not atomic for this reason.)
            raise RestoreFailed("A restore cannot run inside a transaction (atomic()).")
        with backing_up.exclusive(config, RestoreFailed):
            backup = backing_up.find(config, name_or_path)
            # integrity_check takes five times as long as anything else a restore does before
            # it writes (see bench/RESULTS.md): it runs alongside the other checks, the safety
            # backup and (in WAL mode) the copy into the live database, which commits only
            # once it has passed.
            with engine.BackgroundCheck(backup.path, full=True) as integrity:
                validate(config, backup)
                # validate() has read the live header, if there is a database.
                live_in_wal_mode = backing_up.has_data(config.database_path) and engine.is_wal(
                    engine.read_live_header(config.database_path)
                )
                missing, unknown = migration_difference(backup)

                def passed() -> None:
                    integrity.wait()
                    failure = integrity.failure()
                    if failure is not None:
                        raise RestoreFailed(
                            f"{backup.name} cannot be restored: {failure}"
                        ) from failure

                safety, warning = restore_file(
                    config, backup, progress, passed, wait_first=not live_in_wal_mode
                )
            # Recorded (and pruned) only once the restore has worked: a restore that fails
            # leaves no safety backup, costs the oldest real backup nothing, and does not
            # count as the day's backup.
            # (Without one, nothing was added: a restore never deletes a backup of its own.)
            if safety is not None:
                backing_up.record_backup(config, safety, protected={backup.path})
            if warning is None:
                # The live database now holds a backup that passed integrity_check.
                backing_up.clear_damage_alarm(config)
    except (RestoreFailed, BackupNotFound) as exc:
        logger.error("Restore into %s failed: %s", config.database_path, exc, extra=RAISED)
        if isinstance(exc, RestoreFailed):  # (not a name that lists no backup)
            signals.send(signals.backup_failed, kind="restore", reason=str(exc), using=config.alias)
            notify.failure("restore", str(exc), database=config.database_path)
        raise
    logger.info(
        "Restored %s from %s (safety backup: %s)",
        config.database_path,
        backup.name,
        safety.name if safety else "none, there was no database",
    )
    if warning is not None:
        logger.warning("%s. It was not put back: being busy is no sign of damage.", warning)
    signals.send(signals.backup_restored, backup=backup, safety_backup=safety, using=config.alias)
    if safety is not None:
        offsite.copy_new_backup(safety, config, in_background=copy_in_background)
    return RestoreReport(backup, safety, missing, unknown, warning)
