"""The uplink against a real Mosquitto and a real `fdedge serve`: a paho subscriber is the central
side. Every stored reading arrives with the database's values and a stable key, through broker
outages and a kill -9 of the appliance; the backlog bound and retention are counted, never silent."""

from __future__ import annotations

import re
import sqlite3
import threading
import time
from collections import Counter

import pytest

from edge.fdrest import FAULTS, FEATURES
from edge.plant.uplink_payload import parse_appliance_id, parse_topic_prefix, topic_level
from tests.harness import Server, reading
from tests.mqtt_helpers import Central, Mosquitto

APPLIANCE = "edge-1"
PREFIX = "acme/berlin"


def uplink_server(server_factory, model_dir, broker: Mosquitto, *extra: str, **kwargs) -> Server:
    return server_factory(model_dir, args=["--uplink-url", broker.url, "--uplink-topic-prefix", PREFIX,
                                           "--appliance-id", APPLIANCE, "--sync", "normal", *extra], **kwargs)


def post_batch(server: Server, machine: str, n: int, seed: int = 0) -> None:
    body = [reading(seed + i, machine=machine) for i in range(n)]
    status, answer = server.request("POST", "/send", body)
    assert status == 200, answer


def stored(server: Server) -> dict[int, dict]:
    """Every stored reading by id, as /api/latest answers it (newest first, 1000 at most per call)."""
    rows = server.get("/api/latest", limit=1000)["readings"]
    return {r["id"]: r for r in rows}


def ingest_in_background(server: Server, machines: list[str], stop: threading.Event,
                         statuses: list[int]) -> threading.Thread:
    def run() -> None:
        seed = 10_000
        while not stop.is_set():
            for m in machines:
                try:
                    status, _ = server.request("POST", "/send", [reading(seed + i, machine=m) for i in range(5)])
                except OSError:  # the server was killed under it
                    status = 0
                statuses.append(status)
                seed += 5
            time.sleep(0.01)
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def per_machine_in_order(readings: list[dict]) -> None:
    """The first arrival of each key comes in id order per machine; a repeat is a re-sent copy."""
    last: dict[str, int] = {}
    seen: dict[str, dict] = {}
    for r in readings:
        if r["key"] in seen:
            assert seen[r["key"]] == r, "a duplicate differs from the first copy"
            continue
        seen[r["key"]] = r
        assert r["id"] > last.get(r["machine"], 0), f"{r['machine']}: id {r['id']} after {last[r['machine']]}"
        last[r["machine"]] = r["id"]


def uplink_status(server: Server) -> dict:
    return server.get("/api/uplink")


def test_every_stored_reading_arrives_with_the_databases_values(server_factory, linear_model, mosquitto):
    central = Central(mosquitto)
    server = uplink_server(server_factory, linear_model[0], mosquitto).start()
    machines = ["press-1", "line/2+#"]
    for k in range(6):
        for m in machines:
            post_batch(server, m, 40, seed=k * 100)
    for i in range(20):
        server.send(reading(i, machine="press-1"))
    db = stored(server)
    assert len(db) == 6 * 2 * 40 + 20
    central.wait_for(lambda c: c.keys() >= {f"{APPLIANCE}:{i}" for i in db}, what="every reading arriving")
    got = {r["id"]: r for r in central.readings()}
    for rid, row in db.items():
        r = got[rid]
        assert r["key"] == f"{APPLIANCE}:{rid}" and r["machine"] == row["machine"] and r["time"] == row["time"]
        assert r["x"] == [row["features"][f] for f in FEATURES]
        assert r["y"] == [row["faults"][f] for f in FAULTS]
        assert r["quality"] == row["quality"]  # the stored verdict (unknown: the linear model has no statistics)
        assert r["topic"] == f"{PREFIX}/{APPLIANCE}/{topic_level(row['machine'])}/readings"
        assert r["model_version"] == "test"
    assert {r["topic"] for r in got.values()} == {f"{PREFIX}/{APPLIANCE}/press-1/readings",
                                                   f"{PREFIX}/{APPLIANCE}/line_2__/readings"}
    per_machine_in_order(central.readings())
    batches = [m for topic, m in central.messages if topic.endswith("/readings")]
    with sqlite3.connect(server.data_dir / "sensor_data.db") as conn:
        database = conn.execute("SELECT value FROM fdedge_meta WHERE key = 'database_id'").fetchone()[0]
    assert {m["database"] for m in batches} == {database} and {m["appliance"] for m in batches} == {APPLIANCE}
    assert all(m["features"] == list(FEATURES) and m["faults"] == list(FAULTS) for m in batches)
    assert max(len(m["readings"]) for m in batches) <= 250
    assert len(batches) < len(db) / 5, "readings go in batches, not one message each"
    status = uplink_status(server)
    central.wait_for(lambda c: uplink_status(server)["lag_rows"] == 0, what="lag 0")
    assert status["connected"] and status["appliance_id"] == APPLIANCE
    assert metric(server, "fdedge_uplink_connected") == 1
    assert metric(server, "fdedge_uplink_published_total", kind="readings") == len(db)
    assert metric(server, "fdedge_uplink_lag_rows") == 0
    central.close()


def _metrics(server: Server) -> str:
    import urllib.request
    with urllib.request.urlopen(server.url + "/metrics", timeout=10) as r:
        return r.read().decode()


def metric(server: Server, name: str, **labels: str) -> float:
    label = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = "^" + re.escape(name + (f"{{{label}}}" if label else "")) + r" (\S+)$"
    found = re.search(pattern, _metrics(server), re.M)
    assert found, f"{name} {labels} not in /metrics"
    return float(found.group(1))


def test_a_broker_outage_loses_nothing_and_never_stops_ingest(server_factory, linear_model, mosquitto_factory):
    broker = mosquitto_factory("central", persistent=True)
    central = Central(broker)
    server = uplink_server(server_factory, linear_model[0], broker).start()
    stop, statuses = threading.Event(), []
    feeder = ingest_in_background(server, ["a", "b", "c"], stop, statuses)
    for _ in range(3):
        time.sleep(1.0)
        broker.stop()
        before = len(statuses)
        time.sleep(1.5)
        down = uplink_status(server)
        assert not down["connected"] and down["lag_rows"] > 0
        assert len(statuses) > before, "ingest stopped while the broker was down"
        broker.start()
    time.sleep(1.0)
    stop.set()
    feeder.join(10)
    assert statuses and set(statuses) == {200}
    newest = server.get("/api/latest", limit=1)["readings"][0]["id"]
    central.wait_for(lambda c: c.keys() >= {f"{APPLIANCE}:{i}" for i in range(1, newest + 1)}, timeout=60,
                     what="every reading arriving after three outages")
    readings = central.readings()
    per_machine_in_order(readings)
    duplicates = len(readings) - len({r["key"] for r in readings})
    print(f"outages: {newest} readings stored, {len(readings)} received, {duplicates} duplicates")
    assert duplicates <= 3 * 32 * 250, "duplicates only for messages in flight at each outage"
    central.wait_for(lambda c: uplink_status(server)["lag_rows"] == 0, what="lag 0")
    assert metric(server, "fdedge_uplink_skipped_rows_total", reason="backlog") == 0
    central.close()


def saved_cursor(data_dir) -> int:
    with sqlite3.connect(data_dir / "sensor_data.db") as db:
        return db.execute("SELECT readings FROM fdedge_uplink").fetchone()[0]


def test_a_killed_appliance_resumes_from_its_cursor(server_factory, linear_model, mosquitto_factory, tmp_path):
    broker = mosquitto_factory("central", persistent=True)
    central = Central(broker)
    server = uplink_server(server_factory, linear_model[0], broker, power_cut=True).start()
    for k in range(5):
        post_batch(server, "kiln", 100, seed=k * 1000)
    central.wait_for(lambda c: uplink_status(server)["cursor_saved"] == 500, what="the cursor saved at 500")
    broker.stop()  # the next 500 wait in the database, unsent
    central.wait_for(lambda c: not uplink_status(server)["connected"], what="the uplink noticing")
    for k in range(5, 10):
        post_batch(server, "kiln", 100, seed=k * 1000)
    server.kill()
    assert saved_cursor(tmp_path / "data") == 500, "the cursor moves only on PUBACK"
    broker.start()
    server.start()
    central.wait_for(lambda c: c.keys() >= {f"{APPLIANCE}:{i}" for i in range(1, 1001)}, timeout=60,
                     what="all 1000 after the restart")
    # now killed mid-stream, with messages in flight and the newest acknowledgements not yet saved
    stop, statuses = threading.Event(), []
    feeder = ingest_in_background(server, ["kiln", "dryer"], stop, statuses)
    time.sleep(1.5)
    server.kill()
    stop.set()
    feeder.join(10)
    at_kill = saved_cursor(tmp_path / "data")
    server.start()
    newest = server.get("/api/latest", limit=1)["readings"][0]["id"]
    central.wait_for(lambda c: c.keys() >= {f"{APPLIANCE}:{i}" for i in range(1, newest + 1)}, timeout=60,
                     what="every reading after the second kill")
    readings = central.readings()
    per_machine_in_order(readings)
    assert all(r["quality"]["status"] == "unknown" for r in readings)  # caught up from SQLite or live alike
    counts = Counter(r["key"] for r in readings)
    repeated = sorted(int(k.split(":")[1]) for k, n in counts.items() if n > 1)
    print(f"kill -9: {newest} stored, cursor saved at {at_kill} when killed, {len(repeated)} readings repeated")
    assert all(rid > at_kill for rid in repeated), "only readings after the saved cursor are sent again"
    central.close()


def test_a_backlog_past_its_bound_is_skipped_counted_and_logged(server_factory, linear_model, mosquitto_factory):
    broker = mosquitto_factory("central", persistent=True)
    central = Central(broker)
    server = uplink_server(server_factory, linear_model[0], broker, "--uplink-backlog-rows", "300").start()
    post_batch(server, "mill", 50)
    central.wait_for(lambda c: len(c.keys()) == 50, what="the first 50")
    broker.stop()
    central.wait_for(lambda c: not uplink_status(server)["connected"], what="the uplink noticing")
    for k in range(10):
        post_batch(server, "mill", 100, seed=k * 1000)
    broker.start()
    central.wait_for(lambda c: f"{APPLIANCE}:1050" in c.keys(), timeout=60, what="the newest reading")
    got = {r["id"] for r in central.readings()}
    assert got >= set(range(751, 1051)), "the newest 300 are sent"
    assert not got & set(range(51, 751)), "the oldest beyond the bound are not"
    assert metric(server, "fdedge_uplink_skipped_rows_total", reason="backlog") == 700
    assert uplink_status(server)["skipped_rows"] == {"backlog": 700, "retention": 0}
    assert "skipped 700 readings (ids 51-750)" in server.read_log()
    central.close()


def test_readings_retention_deleted_before_they_were_sent_are_counted(server_factory, linear_model,
                                                                     mosquitto_factory):
    broker = mosquitto_factory("central", persistent=True)
    central = Central(broker)
    server = uplink_server(server_factory, linear_model[0], broker, "--retention-rows", "200",
                           "--retention-interval", "0.2").start()
    broker.stop()
    central.wait_for(lambda c: not uplink_status(server)["connected"], what="the uplink noticing")
    for k in range(6):
        post_batch(server, "oven", 100, seed=k * 1000)
    central.wait_for(lambda c: server.get("/api/storage")["readings"] == 200, what="retention down to 200")
    server.stop()  # the readings in memory go with it: the uplink must read the database
    broker.start()
    server.start()
    central.wait_for(lambda c: c.keys() >= {f"{APPLIANCE}:{i}" for i in range(401, 601)}, timeout=60,
                     what="the 200 kept")
    assert uplink_status(server)["skipped_rows"] == {"backlog": 0, "retention": 400}
    assert metric(server, "fdedge_uplink_skipped_rows_total", reason="retention") == 400
    assert "skipped 400 readings (ids 1-400): retention deleted them" in server.read_log()
    central.close()


def test_alarm_changes_are_published_with_their_keys(server_factory, linear_model, mosquitto):
    central = Central(mosquitto)
    server = uplink_server(server_factory, linear_model[0], mosquitto,
                           "--warning-threshold", "-1000000000", "--alarm-threshold", "-999999999").start()
    post_batch(server, "boiler", 5)
    central.wait_for(lambda c: len(c.alarms()) >= 8, what="eight raised alarms")
    raised = central.alarms()
    assert {a["event"] for a in raised} == {"raise"}
    assert {a["alarm"]["fault"] for a in raised} == set(FAULTS)
    for a in raised:
        assert a["key"] == f"{APPLIANCE}:{a['alarm']['id']}:raise" and a["appliance"] == APPLIANCE
    alarm_id = raised[0]["alarm"]["id"]
    status, _ = server.request("POST", f"/api/alarms/{alarm_id}/ack", {"by": "operator"})
    assert status == 200
    central.wait_for(lambda c: any(a["event"] == "ack" for a in c.alarms()), what="the ack")
    ack = next(a for a in central.alarms() if a["event"] == "ack")
    assert ack["key"] == f"{APPLIANCE}:{alarm_id}:ack" and ack["alarm"]["acked_by"] == "operator"
    central.close()


def test_names_become_safe_topic_levels():
    assert topic_level("line/2+#") == "line_2__" and topic_level("") == "_" and topic_level("pump 7") == "pump 7"
    assert parse_topic_prefix("acme/berlin/line1") == "acme/berlin/line1"
    for bad in ("acme/+", "#", "a//b", "/a", "$SYS/x", ""):
        with pytest.raises(ValueError, match="topic prefix"):
            parse_topic_prefix(bad)
    assert parse_appliance_id("edge-07.plant_1") == "edge-07.plant_1"
    for bad in ("edge:1", "a/b", "", "-x", "x" * 65):
        with pytest.raises(ValueError, match="appliance id"):
            parse_appliance_id(bad)


def test_readings_scored_before_and_after_a_model_swap_say_which_model_scored_them(
        server_factory, linear_model, mosquitto, tmp_path):
    """The message's model is the one that scored its readings, not the one running when the
    appliance started: a swap splits the stream, live and on catch-up."""
    import json
    import urllib.request

    from tests.harness import make_linear_model, model_archive
    from tests.http.test_model_routes import with_replay

    other = tmp_path / "model-b"
    with_replay(other, make_linear_model(other, seed=5))
    admin = {"Authorization": "Bearer admin-secret"}
    central = Central(mosquitto)
    try:
        server = uplink_server(server_factory, linear_model[0], mosquitto, "--admin-token", "admin-secret").start()
        post_batch(server, "press-1", 5)
        upload = urllib.request.Request(server.url + "/api/models", data=model_archive(other), method="POST",
                                        headers={**admin, "Content-Type": "application/gzip"})
        with urllib.request.urlopen(upload, timeout=30) as answer:
            version_b = json.loads(answer.read())["version"]
        status, body = server.request("POST", f"/api/models/{version_b}/activate", headers=admin)
        assert status == 200, body
        post_batch(server, "press-1", 5, seed=50)
        db = stored(server)
        central.wait_for(lambda c: c.keys() >= {f"{APPLIANCE}:{i}" for i in db}, what="every reading arriving")
        got = {r["id"]: r for r in central.readings()}
        for rid, row in db.items():
            assert got[rid]["model_store_version"] == row["model_version"], (rid, got[rid], row["model_version"])
        assert {got[i]["model_store_version"] for i in range(6, 11)} == {version_b}
        assert got[1]["model_store_version"] not in (None, version_b)
    finally:
        central.close()
