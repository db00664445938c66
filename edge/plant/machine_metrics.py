"""Per-machine gauges on /metrics, read from `Latest` at scrape time: nothing on the ingest path
beyond the table Modbus shares, and a machine retention removed is simply not there next scrape
(a prometheus Gauge with labels would keep its series until someone removed them).

Series: 8 `fdedge_machine_fault` + state + newest time + active alarms = 11 per machine, at most
--max-machines machines (11,000 at the default 1000)."""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily

from edge.fdrest import FAULTS
from edge.plant.latest import Latest


class MachineCollector:
    def __init__(self, latest: Latest) -> None:
        self.latest = latest

    def collect(self) -> Iterator[GaugeMetricFamily]:
        now = time.time()
        fault = GaugeMetricFamily("fdedge_machine_fault", "Fault intensity of the machine's newest reading",
                                  labels=["machine", "fault"])
        state = GaugeMetricFamily("fdedge_machine_state", "Worst state of the machine: 0 normal, 1 warning, "
                                  "2 alarm, 3 stale (--stale-after), 4 suspect data (Modbus register 8)",
                                  labels=["machine"])
        last = GaugeMetricFamily("fdedge_machine_last_reading_seconds",
                                 "Time of the machine's newest reading (its own time), Unix seconds",
                                 labels=["machine"])
        alarms = GaugeMetricFamily("fdedge_machine_alarms_active", "Alarms of the machine raised and not cleared",
                                   labels=["machine"])
        for seen in self.latest.all():
            newest = seen.newest
            if newest is None:
                continue
            for name, value in zip(FAULTS, newest.faults, strict=True):
                fault.add_metric([seen.name, name], value)
            state.add_metric([seen.name], self.latest.state(seen, now))
            last.add_metric([seen.name], newest.epoch)
            alarms.add_metric([seen.name], len(seen.alarms))
        yield from (fault, state, last, alarms)
