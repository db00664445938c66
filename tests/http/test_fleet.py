"""GET /api/fleet: the fleet overview's one request (every machine, its newest reading, its alarms)."""

from __future__ import annotations

import json

import numpy as np

from edge.fdrest import FAULTS, FEATURES
from tests.harness import linear_expected, reading


def test_fleet_lists_every_machine_with_its_newest_reading_and_active_alarms(tmp_path, linear_model, make_client):
    params = linear_model[1]
    hi = reading(1)
    y = linear_expected(params, np.array([[hi[n] for n in FEATURES]]))[0]
    f = int(np.argmax(y))
    rules = tmp_path / "rules.json"  # one fault warns at hi's value; the rest are off
    rules.write_text(json.dumps({"defaults": {"enabled": False},
                                 "rules": [{"fault": FAULTS[f], "enabled": True, "warning": y[f] - 1,
                                            "alarm": y[f] + 1000, "clear": y[f] - 2}]}))
    with make_client(alarm_rules=rules) as client:
        body = [dict(hi, machine="m1", Time=f"2026-03-01 10:00:0{k}") for k in range(3)]
        body += [dict(reading(5), machine="m2", Time="2026-03-01 09:00:00")]
        assert client.post("/send", json=body).status_code == 200
        got = client.get("/api/fleet").json()
        by = {m["machine"]: m for m in got["machines"]}
        assert set(by) == {"m1", "m2"}
        assert by["m1"]["latest"]["time"] == "2026-03-01T10:00:02Z"
        assert by["m1"]["latest"]["id"] == by["m1"]["last_id"] == 3
        assert by["m1"]["alarms"] == {"count": 1, "unacked": 1, "severity": "warning", "faults": [FAULTS[f]]}
        assert by["m2"]["alarms"] == {"count": 0, "unacked": 0, "severity": None, "faults": []}
        assert by["m2"]["latest"]["time"] == "2026-03-01T09:00:00Z"
        assert "stale" in by["m2"] and got["stale_after_s"] == client.app.state.appliance.settings.stale_after
        assert client.post("/api/alarms/1/ack", json={"by": "ana"}).status_code == 200
        assert client.get("/api/fleet").json()["machines"][0]["alarms"]["unacked"] == 0


def test_fleet_of_an_empty_appliance_is_empty(make_client):
    with make_client() as client:
        assert client.get("/api/fleet").json()["machines"] == []


def test_fleet_sparklines_are_each_machines_peak_per_bucket_over_the_hour_before_its_newest_reading(
        linear_model, make_client):
    """?spark=N: the largest fault per bucket, N buckets over the spark_s (default 3600) seconds that
    end with the machine's newest reading (its own clock, so a machine silent since 2023 still has
    its last hour); an empty bucket is null (a gap, not a zero)."""
    params = linear_model[1]
    times = ["2026-03-01 10:05:00", "2026-03-01 10:40:00", "2026-03-01 10:45:00", "2026-03-01 11:00:00"]
    rows = [reading(10 + k) for k in range(len(times))]
    peaks = linear_expected(params, np.array([[r[n] for n in FEATURES] for r in rows])).max(axis=1)
    with make_client() as client:
        body = [dict(r, machine="m1", Time=t) for r, t in zip(rows, times, strict=True)]
        body.append(dict(reading(3), machine="old", Time="2023-11-06 16:00:00"))
        assert client.post("/send", json=body).status_code == 200
        got = client.get("/api/fleet", params={"spark": 4}).json()
        by = {m["machine"]: m for m in got["machines"]}
        spark = by["m1"]["spark"]
        # end: a second after the newest reading; start: an hour before; 4 buckets of 900 s
        assert spark["start"] == "2026-03-01T10:00:01Z" and spark["bucket_s"] == 900
        # 10:05 -> bucket 0; nothing in bucket 1; 10:40 and 10:45 -> bucket 2 (their larger); 11:00 -> 3
        want = [peaks[0], None, max(peaks[1], peaks[2]), peaks[3]]
        assert [None if v is None else round(v, 3) for v in spark["peak"]] == \
            [None if v is None else round(float(v), 3) for v in want]
        old = by["old"]["spark"]
        assert old["start"] == "2023-11-06T15:00:01Z" and old["peak"][:3] == [None, None, None]
        assert old["peak"][3] is not None
        assert "spark" not in client.get("/api/fleet").json()["machines"][0]  # only when asked
        shorter = client.get("/api/fleet", params={"spark": 2, "spark_s": 600}).json()["machines"]
        m1 = {m["machine"]: m for m in shorter}["m1"]["spark"]
        assert m1["start"] == "2026-03-01T10:50:01Z" and m1["bucket_s"] == 300
        assert m1["peak"][0] is None and round(m1["peak"][1], 3) == round(float(peaks[3]), 3)


def test_fleet_refuses_a_bad_spark_parameter_naming_it(make_client):
    with make_client() as client:
        for params, field in (({"spark": "many"}, "spark"), ({"spark": 1}, "spark"), ({"spark": 100000}, "spark"),
                              ({"spark": 10, "spark_s": 5}, "spark_s")):
            r = client.get("/api/fleet", params=params)
            assert r.status_code == 400, params
            assert r.json()["field"] == field
