"""GET /generate_csv?labelled=1: labelled readings in FD-REST's data.csv format, the labels'
intensities as the fault columns (the targets `fdedge train --csv` fits)."""

from __future__ import annotations

import csv
import io
import sqlite3
from pathlib import Path

import pytest

from edge.fdrest import COLUMNS, FAULTS, FEATURES
from tests.harness import reading

DATA_CSV = Path(__file__).parents[2] / "examples" / "data.csv"


def _alarming(make_client):
    return make_client(warning_threshold=-1e9, alarm_threshold=-1e9 + 1)  # every reading raises alarms


def _stored(settings) -> dict[str, tuple]:
    with sqlite3.connect(settings.db_path) as conn:
        rows = conn.execute(f"SELECT time, machine, {', '.join(COLUMNS)}, {', '.join(FAULTS)} FROM sensor_data")
        return {f"{r[1]}@{r[0]}": r[2:] for r in rows}


def _export(client, **params) -> list[dict[str, str]]:
    r = client.get("/generate_csv", params={"labelled": "1", **params})
    assert r.status_code == 200, r.text
    assert r.text.splitlines()[0] == DATA_CSV.read_text().splitlines()[0]  # FD-REST's data.csv header, exactly
    return list(csv.DictReader(io.StringIO(r.text)))


def test_labelled_export_writes_what_the_labels_say(make_client, settings):
    client = _alarming(make_client)
    batch = [reading(k, Time=f"2024-03-01 10:00:{k:02d}", machine=m) for m in ("m1", "m2") for k in range(6)]
    assert client.post("/send", json=batch).status_code == 200
    assert client.get("/generate_csv?labelled=1").status_code == 404  # no labels yet
    alarms = {a["fault"]: a for a in client.get("/api/alarms?machine=m1").json()["alarms"]}

    def post(body: dict):
        return client.post("/api/labels", json={"by": "ana", **body})

    assert post({"alarm": alarms["fault1"]["id"], "verdict": "false_alarm"}).status_code == 201
    assert post({"alarm": alarms["fault4"]["id"], "verdict": "confirmed", "intensity": 80}).status_code == 201
    # m1's readings 3..4: a later range label wins over the alarm labels there
    assert post({"machine": "m1", "start": "2024-03-01T10:00:03Z", "end": "2024-03-01T10:00:04Z",
                 "fault": "fault6", "intensity": 55}).status_code == 201
    assert post({"machine": "m2", "start": "2024-03-01T10:00:02Z", "end": "2024-03-01T10:00:03Z",
                 "fault": "healthy"}).status_code == 201
    stored = _stored(settings)
    rows = _export(client)
    assert [r["Time"] for r in rows] == [f"2024-03-01 10:00:{k:02d}" for k in range(6)] + \
        ["2024-03-01 10:00:02", "2024-03-01 10:00:03"]  # m1's six (alarm spans), m2's two; the rest unlabelled
    for i, row in enumerate(rows):
        machine = "m1" if i < 6 else "m2"
        values = stored[f"{machine}@{row['Time']}"]
        assert [float(row[f]) for f in FEATURES] == list(values[:35])
        predicted = dict(zip(FAULTS, values[35:], strict=True))
        got = {f: float(row[f]) for f in FAULTS}
        if machine == "m2":
            assert got == dict.fromkeys(FAULTS, 0.0)
        elif row["Time"] in ("2024-03-01 10:00:03", "2024-03-01 10:00:04"):
            assert got == {**dict.fromkeys(FAULTS, 0.0), "fault6": 55.0}
        else:  # the newest alarm label: confirmed fault4 at 80, the rest as the model said
            assert got == {**predicted, "fault4": 80.0}
    assert len(_export(client, machine="m2")) == 2
    assert _export(client, start="2024-03-01", end="2024-03-01") == rows
    assert client.get("/generate_csv?labelled=1&start=2024-03-02").status_code == 404


def test_a_false_alarm_alone_zeroes_its_fault_and_keeps_the_others(make_client, settings):
    client = _alarming(make_client)
    batch = [reading(k, Time=f"2024-03-01 10:00:{k:02d}", machine="m1") for k in range(4)]
    assert client.post("/send", json=batch).status_code == 200
    alarm = next(a for a in client.get("/api/alarms").json()["alarms"] if a["fault"] == "fault2")
    body = {"alarm": alarm["id"], "verdict": "false_alarm", "by": "a"}
    assert client.post("/api/labels", json=body).status_code == 201
    stored = _stored(settings)
    for row in _export(client):
        predicted = dict(zip(FAULTS, stored[f"m1@{row['Time']}"][35:], strict=True))
        assert {f: float(row[f]) for f in FAULTS} == {**predicted, "fault2": 0.0}


@pytest.mark.parametrize("query,field", [("labelled=2", "labelled"), ("labelled=1&threshold=3", "threshold"),
                                         ("labelled=1&start=march", "start")])
def test_labelled_export_refuses_bad_parameters_by_name(client, query, field):
    r = client.get(f"/generate_csv?{query}")
    assert r.status_code == 400 and r.json()["field"] == field


def test_a_reading_with_a_missing_value_is_left_out(make_client, settings):
    client = make_client()
    batch = [reading(k, Time=f"2024-03-01 10:00:{k:02d}", machine="m1") for k in range(3)]
    assert client.post("/send", json=batch).status_code == 200
    with sqlite3.connect(settings.db_path) as conn:  # as an FD-REST file or another program may hold it
        conn.execute(f"UPDATE sensor_data SET {COLUMNS[1]} = NULL WHERE id = 2")
    body = {"machine": "m1", "start": "2024-03-01T10:00:00Z", "end": "2024-03-01T10:00:02Z", "fault": "healthy",
            "by": "a"}
    assert client.post("/api/labels", json=body).status_code == 201
    assert [r["Time"] for r in _export(client)] == ["2024-03-01 10:00:00", "2024-03-01 10:00:02"]
