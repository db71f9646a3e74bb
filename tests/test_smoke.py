from __future__ import annotations

from django_studio_backups import services
from tests.conftest import StudioDB


def test_roundtrip(studio_db: StudioDB) -> None:
    path = services.create_backup_now()
    assert path is not None
    assert path.parent == studio_db.backups
    studio_db.add_clients("Carla")
    assert services.restore_backup(path)
    assert studio_db.clients() == ["Ana", "Beto"]
    print(services.list_backups())
    print(services.get_last_backup_display())
