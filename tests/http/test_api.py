"""API behaviour through Starlette's test client, against a temporary SQLite file."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from datetime import UTC

import numpy as np
import pytest

from edge.fdrest import COLUMNS, FAULTS, FEATURES
from tests.harness import SSE, first_event, linear_expected, reading, readings_at_least
from tests.reliability_helpers import metric_value, wait_for


def rows(settings) -> int:
    with sqlite3.connect(settings.db_path) as conn:
        return conn.execute("SELECT count(*) FROM sensor_data").fetchone()[0]


def test_single_reading_answers_fdrest_shape_with_the_models_prediction(client, linear_model):
    body = reading(1, Time="2023-11-06 15:00:00")
    r = client.post("/send", json=body)
    assert r.status_code == 200
    answer = r.json()
    assert isinstance(answer, list) and len(answer) == 1 and list(answer[0]) == list(FAULTS)
    expected = linear_expected(linear_model[1], np.array([[body[k] for k in FEATURES]]))[0]
    np.testing.assert_allclose([answer[0][f] for f in FAULTS], expected, rtol=1e-5, atol=1e-4)


def test_reading_and_prediction_are_stored_under_fdrest_columns(client, settings):
    body = reading(2, Time="2023-11-06T16:00:00+01:00", machine="pump-7")
    faults = client.post("/send", json=body).json()[0]
    with sqlite3.connect(settings.db_path) as conn:
        conn.row_factory = sqlite3.Row
        row = conn.execute("SELECT * FROM sensor_data").fetchone()
    assert row["time"] == "2023-11-06 15:00:00"  # converted to UTC, FD-REST's format
    assert row["machine"] == "pump-7"
    for name, column in zip(FEATURES, COLUMNS):
        assert row[column] == body[name]
    for f in FAULTS:
        assert row[f] == pytest.approx(faults[f])


def test_missing_time_is_server_receive_time_in_utc(client):
    from datetime import datetime
    before = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
    client.post("/send", json=reading(3))
    stamp = client.get("/history?metric=temperature").json()["timestamps"][0]
    assert datetime.fromisoformat(stamp) >= before


@pytest.mark.parametrize("content_type,encode", [
    ("application/json", lambda rs: json.dumps(rs)),
    ("application/x-ndjson", lambda rs: "\n".join(json.dumps(r) for r in rs) + "\n"),
    ("text/csv", lambda rs: _csv(rs)),
])
def test_batches_in_every_format_are_scored_in_order(client, settings, linear_model, content_type, encode):
    readings = [reading(i, Time=f"2023-11-06 15:00:{i:02d}") for i in range(25)]
    r = client.post("/send", content=encode(readings), headers={"Content-Type": content_type})
    assert r.status_code == 200, r.text
    x = np.array([[rd[k] for k in FEATURES] for rd in readings])
    got = np.array([[row[f] for f in FAULTS] for row in r.json()])
    np.testing.assert_allclose(got, linear_expected(linear_model[1], x), rtol=1e-5, atol=1e-4)
    assert rows(settings) == 25


def _csv(readings: list[dict]) -> str:
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(["Time", *FEATURES, *FAULTS])
    for rd in readings:
        w.writerow([rd["Time"], *[rd[k] for k in FEATURES], *([0.5] * 8)])
    return out.getvalue()


def test_one_bad_row_stores_nothing_and_names_row_and_field(client, settings):
    batch = [reading(i) for i in range(5)]
    batch[3]["Temperature"] = "hot"
    r = client.post("/send", json=batch)
    assert r.status_code == 422
    assert r.json()["row"] == 3 and r.json()["field"] == "Temperature"
    assert rows(settings) == 0


@pytest.mark.parametrize("mutate,field", [
    (lambda r: r.pop("Level"), "Level"),
    (lambda r: r.update({"Level": None}), "Level"),
    (lambda r: r.update({"Level": True}), "Level"),
    (lambda r: r.update({"Level": [1]}), "Level"),
    (lambda r: r.update({"Level": "1e999"}), "Level"),
    (lambda r: r.update({"Time": "yesterday"}), "Time"),
    (lambda r: r.update({"machine": ""}), "machine"),
    (lambda r: r.update({"machine": "x" * 65}), "machine"),
])
def test_invalid_readings_get_422_naming_the_field(client, settings, mutate, field):
    body = reading(4)
    mutate(body)
    r = client.post("/send", json=body)
    assert r.status_code == 422 and r.json()["field"] == field, r.text
    assert "traceback" not in r.text.lower()
    assert rows(settings) == 0


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_non_finite_numbers_are_refused(client, settings, literal):
    text = json.dumps(reading(5)).replace('"Level": ' + json.dumps(reading(5)["Level"]), '"Level": ' + literal)
    r = client.post("/send", content=text, headers={"Content-Type": "application/json"})
    assert r.status_code == 422 and r.json()["field"] == "Level"
    assert rows(settings) == 0


def test_numeric_strings_and_integers_are_accepted_as_fdrest_did(client):
    body = {k: str(v) for k, v in reading(6).items()}
    body["Rotation Speed"] = 3000
    assert client.post("/send", json=body).status_code == 200


def test_unknown_keys_are_ignored_and_reported(client):
    r = client.post("/send", json=reading(7, colour="blue", fault0=3))
    assert r.status_code == 200
    assert r.headers["x-fdedge-ignored-keys"] == "colour,fault0"


@pytest.mark.parametrize("body,ctype,status,code", [
    (b"{not json", "application/json", 400, "invalid_json"),
    (b"\xff\xfe\x00", "application/json", 400, "invalid_json"),
    (b"[" * 5000, "application/json", 400, "invalid_json"),  # nested too deeply
    (b"[" * 100000, "application/json", 413, "payload_too_large"),  # more containers than readings allowed
    (b"[]", "application/json", 400, "bad_request"),
    (b"42", "application/json", 422, "invalid_reading"),
    (b"a=1", "application/x-www-form-urlencoded", 415, "unsupported_media_type"),
    (b"Time,Level\n1,2\n", "text/csv", 422, "invalid_reading"),
])
def test_malformed_bodies_get_clear_json_errors(client, settings, body, ctype, status, code):
    r = client.post("/send", content=body, headers={"Content-Type": ctype})
    assert r.status_code == status, r.text
    assert r.json()["error"] == code and r.json()["message"]
    assert rows(settings) == 0


def test_body_over_the_limit_is_413(make_client):
    with make_client(max_body_bytes=4096, max_batch_rows=3) as client:
        r = client.post("/send", json=[reading(i) for i in range(10)])
        assert r.status_code == 413
        r = client.post("/send", json=[reading(0)] * 4)
        assert r.status_code == 413 and "4 readings" in r.json()["message"]


def test_idempotency_key_stores_a_batch_once(client, settings):
    batch = [reading(i) for i in range(3)]
    first = client.post("/send", json=batch, headers={"Idempotency-Key": "sensor-1:42"})
    again = client.post("/send", json=batch, headers={"Idempotency-Key": "sensor-1:42"})
    assert first.status_code == again.status_code == 200
    assert again.headers["x-fdedge-replayed"] == "true"
    assert again.json() == first.json()
    assert rows(settings) == 3


def test_history_is_fdrest_shaped_oldest_first_and_filters_machines(client):
    for i in range(5):
        client.post("/send", json=reading(i, Time=f"2023-11-06 15:00:0{i}", Temperature=float(i),
                                          machine="a" if i % 2 else "b"))
    h = client.get("/history?metric=temperature&limit=3").json()
    assert h == {"timestamps": ["2023-11-06 15:00:02", "2023-11-06 15:00:03", "2023-11-06 15:00:04"],
                 "values": [2.0, 3.0, 4.0]}
    assert client.get("/history?metric=temperature&machine=a").json()["values"] == [1.0, 3.0]


@pytest.mark.parametrize("metric", ["sqlite_version()", "time; DROP TABLE sensor_data", "id", "", None])
def test_history_rejects_anything_but_known_columns(client, metric):
    url = "/history" if metric is None else f"/history?metric={metric}"
    r = client.get(url)
    assert r.status_code == 400
    assert "temperature" in r.json()["valid"]
    assert "3." not in json.dumps(r.json()["message"])  # no sqlite version leaks


def test_generate_csv_end_date_is_inclusive_and_threshold_filters(client):
    times = ["2023-11-07 23:59:59", "2023-11-08 00:00:00", "2023-11-08 18:30:00", "2023-11-09 00:00:00"]
    answers = [client.post("/send", json=reading(i, Time=t)).json()[0] for i, t in enumerate(times)]
    r = client.get("/generate_csv?start=2023-11-08&end=2023-11-08")
    assert r.status_code == 200 and r.headers["content-disposition"].startswith("attachment")
    got = list(csv.DictReader(io.StringIO(r.text)))
    assert [row["time"] for row in got] == times[1:3]
    assert set(got[0]) >= {"id", "time", "max_fault", "machine", *COLUMNS, *FAULTS}
    threshold = max(answers[2].values())
    got = list(csv.DictReader(io.StringIO(client.get(
        f"/generate_csv?start=2023-11-07&end=2023-11-09&threshold={threshold}").text)))
    assert all(float(row["max_fault"]) >= threshold for row in got) and "2023-11-08 18:30:00" in [r["time"] for r in got]
    assert client.get("/api/count?start=2023-11-08&end=2023-11-08").json() == {"count": 2}


@pytest.mark.parametrize("query,status", [
    ("start=2020-01-01&end=2020-01-02", 404),
    ("start=2023-11-08&end=2023-11-08&threshold=abc", 400),
    ("start=2023-11-08&end=2023-11-08&threshold=nan", 400),
    ("start=nope&end=2023-11-08", 400),
    ("end=2023-11-08", 400),
    ("start=2023-11-09&end=2023-11-08", 400),
    ("start=2023-11-08&end=2023-11-08&fault=fault9", 400),
])
def test_generate_csv_errors_follow_fdrest(client, query, status):
    client.post("/send", json=reading(0, Time="2023-11-08 10:00:00"))
    r = client.get(f"/generate_csv?{query}")
    assert r.status_code == status and r.json()["message"]


def test_exported_cells_cannot_run_as_spreadsheet_formulas(client):
    client.post("/send", json=reading(0, Time="2023-11-08 10:00:00", machine="=HYPERLINK(\"http://x\")"))
    text = client.get("/generate_csv?start=2023-11-08&end=2023-11-08").text
    row = next(csv.DictReader(io.StringIO(text)))
    assert row["machine"].startswith("'=")
    assert float(row["level"]) == reading(0)["Level"]  # negative numbers stay numbers


def test_series_downsamples_with_fault_maxima(client):
    batch = [reading(i, Time=f"2023-11-08 10:{i // 60:02d}:{i % 60:02d}") for i in range(600)]
    answers = client.post("/send", json=batch).json()
    r = client.get("/api/series?start=2023-11-08T10:00:00Z&end=2023-11-08T10:10:00Z&metrics=temperature,fault2&points=60")
    s = r.json()
    assert r.status_code == 200 and len(s["time"]) == 60
    assert max(s["series"]["fault2"]) == pytest.approx(max(a["fault2"] for a in answers))
    assert client.get("/api/series?metrics=nope").status_code == 400


def test_model_health_metrics_and_openapi(client):
    info = client.get("/api/model").json()
    assert info["features"] and len(info["catalogue"]) == 8 and info["thresholds"] == {"warning": 30.0, "alarm": 60.0}
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json()["status"] == "ready"
    client.post("/send", json=reading(0))
    client.post("/send", content=b"{", headers={"Content-Type": "application/json"})
    text = client.get("/metrics").text
    assert "fdedge_readings_ingested_total 1.0" in text
    assert 'fdedge_readings_rejected_total{reason="invalid_json"} 1.0' in text
    assert "fdedge_inference_seconds_bucket" in text and "fdedge_sse_clients" in text and "fdedge_database_bytes" in text
    spec = client.get("/openapi.json").json()
    assert "/send" in spec["paths"] and spec["components"]["schemas"]["Reading"]["required"] == list(FEATURES)


def test_unknown_paths_and_methods_answer_json(client):
    assert client.get("/nope").json()["error"] == "not_found"
    r = client.get("/send")
    assert r.status_code == 405 and r.json()["error"] == "method_not_allowed"


def test_tokens_guard_ingest_and_reads(make_client):
    with make_client(token="in-secret", read_token="read-secret") as client:
        assert client.post("/send", json=reading(0)).status_code == 401
        assert client.post("/send", json=reading(0), headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert client.post("/send", json=reading(0), headers={"Authorization": "Bearer read-secret"}).status_code == 403
        assert client.post("/send", json=reading(0), headers={"Authorization": "Bearer in-secret"}).status_code == 200
        for path in ("/history?metric=temperature", "/generate_csv?start=2020-01-01&end=2030-01-01",
                     "/events", "/api/latest", "/api/series", "/metrics"):
            assert client.get(path).status_code == 401, path
            if path == "/events":  # endless: opened, its first frame read, then closed
                stream = SSE(client, path, {"Authorization": "Bearer read-secret"}, want=first_event, timeout=5)
                stream.result()
                assert stream.status == 200 and stream.events[0]["event"] == "hello", (path, stream.status, stream.body)
            else:
                assert client.get(path, headers={"Authorization": "Bearer read-secret"}).status_code == 200, path
        client.cookies.set("fdedge_token", "read-secret")
        assert client.get("/api/latest").status_code == 200
        client.cookies.clear()
        for path in ("/healthz", "/readyz", "/api/model", "/openapi.json"):
            assert client.get(path).status_code == 200, path


def test_existing_fdrest_database_is_migrated_in_place(tmp_path, make_client):
    db = tmp_path / "sensor_data.db"
    with sqlite3.connect(db) as conn:  # FD-REST's own DDL
        conn.execute("CREATE TABLE sensor_data (id INTEGER PRIMARY KEY AUTOINCREMENT, time TEXT, "
                     + ", ".join(f"{c} REAL" for c in (*COLUMNS, *FAULTS)) + ")")
        conn.execute(f"INSERT INTO sensor_data (time, {', '.join(COLUMNS)}, {', '.join(FAULTS)}) VALUES "
                     f"(?, {', '.join('?' * 43)})", ("2023-11-06 15:00:00", *range(35), *range(8)))
    with make_client(db=db) as client:
        assert client.get("/history?metric=temperature").json()["values"] == [1.0]
        assert client.post("/send", json=reading(0)).status_code == 200
        assert client.get("/api/latest?limit=5").json()["readings"][1]["machine"] == "default"
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT count(*) FROM sensor_data").fetchone()[0] == 2


def test_locked_database_answers_503_and_recovers(client, settings):
    holder = sqlite3.connect(settings.db_path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        r = client.post("/send", json=reading(0))
        assert r.status_code == 503 and r.json()["reason"] == "database_locked"
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert client.post("/send", json=reading(0)).status_code == 200
    assert rows(settings) == 1


def test_retention_keeps_the_newest_rows(make_client):
    import asyncio

    from edge.store import retention
    with make_client(retention_rows=50, retention_days=1) as client:
        client.post("/send", json=[reading(i, Time="2020-01-01 00:00:00") for i in range(10)])
        client.post("/send", json=[reading(i) for i in range(100)])
        app = client.app.state.appliance
        asyncio.run_coroutine_threadsafe(retention.prune_once(app.writer, app.settings, app.metrics), app.loop).result(10)
        # counted once, whichever pass deleted them (the background one may have done it first)
        wait_for(lambda: app.metrics.registry.get_sample_value("fdedge_readings_pruned_total") == 60, 10,
                 "60 pruned readings counted")
        assert metric_value(client.get("/metrics").text, "fdedge_readings_pruned_total") == 60
        assert metric_value(client.get("/metrics").text, "fdedge_retention_passes_total") >= 1
        ids = [r["id"] for r in client.get("/api/latest?limit=1000").json()["readings"]]
        assert len(ids) == 50 and min(ids) == 61


def test_full_database_answers_503_and_keeps_serving(make_client, settings):
    with make_client(max_db_mb=0.3) as client:
        stored = 0
        for i in range(200):
            r = client.post("/send", json=[reading(i) for _ in range(50)])
            if r.status_code != 200:
                break
            stored += 50
        assert r.status_code == 503 and r.json()["reason"] == "disk_full", r.text
        assert rows(settings) == stored  # the refused batch left nothing behind
        assert client.get("/healthz").status_code == 200
        assert client.get("/api/latest?limit=1").status_code == 200


def test_retention_by_age_ignores_a_clock_far_ahead_of_the_data(make_client):
    import asyncio

    from edge.store import retention
    with make_client(retention_days=1) as client:
        client.post("/send", json=[reading(0, Time="2020-01-01 00:00:00"), reading(1, Time="2020-01-03 00:00:00")])
        app = client.app.state.appliance
        asyncio.run_coroutine_threadsafe(retention.prune_once(app.writer, app.settings, app.metrics), app.loop).result(10)
        # measured from the newest reading (2020-01-03), not from today
        assert client.get("/history?metric=temperature").json()["timestamps"] == ["2020-01-03 00:00:00"]


def test_absurd_finite_values_are_refused_alone_never_stored_as_nan(client, settings):
    good = reading(1)
    absurd = reading(2, **{name: 1e308 for name in ("Rotation Speed", "Temperature", "Level")})
    r = client.post("/send", json=absurd)
    if r.status_code == 200:  # the model may saturate instead of overflowing: then it must be finite
        assert all(v is not None for v in r.json()[0].values())
    else:
        assert r.status_code == 422 and "range" in r.json()["message"]
    assert client.post("/send", json=good).status_code == 200
    with sqlite3.connect(settings.db_path) as conn:
        assert conn.execute("SELECT count(*) FROM sensor_data WHERE fault0 IS NULL OR fault0 != fault0").fetchone()[0] == 0


def test_an_unexpected_writer_error_costs_one_request_not_the_writer(client, settings, monkeypatch):
    app = client.app.state.appliance

    def bug(group):
        raise KeyError("a bug in the writer")

    monkeypatch.setattr(app.writer, "_known_keys", bug)
    r = client.post("/send", json=reading(0))
    assert r.status_code == 503 and r.json()["reason"] == "internal_error"
    monkeypatch.undo()
    assert client.post("/send", json=reading(1)).status_code == 200
    assert app.writer.alive and rows(settings) == 1


# -- GET /events: the event shapes ---------------------------------------------------------------

# SSE (tests/harness.py) reads GET /events on the test client's own event loop.


def test_events_arrays_shape_carries_the_stored_values_named_by_hello(client):
    from sse_starlette.event import ServerSentEvent

    client.post("/send", json=reading(99, Time="2023-11-06 14:59:59"))  # before connecting: not live
    arrays = SSE(client, "/events?shape=arrays", want=readings_at_least(4))
    objects = SSE(client, "/events", want=readings_at_least(4))  # the default shape, unchanged
    for stream in (arrays, objects):
        hello = stream.events[0]
        assert hello["event"] == "hello" and hello["id"] == "1"
        assert hello["data"]["last_id"] == 1 and isinstance(hello["data"]["database_id"], str)
        assert hello["data"]["features"] == list(FEATURES) and hello["data"]["faults"] == list(FAULTS)
    body = [reading(i, Time=f"2023-11-06 15:00:0{i}", machine=f"m{i % 2}") for i in range(4)]
    assert client.post("/send", json=body).status_code == 200

    got = arrays.readings()
    assert [e["id"] for e in got] == ["2", "3", "4", "5"]
    for e in got:
        assert list(e["data"]) == ["id", "time", "machine", "x", "y", "model_version", "quality"]
        assert len(e["data"]["x"]) == 35 and len(e["data"]["y"]) == 8
    assert [e["data"]["time"] for e in got] == [f"2023-11-06T15:00:0{i}Z" for i in range(4)]
    assert [e["data"]["machine"] for e in got] == ["m0", "m1", "m0", "m1"]
    # exactly the stored floats: /history reads them back from the database
    for k, column in enumerate(COLUMNS + FAULTS):
        stored = client.get(f"/history?metric={column}&limit=4").json()["values"]
        live = [e["data"]["x"][k] if k < 35 else e["data"]["y"][k - 35] for e in got]
        assert live == stored, column
    # the objects shape carries the same values under their names, framed as sse_starlette frames
    latest = {r["id"]: r for r in client.get("/api/latest?limit=4").json()["readings"]}
    for a, o in zip(got, objects.readings()):
        assert o["data"] == latest[a["data"]["id"]]
        assert o["data"]["features"] == dict(zip(hello["data"]["features"], a["data"]["x"]))
        assert o["data"]["faults"] == dict(zip(hello["data"]["faults"], a["data"]["y"]))
    first = json.dumps(objects.readings()[0]["data"], separators=(",", ":"))
    assert ServerSentEvent(data=first, event="reading", id="2").encode() in objects.body


@pytest.mark.parametrize("resume", ["header", "query"])
def test_events_arrays_shape_catches_up_from_last_event_id_with_the_machine_filter(client, resume):
    body = [reading(i, Time=f"2023-11-06 15:00:0{i}", machine=f"m{i % 2}") for i in range(6)]
    assert client.post("/send", json=body).status_code == 200  # ids 1..6; m1 has 2, 4, 6
    path, headers = "/events?shape=arrays&machine=m1", {}
    if resume == "header":
        headers = {"Last-Event-ID": "2"}
    else:
        path += "&last_event_id=2"
    stream = SSE(client, path, headers, want=readings_at_least(3))
    assert client.post("/send", json=[reading(7, machine="m0"), reading(8, machine="m1")]).status_code == 200
    got = stream.readings()
    assert [e["id"] for e in got] == ["4", "6", "8"]  # caught up from the database, then live
    assert {e["data"]["machine"] for e in got} == {"m1"}
    latest = {r["id"]: r for r in client.get("/api/latest?machine=m1&limit=10").json()["readings"]}
    for e in got:
        stored = latest[e["data"]["id"]]
        assert e["data"]["x"] == [stored["features"][name] for name in FEATURES]
        assert e["data"]["y"] == [stored["faults"][name] for name in FAULTS]
        assert e["data"]["time"] == stored["time"]
    assert stream.events[0]["event"] == "hello" and "id" not in stream.events[0]  # resuming: not a resume point


@pytest.mark.parametrize("shape", ["table", "Arrays", "objects,arrays"])
def test_events_unknown_shape_is_a_400_naming_the_valid_ones(client, shape):
    r = client.get("/events", params={"shape": shape})
    assert r.status_code == 400, r.text
    answer = r.json()
    assert answer["error"] == "bad_request" and answer["field"] == "shape"
    assert answer["valid"] == ["objects", "arrays"]
    assert "objects" in answer["message"] and "arrays" in answer["message"]
    assert len(client.app.state.appliance.hub) == 0  # no client was subscribed


@pytest.mark.parametrize("resume", [str(2**63), str(2**64 + 5), "-1", "99"])
def test_events_resume_id_beyond_any_row_resumes_from_the_newest(client, resume):
    """Found by schemathesis: an id past SQLite's INTEGER range overflowed the catch-up query (a
    500). An id beyond the newest row (a replaced database, an invented id) must not make the
    client skip every reading up to its number either."""
    assert client.post("/send", json=[reading(1), reading(2)]).status_code == 200  # ids 1, 2
    stream = SSE(client, f"/events?shape=arrays&last_event_id={resume}", want=readings_at_least(1))
    assert client.post("/send", json=reading(3)).status_code == 200
    assert [e["id"] for e in stream.readings()] == ["3"]
    hello = stream.events[0]
    assert hello["event"] == "hello" and hello["id"] == "2"  # the resume point is the newest row
