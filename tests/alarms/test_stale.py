"""Stale machines: a machine silent past --stale-after (or 3 x its usual interval) raises one
alarm of kind `stale`, stored and notified like every alarm, cleared by its next reading, and
neither lost nor repeated by a restart.

The engine is driven as the writer drives it (insert, evaluate, record, COMMIT, commit()), with
the clock passed in (`check_stale(conn, now=...)`), so nothing here waits for minutes; the
end-to-end test runs a real server with --stale-after 1.
"""

from __future__ import annotations

import http.client
import json
import time
from pathlib import Path

import pytest

from edge.alarms.engine import AlarmEngine
from edge.alarms.rules import load_rules, parse_rules
from edge.alarms.tables import list_alarms
from edge.store import machine_state
from edge.store.schema import insert_rows, open_database
from tests.alarms.test_alarms import Receiver, wait_for
from tests.harness import Server, free_port, reading

HOOK = {"webhooks": [{"url": "http://127.0.0.1:9/hook", "events": ["raise", "clear", "ack"]}]}


class Writerish:
    """The writer's transaction in miniature, with the arrival time given."""

    def __init__(self, path: Path, stale_after: float = 10.0, rules=None, running_for: float = 7200) -> None:
        self.path, self.stale_after = path, stale_after
        self.rules = rules or parse_rules(HOOK, {"warning": 30.0, "alarm": 60.0})
        self.conn = open_database(path, sync="normal")
        self.engine = AlarmEngine(self.rules, stale_after_s=stale_after)
        self.engine.setup(self.conn)
        self.engine.stale.started -= running_for  # up that long: no start-up grace in the way

    def feed(self, machines: list[str], arrival: float, commit: bool = True) -> list:
        n = len(machines)
        self.conn.execute("BEGIN IMMEDIATE")
        last = insert_rows(self.conn, ["2023-01-01 00:00:00"] * n, [[0.0] * 35] * n, [[0.0] * 8] * n, machines)
        first = last - n + 1
        changes = self.engine.evaluate(self.conn, [(first + k, "2023-01-01 00:00:00", m, [0.0] * 8)
                                                   for k, m in enumerate(machines)])
        machine_state.record(self.conn, first, ["2023-01-01 00:00:00"] * n, machines, [0.0] * n,
                             arrival=arrival, stale_after=self.stale_after)
        if commit:
            self.conn.execute("COMMIT")
            self.engine.commit()
        else:
            self.conn.execute("ROLLBACK")
            self.engine.rollback()
        return changes

    def check(self, now: float) -> list:
        return self.engine.check_stale(self.conn, now=now)

    def outbox(self) -> list[tuple[str, int]]:
        return self.conn.execute("SELECT event, alarm_id FROM fdedge_alarm_outbox ORDER BY id").fetchall()

    def restart(self) -> Writerish:
        self.conn.close()
        return Writerish(self.path, self.stale_after, self.rules, running_for=0)


@pytest.fixture
def w(tmp_path):
    bench = Writerish(tmp_path / "stale.db")
    yield bench
    bench.conn.close()


def test_a_silent_machine_raises_one_stale_alarm_and_its_next_reading_clears_it(w):
    t = time.time()
    w.feed(["m1", "m2"], arrival=t)
    assert w.check(t + 9) == []  # within --stale-after 10
    raised = w.check(t + 11)
    assert sorted((c.kind, c.machine, c.alarm["kind"], c.alarm["fault"]) for c in raised) == [
        ("raise", "m1", "stale", "stale"), ("raise", "m2", "stale", "stale")]
    alarm = raised[0].alarm
    assert alarm["state"] == "active" and alarm["severity"] == "warning"
    assert alarm["raised_value"] == pytest.approx(11, abs=0.01)  # seconds silent
    assert alarm["since"].endswith("Z") and alarm["raised_reading"] in (1, 2)
    assert w.check(t + 60) == []  # raised once, however long the silence
    assert w.engine.stale_machines() == {"m1", "m2"} and w.engine.active_count == 2
    assert [e for e, _ in w.outbox()] == ["raise", "raise"]  # webhooks, in the same transaction

    changes = w.feed(["m3", "m1"], arrival=t + 70)
    (clear,) = changes
    assert (clear.kind, clear.machine, clear.alarm["state"]) == ("clear", "m1", "cleared")
    assert clear.alarm["cleared_reading"] == 4  # m1's reading in that batch
    assert clear.alarm["peak"] >= 11  # the whole silence, in seconds
    assert w.engine.stale_machines() == {"m2"} and w.engine.active_count == 1
    assert [e for e, _ in w.outbox()] == ["raise", "raise", "clear"]
    stored = list_alarms(w.conn, kind="stale")
    assert [(a["machine"], a["state"]) for a in stored] == [("m2", "active"), ("m1", "cleared")]
    assert list_alarms(w.conn, kind="fault") == []


def test_a_clear_in_a_rolled_back_transaction_leaves_the_machine_stale(w):
    t = time.time()
    w.feed(["m1"], arrival=t)
    assert len(w.check(t + 11)) == 1
    assert [c.kind for c in w.feed(["m1"], arrival=t + 12, commit=False)] == ["clear"]
    assert w.engine.is_stale("m1") and w.engine.active_count == 1
    assert [c.kind for c in w.feed(["m1"], arrival=t + 13)] == ["clear"]
    assert not w.engine.is_stale("m1") and w.engine.active_count == 0


def test_a_restart_keeps_stale_alarms_and_raises_none_twice(w):
    t = time.time()
    w.feed(["old"], arrival=t - 3600)
    w.feed(["fresh"], arrival=t)
    assert [c.machine for c in w.check(t + 1)] == ["old"]
    again = w.restart()
    try:
        assert again.engine.stale_machines() == {"old"} and again.engine.active_count == 1
        # the appliance was down meanwhile: "fresh" gets its threshold from the start to speak
        assert again.check(time.time() + 5) == []
        assert [c.machine for c in again.check(time.time() + 11)] == ["fresh"]
        assert len(list_alarms(again.conn, state="active", kind="stale")) == 2  # one each
        assert [c.kind for c in again.feed(["old"], arrival=time.time())] == ["clear"]
    finally:
        again.conn.close()


def test_a_stale_alarm_can_be_acknowledged(w):
    t = time.time()
    w.feed(["m1"], arrival=t)
    (raised,) = w.check(t + 11)
    done = w.engine.ack(w.conn, raised.alarm_id, "ana", "power cut in hall 2")
    assert done["alarm"]["acked_by"] == "ana" and done["alarm"]["kind"] == "stale"
    (clear,) = w.feed(["m1"], arrival=t + 20)
    assert clear.alarm["acked_by"] == "ana" and clear.alarm["state"] == "cleared"


def test_a_slow_machine_is_judged_by_its_own_interval_and_an_outage_does_not_teach_it(w):
    t = time.time()
    for k in range(30):  # every 100 s, with --stale-after 10
        w.feed(["slow"], arrival=t + 100 * k)
    last = t + 2900
    (row,) = machine_state.silence(w.conn)
    assert row[2] == pytest.approx(100, rel=0.01)
    assert machine_state.stale_threshold(row[2], 10) == pytest.approx(300, rel=0.01)
    assert w.check(last + 250) == []  # a late reading is not silence
    assert [c.machine for c in w.check(last + 310)] == ["slow"]
    w.feed(["slow"], arrival=last + 3 * 86400)  # back after three days
    interval = machine_state.silence(w.conn)[0][2]
    assert interval < 100 + 0.2 * 300 + 1  # the outage counted at most up to the threshold


def test_stale_off_raises_nothing_and_learns_nothing(tmp_path):
    w = Writerish(tmp_path / "off.db", stale_after=0)
    t = time.time()
    w.feed(["m1"], arrival=t)
    w.feed(["m1"], arrival=t + 5)
    assert w.check(t + 10**6) == []
    assert machine_state.silence(w.conn)[0][1:3] == (t + 5, None)
    assert machine_state.listing(w.conn, 0, now=t + 10**6)[0]["stale"] is False
    w.conn.close()


def test_an_older_database_is_migrated_in_place_and_its_silent_machines_show_stale(tmp_path):
    path = tmp_path / "old.db"
    conn = open_database(path, sync="normal")
    AlarmEngine(load_rules(None, 30, 60)).setup(conn)
    conn.execute("BEGIN")
    insert_rows(conn, ["2023-05-01 12:00:00"], [[0.0] * 35], [[0.0] * 8], ["pump-2023"])
    machine_state.record(conn, 1, ["2023-05-01 12:00:00"], ["pump-2023"], [0.0])
    conn.execute("COMMIT")
    # as an earlier version left them: no arrival time, no interval, no alarm kind
    conn.executescript("""
        CREATE TABLE m AS SELECT name, first_time, last_time, last_peak, readings, last_id FROM fdedge_machines;
        DROP TABLE fdedge_machines;
        CREATE TABLE fdedge_machines (name TEXT PRIMARY KEY, first_time TEXT, last_time TEXT, last_peak REAL,
            readings INTEGER NOT NULL DEFAULT 0, last_id INTEGER) WITHOUT ROWID;
        INSERT INTO fdedge_machines SELECT * FROM m; DROP TABLE m;
        ALTER TABLE fdedge_alarms DROP COLUMN kind;""")
    conn.close()
    conn = open_database(path, sync="normal")
    engine = AlarmEngine(load_rules(None, 30, 60), stale_after_s=600)
    engine.setup(conn)
    (m,) = machine_state.listing(conn, 600)
    assert m["last_seen"] == "2023-05-01T12:00:00.000Z" and m["stale"] is True and m["silent_s"] > 86400
    assert "kind" in {r[1] for r in conn.execute("PRAGMA table_info(fdedge_alarms)")}
    assert [c.machine for c in engine.check_stale(conn, now=time.time() + 601)] == ["pump-2023"]
    conn.close()


# -- the real server --------------------------------------------------------------------------------

def events_until(port: int, want, timeout: float = 15.0) -> list[dict]:
    """GET /events, parsed, until want(alarm events) holds."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    conn.request("GET", "/events", headers={"Accept": "text/event-stream"})
    stream = conn.getresponse()
    deadline = time.monotonic() + timeout
    alarms: list[dict] = []
    event = None
    try:
        while not want(alarms):
            assert time.monotonic() < deadline, f"alarm events so far: {alarms}"
            line = stream.readline().decode().rstrip("\r\n")
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event == "alarm":
                alarms.append(json.loads(line[6:]))
    finally:
        conn.close()
    return alarms


def test_the_server_raises_notifies_shows_and_clears_stale_machines_across_a_restart(tmp_path, linear_model):
    from concurrent.futures import ThreadPoolExecutor

    from edge.settings import Settings

    receiver = Receiver(free_port()).start()
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps({"webhooks": [{"url": f"http://127.0.0.1:{receiver.port}/hook"}]}))
    settings = Settings(data_dir=tmp_path / "data", model_dir=linear_model[0], stale_after=1.0, alarm_rules=rules,
                        retention_interval=3600)
    server = Server(settings=settings).start()
    try:
        pool = ThreadPoolExecutor(1)
        seen = pool.submit(events_until, server.port, lambda a: {e["alarm"]["machine"] for e in a} >= {"m1", "m2"})
        time.sleep(0.3)  # the stream is open
        for name in ("m1", "m2"):
            server.send(reading(1, machine=name))
        fresh = {m["machine"]: m for m in server.get("/api/machines")["machines"]}
        assert fresh["m1"]["stale"] is False and fresh["m1"]["silent_s"] < 1
        assert fresh["m1"]["last_seen"].endswith("Z") and fresh["m1"]["stale_after_s"] == 1
        events = seen.result(timeout=20)
        assert {(e["event"], e["alarm"]["kind"]) for e in events} == {("raise", "stale")}
        listed = {m["machine"]: m for m in server.get("/api/machines")["machines"]}
        assert listed["m1"]["stale"] is True and listed["m1"]["silent_s"] > 1
        assert len(server.get("/api/alarms", state="active", kind="stale")["alarms"]) == 2
        assert server.appliance.stale_machines() == {"m1", "m2"}
        metrics = _text(server, "/metrics")
        assert "fdedge_machines_stale 2.0" in metrics and "fdedge_alarms_active 2.0" in metrics
        assert 'fdedge_alarm_events_total{event="raise",severity="warning"} 2.0' in metrics

        server.send(reading(2, machine="m1"))  # m1 speaks again
        assert server.get("/api/alarms", state="active", kind="stale")["alarms"][0]["machine"] == "m2"
        assert not server.appliance.is_stale("m1")
        assert wait_for(lambda: len(receiver.got) >= 3, timeout=10)

        server.stop()
        time.sleep(1.2)  # m1 falls silent while the appliance is down
        server.start()
        assert [a["machine"] for a in server.get("/api/alarms", state="active", kind="stale")["alarms"]] == ["m2"]
        assert wait_for(lambda: len(server.get("/api/alarms", state="active", kind="stale")["alarms"]) == 2,
                        timeout=10)
        time.sleep(0.5)  # and nothing more: one alarm per silence
        stale = server.get("/api/alarms", kind="stale")["alarms"]
        assert sorted((a["machine"], a["state"]) for a in stale) == [("m1", "active"), ("m1", "cleared"),
                                                                     ("m2", "active")]
        assert wait_for(lambda: len(receiver.got) >= 4, timeout=10)
    finally:
        server.stop()
        receiver.stop()
    bodies = [json.loads(body) for _, _, body in receiver.got]
    assert sorted((b["event"], b["alarm"]["machine"]) for b in bodies) == [
        ("clear", "m1"), ("raise", "m1"), ("raise", "m1"), ("raise", "m2")]
    assert all(b["alarm"]["kind"] == "stale" for b in bodies)


def _text(server: Server, path: str) -> str:
    import urllib.request
    with urllib.request.urlopen(server.url + path, timeout=10) as r:
        return r.read().decode()
