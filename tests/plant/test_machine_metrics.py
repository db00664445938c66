"""Per-machine gauges on /metrics, scraped from a real `fdedge serve`: the newest reading's fault
intensities, the state code (the Modbus register 8's), the newest reading's time; as many machines
as --max-machines allows, and a machine retention removed goes."""

from __future__ import annotations

import time
import urllib.request
from datetime import UTC, datetime, timedelta

from prometheus_client.parser import text_string_to_metric_families

from edge.fdrest import FAULTS, TIME_FORMAT, epoch_seconds
from tests.harness import reading


def ago(seconds: float) -> str:
    return (datetime.now(UTC) - timedelta(seconds=seconds)).strftime(TIME_FORMAT)


def scrape(url: str) -> dict[tuple[str, tuple], float]:
    with urllib.request.urlopen(url + "/metrics", timeout=10) as r:
        text = r.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples
            if s.name.startswith("fdedge_machine_")}


def machines(samples: dict) -> set[str]:
    return {dict(labels)["machine"] for _, labels in samples}


def test_the_newest_reading_of_each_machine_is_on_metrics(server_factory, linear_model):
    server = server_factory(linear_model[0], args=["--stale-after", "3600"]).start()
    assert machines(scrape(server.url)) == set()
    press_time, fan_time = ago(30), ago(10)
    press = server.send(reading(1, machine="press", Time=press_time))
    server.send(reading(5, machine="press", Time=ago(3000)))  # older than the newest: not shown
    fan = server.send(reading(2, machine="fan", Time=fan_time))
    samples = scrape(server.url)
    assert machines(samples) == {"press", "fan"}
    for name, answer in (("press", press), ("fan", fan)):
        for fault in FAULTS:
            got = samples[("fdedge_machine_fault", (("fault", fault), ("machine", name)))]
            assert abs(got - answer[fault]) < 1e-9 * max(1.0, abs(answer[fault])), (name, fault)
        assert samples[("fdedge_machine_state", (("machine", name),))] in {0, 1, 2}
        assert samples[("fdedge_machine_alarms_active", (("machine", name),))] == 0
    assert samples[("fdedge_machine_last_reading_seconds", (("machine", "press"),))] == epoch_seconds(press_time)
    assert samples[("fdedge_machine_last_reading_seconds", (("machine", "fan"),))] == epoch_seconds(fan_time)
    server.send(reading(3, machine="old", Time=ago(7200)))  # past --stale-after
    assert scrape(server.url)[("fdedge_machine_state", (("machine", "old"),))] == 3


def test_at_most_max_machines_and_a_machine_retention_removed_goes(server_factory, linear_model):
    server = server_factory(linear_model[0], args=["--max-machines", "2", "--retention-days", "1",
                                                   "--retention-interval", "0.2"]).start()
    server.send(reading(2, machine="ancient", Time=ago(3 * 86400)))  # retention removes it once...
    server.send(reading(1, machine="current", Time=ago(0)))  # ...a newer reading dates the cut
    status, _ = server.request("POST", "/send", reading(3, machine="third", Time=ago(0)))
    seen = machines(scrape(server.url))
    assert status in (200, 422) and len(seen) <= 2 and "current" in seen
    deadline = time.monotonic() + 20
    while "ancient" in machines(scrape(server.url)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "ancient" not in machines(scrape(server.url)), "retention removed the machine; its gauges stay"
    assert [m["machine"] for m in server.get("/api/machines")["machines"]] == sorted(seen - {"ancient"})
