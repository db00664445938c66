"""The plant's data is not world-readable: a new data directory is 0700, the database, its WAL and
SHM files and the marker 0600."""

from __future__ import annotations

import stat

from tests.harness import reading

REPORT_SECTION = "hostile"


def test_a_new_data_directory_and_database_are_private(make_client, settings, report):
    client = make_client()
    assert client.post("/send", json=reading(1)).status_code == 200
    data = settings.db_path.parent
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in [data, *data.iterdir()]}
    assert modes[data.name] == 0o700, modes
    for name in ("sensor_data.db", "sensor_data.db-wal", "sensor_data.db-shm", "sensor_data.db.fdedge"):
        assert modes[name] == 0o600, (name, oct(modes[name]))
    report.put("hostile", "file_modes", "a new data directory is 0700; database, WAL, SHM and marker 0600")


def test_an_existing_database_keeps_its_mode(make_client, settings):
    settings.db_path.parent.mkdir(mode=0o750)
    make_client().close()
    settings.db_path.chmod(0o640)
    make_client().close()
    assert stat.S_IMODE(settings.db_path.stat().st_mode) == 0o640
    assert stat.S_IMODE(settings.db_path.parent.stat().st_mode) == 0o750
