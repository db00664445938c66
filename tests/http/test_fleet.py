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
