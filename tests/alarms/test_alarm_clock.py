"""A machine's alarm clock: a sensor with a wrong clock must not silence its machine, and readings the
engine passes over are counted where an operator can see them (/metrics)."""

from __future__ import annotations

import re

from edge.fdrest import now_text
from tests.harness import reading

REPORT_SECTION = "hostile"


def _every_reading_alarms(make_client, **overrides):
    # every fault of every reading is far above these thresholds: each reading is alarm-level
    return make_client(warning_threshold=-1e9, alarm_threshold=-1e9 + 1, **overrides)


def _skipped(client, reason: str) -> float:
    text = client.get("/metrics").text
    match = re.search(rf'^fdedge_alarm_readings_skipped_total{{reason="{reason}"}} (\S+)$', text, re.M)
    assert match, f"no skipped-readings series for {reason!r} in /metrics"
    return float(match.group(1))


def test_a_reading_stamped_23_hours_ahead_does_not_silence_its_machine(make_client, report):
    client = _every_reading_alarms(make_client)
    assert client.post("/send", json=reading(0, Time=now_text(23 * 3600), machine="m1")).status_code == 200
    for machine in ("m1", "m2"):  # m2 never had a wrong clock: the yardstick
        batch = [reading(k, Time=now_text(-20 + k), machine=machine) for k in range(20)]
        assert client.post("/send", json=batch).status_code == 200
    m1, m2 = (client.get(f"/api/alarms?machine={m}&state=active").json()["alarms"] for m in ("m1", "m2"))
    assert len(m2) == 8, "the thresholds make every fault of every reading alarm-level"
    assert sorted(a["fault"] for a in m1) == sorted(a["fault"] for a in m2)
    assert _skipped(client, "out_of_order") == 0
    report.put("hostile", "future_clock", f"one reading stamped 23 h ahead, then 20 alarm-level readings: "
                                          f"{len(m1)} alarms raised, as on a machine without it ({len(m2)})")


def test_readings_the_engine_passes_over_are_counted_by_reason(make_client, report):
    client = _every_reading_alarms(make_client)
    assert client.post("/send", json=reading(0, Time=now_text(-10), machine="m1")).status_code == 200
    late = [reading(k, Time=now_text(-3600 - k), machine="m1") for k in range(3)]  # a backfill from before
    assert client.post("/send", json=late).status_code == 200
    assert _skipped(client, "out_of_order") == 3
    report.put("hostile", "skipped_counted", "3 back-filled readings: fdedge_alarm_readings_skipped_total"
                                             '{reason="out_of_order"} 3 in /metrics')
