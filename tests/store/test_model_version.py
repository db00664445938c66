"""`model_version` on every stored reading (issue 18 item 3): a column added in place to an older
file (its rows keep NULL: no model is known for them), written by the writer with the version that
scored the group, served by /api/latest, the SSE reading objects (live and catch-up alike) and the
CSV export, after FD-REST's columns, which stay first and unchanged."""

from __future__ import annotations

import csv
import io
import sqlite3

from edge.fdrest import COLUMNS, FAULTS
from edge.store.schema import TABLE, open_database
from tests.harness import SSE, make_linear_model, readings_at_least
from tests.harness import model_archive as archive
from tests.harness import reading as sensor_reading

ADMIN = {"Authorization": "Bearer admin-secret"}

FDREST_TABLE = (f"CREATE TABLE sensor_data (id INTEGER PRIMARY KEY AUTOINCREMENT, time TEXT, "
                f"{', '.join(f'{c} REAL' for c in COLUMNS + FAULTS)})")


def test_an_older_file_gets_the_column_in_place_and_its_rows_keep_null(tmp_path):
    path = tmp_path / "sensor_data.db"
    with sqlite3.connect(path) as conn:
        conn.execute(FDREST_TABLE)
        conn.execute(f"INSERT INTO sensor_data (time, {', '.join(COLUMNS + FAULTS)}) VALUES "
                     f"('2023-11-08 10:00:00', {', '.join('1.0' for _ in COLUMNS + FAULTS)})")
    conn = open_database(path)
    try:
        columns = [row[1] for row in conn.execute(f"PRAGMA table_info({TABLE})")]
        assert columns[:2 + len(COLUMNS) + len(FAULTS)] == ["id", "time", *COLUMNS, *FAULTS]
        assert "model_version" in columns
        assert conn.execute(f"SELECT count(*), max(model_version) FROM {TABLE}").fetchone() == (1, None)
    finally:
        conn.close()
    open_database(path).close()  # a second start finds the column and adds nothing


def _csv(client) -> list[list[str]]:
    text = client.get("/generate_csv?start=2000-01-01&end=2100-01-01").text
    return list(csv.reader(io.StringIO(text)))


def test_each_reading_carries_the_version_that_scored_it(make_client, settings, tmp_path):
    client = make_client(admin_token="admin-secret")
    first = client.get("/api/models", headers=ADMIN).json()["active"]
    assert client.post("/send", json=sensor_reading(1, Time="2024-01-01 10:00:00")).status_code == 200
    latest = client.get("/api/latest?limit=1").json()["readings"][0]
    assert latest["model_version"] == first

    other = tmp_path / "other"
    make_linear_model(other, seed=9)
    second = client.post("/api/models", content=archive(other), headers=ADMIN).json()["version"]
    live = SSE(client, "/events", want=readings_at_least(1))
    live_arrays = SSE(client, "/events?shape=arrays", want=readings_at_least(1))
    assert client.post(f"/api/models/{second}/activate", headers=ADMIN).status_code == 200
    assert client.post("/send", json=sensor_reading(2, Time="2024-01-01 10:00:01")).status_code == 200

    newest = client.get("/api/latest?limit=2").json()["readings"]
    assert [r["model_version"] for r in newest] == [second, first]
    assert [e["data"]["model_version"] for e in live.readings()] == [second]
    assert [e["data"]["model_version"] for e in live_arrays.readings()] == [second]
    # a reconnecting page is caught up from SQLite with the same objects the live stream sent
    caught_up = SSE(client, "/events?last_event_id=0", want=readings_at_least(2)).readings()
    assert [e["data"]["model_version"] for e in caught_up] == [first, second]
    assert caught_up[1]["data"] == live.readings()[0]["data"]

    header, *rows = _csv(client)
    assert header[:2 + len(COLUMNS) + len(FAULTS) + 1] == ["id", "time", *COLUMNS, *FAULTS, "max_fault"]
    at = header.index("model_version")
    assert header[at - 2:at + 1] == ["machine", "alarms", "model_version"]  # FD-Edge's columns after FD-REST's
    assert [row[at] for row in rows] == [first, second]


def test_rows_stored_before_the_column_existed_export_an_empty_cell(make_client, settings):
    client = make_client()
    assert client.post("/send", json=sensor_reading(1, Time="2024-01-01 10:00:00")).status_code == 200
    with sqlite3.connect(settings.db_path) as conn:
        conn.execute(f"UPDATE {TABLE} SET model_version = NULL")
    assert client.get("/api/latest?limit=1").json()["readings"][0]["model_version"] is None
    header, row = _csv(client)
    assert len(row) == len(header) and row[header.index("model_version")] == ""
