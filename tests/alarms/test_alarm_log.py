"""The alarm log: /api/alarms filtered by time and acknowledgement, and its CSV export
(/api/alarms.csv), on the real app over alarms the engine raised in the real database."""

from __future__ import annotations

import csv
import io

import pytest

from tests.alarms.test_alarms import Bench, readings


@pytest.fixture
def logged(settings, make_client):
    """Alarms on two machines, raised on 1 and 2 March 2024; one acknowledged, one cleared."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    bench = Bench(settings.db_path)
    day = 86400.0
    bench.feed(readings([40, 40, 40, 0, 0, 0], "m1", fault=2))  # raised and cleared, 1 March
    bench.feed(readings([70, 70, 70], "m2", fault=5, start=day))  # active, 2 March
    bench.feed(readings([40, 40, 40], "=cmd|' /C calc'!A0", fault=1, start=day + 60))  # a hostile name
    bench.conn.close()
    with make_client() as client:
        assert client.post("/api/alarms/2/ack", json={"by": "ana", "note": "bearing, +ordered"}).status_code == 200
        yield client


def test_the_log_filters_by_time_machine_fault_state_and_acknowledgement(logged):
    client = logged
    every = client.get("/api/alarms").json()["alarms"]
    assert [a["id"] for a in every] == [3, 2, 1]
    first_day = client.get("/api/alarms", params={"start": "2024-03-01T00:00:00Z", "end": "2024-03-02T00:00:00Z"})
    assert [a["id"] for a in first_day.json()["alarms"]] == [1]
    since = client.get("/api/alarms", params={"start": "2024-03-02T00:00:00Z"}).json()["alarms"]
    assert [a["id"] for a in since] == [3, 2]
    assert [a["id"] for a in client.get("/api/alarms", params={"acked": "true"}).json()["alarms"]] == [2]
    assert [a["id"] for a in client.get("/api/alarms", params={"acked": "false"}).json()["alarms"]] == [3, 1]
    both = client.get("/api/alarms", params={"acked": "false", "state": "active", "fault": "fault1"}).json()
    assert [a["id"] for a in both["alarms"]] == [3]
    for query in ({"acked": "maybe"}, {"start": "yesterday"}, {"start": "2024-03-02", "end": "2024-03-01"}):
        bad = client.get("/api/alarms", params=query)
        assert bad.status_code == 400 and bad.json()["field"] in ("acked", "start", "end"), (query, bad.text)


def test_the_csv_has_the_same_alarms_with_their_zone_and_neutralised_cells(logged):
    client = logged
    r = client.get("/api/alarms.csv", params={"start": "2024-03-02T00:00:00Z"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert 'filename="fdedge-alarms' in r.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert [row["id"] for row in rows] == ["3", "2"]
    acked = rows[1]
    assert acked["machine"] == "m2" and acked["fault"] == "fault5" and acked["severity"] == "alarm"
    assert acked["raised_at"].endswith("Z") and acked["acked_by"] == "ana"
    assert acked["ack_note"] == "bearing, +ordered"  # a comma is quoted, a + inside is left alone
    assert rows[0]["machine"] == "'=cmd|' /C calc'!A0"  # neutralised: a spreadsheet shows it as text
    assert list(csv.DictReader(io.StringIO(client.get("/api/alarms.csv", params={"acked": "true"}).text)))[0]["id"] == "2"
    assert client.get("/api/alarms.csv", params={"state": "nope"}).status_code == 400
