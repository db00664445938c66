"""The quality verdict end to end with the bundled model (it has training statistics): stored with
each reading, served by /api/latest, the SSE stream (both shapes, live and caught up), the CSV
export and the X-FDEdge-Quality header of /send, whose body keeps FD-REST's shape."""

from __future__ import annotations

import csv
import io
import sqlite3
from pathlib import Path

import pytest

from edge.fdrest import COLUMNS, FAULTS, FEATURES
from edge.scoring.quality import STUCK_READINGS
from simulator.machine import VirtualMachine
from tests.harness import SSE, readings_at_least

MODEL_DIR = Path(__file__).resolve().parents[2] / "models" / "default"


@pytest.fixture
def bundled(make_client):
    return make_client(model_dir=MODEL_DIR)


def bodies(n: int, machine: str = "pump-1", scenario: str = "healthy") -> list[dict]:
    vm = VirtualMachine(4, machine, profile="pump-3000", scenario=scenario)
    return [r.to_fdrest_json(machine=True) for r in vm.run(n, 2.0)]


def test_ok_readings_answer_ok_and_keep_fdrests_body(bundled):
    r = bundled.post("/send", json=bodies(1)[0])
    assert r.status_code == 200 and r.headers["x-fdedge-quality"] == "ok"
    body = r.json()
    assert isinstance(body, list) and len(body) == 1 and list(body[0]) == list(FAULTS)
    latest = bundled.get("/api/latest?limit=1").json()["readings"][0]
    assert latest["quality"]["status"] == "ok" and latest["quality"]["reasons"] == []
    assert 0 < latest["quality"]["score"] < 1


def test_a_stuck_sensor_is_suspect_everywhere(bundled, settings):
    sent = bodies(STUCK_READINGS + 2)
    for body in sent:
        body["Temperature"] = 41.3
    headers = [bundled.post("/send", json=body).headers["x-fdedge-quality"] for body in sent]
    assert headers[:STUCK_READINGS - 1] == ["ok"] * (STUCK_READINGS - 1)
    assert headers[STUCK_READINGS - 1].startswith("suspect; score=")
    assert headers[STUCK_READINGS - 1].endswith("; reasons=Temperature:stuck")
    latest = bundled.get("/api/latest?limit=1").json()["readings"][0]
    assert latest["quality"]["status"] == "suspect"
    assert latest["quality"]["reasons"] == [{"feature": "Temperature", "kind": "stuck"}]
    with sqlite3.connect(settings.db_path) as conn:
        stored = conn.execute("SELECT quality_status, quality_score, quality_reasons FROM sensor_data "
                              "ORDER BY id").fetchall()
    assert [s for s, _, _ in stored] == [0] * (STUCK_READINGS - 1) + [1] * 3
    assert stored[0][2] is None and stored[-1][2] == "Temperature:stuck"
    assert all(isinstance(score, float) for _, score, _ in stored)

    day = sent[0]["Time"][:10]
    text = bundled.get(f"/generate_csv?start={day}&end={day}").text
    table = list(csv.reader(io.StringIO(text)))
    # FD-REST's columns first and unchanged, FD-Edge's machine, alarms and model version, then the quality
    assert table[0] == ["id", "time", *COLUMNS, *FAULTS, "max_fault", "machine", "alarms", "model_version",
                        "quality", "quality_score", "quality_reasons"]
    assert [row[-3] for row in table[1:]] == ["ok"] * (STUCK_READINGS - 1) + ["suspect"] * 3
    assert table[1][-1] == "" and table[-1][-1] == "Temperature:stuck"
    assert float(table[-1][-2]) == stored[-1][1]


def test_a_batch_header_is_its_worst_reading(bundled):
    batch = bodies(4)
    batch[2]["KURTOSIS_Horizontal"] = 90.0  # ~50 σ
    r = bundled.post("/send", json=batch)
    assert r.status_code == 200 and len(r.json()) == 4
    quality = r.headers["x-fdedge-quality"]
    assert quality.startswith("suspect; score=") and "KURTOSIS_Horizontal:out_of_range" in quality
    shown = [x["quality"] for x in bundled.get("/api/latest?limit=4").json()["readings"]][::-1]
    assert [q["status"] for q in shown] == ["ok", "ok", "suspect", "suspect"]
    # the step back from the spike is as implausible as the step to it
    assert shown[3]["reasons"] == [{"feature": "KURTOSIS_Horizontal", "kind": "jump"}]


def test_invalid_values_are_stored_and_flagged_invalid(bundled):
    body = bodies(1)[0]
    body["VIBRATION_ACC_Axial"] = -0.5
    r = bundled.post("/send", json=body)
    assert r.status_code == 200
    assert r.headers["x-fdedge-quality"].startswith("invalid; score=")
    assert "VIBRATION_ACC_Axial:invalid" in r.headers["x-fdedge-quality"]


@pytest.mark.parametrize("shape", ["objects", "arrays"])
def test_the_stream_carries_quality_live_and_caught_up(bundled, shape):
    sent = bodies(3)
    sent[2]["PEAK_Axial"] = 40.0
    assert bundled.post("/send", json=sent[0]).status_code == 200
    caught_up = SSE(bundled, f"/events?shape={shape}&last_event_id=0", want=readings_at_least(3))
    for body in sent[1:]:
        assert bundled.post("/send", json=body).status_code == 200
    events = caught_up.readings()
    statuses = [e["data"]["quality"]["status"] for e in events[:3]]
    assert statuses == ["ok", "ok", "suspect"]
    assert {"feature": "PEAK_Axial", "kind": "out_of_range"} in events[2]["data"]["quality"]["reasons"]
    again = SSE(bundled, f"/events?shape={shape}&last_event_id=0", want=readings_at_least(3)).readings()
    assert [e["data"]["quality"] for e in again[:3]] == [e["data"]["quality"] for e in events[:3]]


def test_without_training_statistics_quality_is_unknown(client):
    """The linear test model's manifest has no training_stats."""
    r = client.post("/send", json={name: 1.0 for name in FEATURES})
    assert r.status_code == 200 and r.headers["x-fdedge-quality"] == "unknown"
    assert client.get("/api/latest?limit=1").json()["readings"][0]["quality"] == {
        "status": "unknown", "score": None, "reasons": []}


def test_an_older_database_gains_the_columns_and_its_rows_are_unknown(tmp_path, make_client):
    db = tmp_path / "sensor_data.db"
    with sqlite3.connect(db) as conn:  # FD-REST's own DDL
        conn.execute("CREATE TABLE sensor_data (id INTEGER PRIMARY KEY AUTOINCREMENT, time TEXT, "
                     + ", ".join(f"{c} REAL" for c in (*COLUMNS, *FAULTS)) + ")")
        conn.execute(f"INSERT INTO sensor_data (time, {', '.join(COLUMNS)}, {', '.join(FAULTS)}) VALUES "
                     f"(?, {', '.join('?' * 43)})", ("2023-11-06 15:00:00", *range(35), *range(8)))
    with make_client(db=db, model_dir=MODEL_DIR) as client:
        assert client.post("/send", json=bodies(1)[0]).headers["x-fdedge-quality"] == "ok"
        shown = [x["quality"]["status"] for x in client.get("/api/latest?limit=5").json()["readings"]]
        assert shown == ["ok", "unknown"]
    with sqlite3.connect(db) as conn:
        columns = [row[1] for row in conn.execute("PRAGMA table_info(sensor_data)")]
    assert columns[-3:] == ["quality_status", "quality_score", "quality_reasons"]


def test_the_machine_state_is_suspect_data_while_its_newest_reading_is(make_client):
    from edge.plant.latest import SUSPECT
    bundled = make_client(model_dir=MODEL_DIR, machine_metrics=True)
    app = bundled.app.state.appliance
    sent = bodies(2, machine="fan-9")
    sent[0]["Rotation Speed"] = 9000.0
    assert bundled.post("/send", json=sent[0]).headers["x-fdedge-quality"].startswith("suspect")
    latest = app.latest
    assert latest is not None
    seen = latest.seen("fan-9")
    assert seen.newest is not None and seen.newest.suspect and latest.state(seen) == SUSPECT
    assert bundled.post("/send", json=sent[1]).headers["x-fdedge-quality"] != "ok"  # the step back is a jump
    assert bundled.post("/send", json=bodies(3, machine="fan-9")[2]).status_code == 200
    assert latest.state(latest.seen("fan-9")) != SUSPECT


def test_a_stuck_sensor_raises_a_quality_alarm_not_a_fault_alarm_and_ok_data_clears_it(bundled):
    """Through the app: the writer hands the verdicts to the alarm engine in its transaction."""
    sent = bodies(STUCK_READINGS + 5, machine="press-3")
    for body in sent[:STUCK_READINGS + 2]:
        body["Temperature"] = 41.3
    for body in sent[:STUCK_READINGS + 2]:
        assert bundled.post("/send", json=body).status_code == 200
    (alarm,) = bundled.get("/api/alarms?state=active&kind=quality").json()["alarms"]
    assert alarm["machine"] == "press-3" and alarm["fault"] == "quality"
    assert alarm["feature"] == "Temperature" and alarm["reason"] == "stuck"
    for body in sent[STUCK_READINGS + 2:-1]:  # the temperature moves again: two ok readings...
        assert bundled.post("/send", json=body).headers["x-fdedge-quality"] == "ok"
    assert bundled.get("/api/alarms?state=active&kind=quality").json()["alarms"]  # ... of the 3 it takes
    assert bundled.post("/send", json=sent[-1]).headers["x-fdedge-quality"] == "ok"
    assert bundled.get("/api/alarms?state=active&kind=quality").json()["alarms"] == []
    (cleared,) = bundled.get("/api/alarms?kind=quality").json()["alarms"]
    assert cleared["state"] == "cleared"


def test_a_replayed_request_answers_the_verdict_stored_the_first_time(bundled):
    body = bodies(1)[0]
    body["Rotation Speed"] = 9000.0
    first = bundled.post("/send", json=body, headers={"Idempotency-Key": "q-1"})
    again = bundled.post("/send", json=body, headers={"Idempotency-Key": "q-1"})
    assert again.headers["x-fdedge-replayed"] == "true"
    assert first.headers["x-fdedge-quality"] == again.headers["x-fdedge-quality"]
    assert first.headers["x-fdedge-quality"].startswith("suspect; score=")
    assert again.json() == first.json()


def test_a_failing_check_stores_the_readings_as_unknown(bundled, monkeypatch, caplog):
    writer = bundled.app.state.appliance.writer

    def broken(x, machines):
        raise RuntimeError("a bug in a check")

    monkeypatch.setattr(writer.quality, "evaluate", broken)
    r = bundled.post("/send", json=bodies(1)[0])
    assert r.status_code == 200 and r.headers["x-fdedge-quality"] == "unknown"
    assert "quality verdict failed" in caplog.text
