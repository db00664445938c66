"""Many machine names: a cap on distinct machines, no memory kept for machines with nothing in
progress, and a start-up that does not replay every machine ever seen."""

from __future__ import annotations

import json
import sqlite3

from tests.harness import reading
from tests.reliability_helpers import post, rss_mb

REPORT_SECTION = "hostile"


def test_a_machine_past_the_cap_is_refused_naming_the_cap(make_client, settings):
    client = make_client(max_machines=3)
    for name in ("m1", "m2", "m3"):
        assert client.post("/send", json=reading(1, machine=name)).status_code == 200
    r = client.post("/send", json=reading(2, machine="m4"))
    assert r.status_code == 422 and r.json()["reason"] == "too_many_machines", r.text
    assert r.json()["field"] == "machine" and "m4" in r.json()["message"] and r.json()["limit"] == 3
    mixed = client.post("/send", json=[reading(3, machine="m1"), reading(4, machine="m5")])
    assert mixed.status_code == 422  # refused whole: nothing half-stored
    assert client.post("/send", json=[reading(5, machine="m2"), reading(6, machine="m3")]).status_code == 200
    client.close()
    again = make_client(max_machines=3)  # the count survives a restart
    assert again.post("/send", json=reading(7, machine="m6")).status_code == 422
    with sqlite3.connect(settings.db_path) as conn:
        assert conn.execute("SELECT count(*) FROM sensor_data").fetchone()[0] == 5
        assert [r[0] for r in conn.execute("SELECT name FROM fdedge_machines ORDER BY name")] == ["m1", "m2", "m3"]


def test_machines_whose_readings_retention_removed_no_longer_count(make_client, settings):
    from edge.store import retention
    client = make_client(max_machines=2, retention_rows=1)
    for name in ("old", "new"):
        assert client.post("/send", json=reading(1, machine=name)).status_code == 200
    assert client.post("/send", json=reading(2, machine="third")).status_code == 422
    app = client.app.state.appliance
    client.portal.call(retention.prune_once, app.writer, app.settings, app.metrics)  # keeps the newest
    assert client.post("/send", json=reading(3, machine="third")).status_code == 200


def test_thousands_of_names_cost_no_state_per_name(server_factory, linear_model, report):
    # thresholds out of reach: no alarm run is in progress anywhere, as on most machines most days
    server = server_factory(linear_model[0], args=["--max-machines", "20000", "--warning-threshold", "1e9",
                                                   "--alarm-threshold", "2e9"]).start()
    for k in range(10):  # fill the SSE ring and the caches first: 5,000 readings of one machine
        assert post(server.port, [reading(i) for i in range(500)]).status == 200
    before = rss_mb(server.proc.pid)
    for k in range(20):  # 10,000 names, each seen once (a sensor that puts a serial number in it)
        body = json.dumps([reading(i, machine=f"serial-{k}-{i}") for i in range(500)]).encode()
        assert post(server.port, body).status == 200
    after = rss_mb(server.proc.pid)
    assert after - before < 15, f"RSS grew {after - before:.1f} MB for 10,000 names"
    server.stop()
    server.start()
    restarted = rss_mb(server.proc.pid)
    assert server.read_log().count("0 active alarm(s) on 0 machine(s)") == 2  # replayed none, both times
    report.put("hostile", "many_machines", f"10,500 machine names: RSS {before:.0f} -> {after:.0f} MB "
                                           f"(was 2.5 KB a name, kept), {restarted:.0f} MB after a restart, which "
                                           f"replays no machine without a run in progress; past --max-machines "
                                           f"(1,000) a new name is 422 `too_many_machines`")
