"""The virtual sensor's on-disk buffer across repeated server crashes, counted for the report.

tests/test_sensor.py proves the buffer's behaviour once per failure; this run kills the appliance
three times at random points of one stream (with --sync normal and full alternating) and keeps it
down for a random while each time: every generated reading must be stored exactly once, in order.
"""

from __future__ import annotations

import random
import time

import pytest

from tests.harness import BUNDLED
from tests.reliability_helpers import wait_for
from tests.sensor_helpers import finish, make_csv, start_sensor, stored, stored_count

REPORT_SECTION = "sensor"


@pytest.mark.slow
def test_sensor_buffer_loses_nothing_across_three_server_kills(server_factory, linear_model, tmp_path, report):
    model = BUNDLED if (BUNDLED / "manifest.json").exists() else linear_model[0]
    rng = random.Random()
    rows = make_csv(tmp_path / "data.csv", 900, seed=rng.randrange(1000))
    server = server_factory(model, args=["--sync", "normal"]).start()
    log = tmp_path / "sensor.log"
    proc = start_sensor(server.url, tmp_path / "buffer.db", "--csv", str(tmp_path / "data.csv"), "--rate", "300",
                        "--batch", str(rng.choice([1, 3, 8])), log=log)
    downtimes = []
    try:
        for kill, at in enumerate(sorted(rng.sample(range(60, 800), 3))):
            wait_for(lambda: stored_count(server) >= at or proc.poll() is not None, 30, f"{at} readings stored")
            server.kill()
            down = round(rng.uniform(0.2, 1.5), 1)
            downtimes.append(down)
            time.sleep(down)  # the outage itself: the sensor buffers meanwhile
            server = server_factory(model, port=server.port, args=["--sync", ("full", "normal")[kill % 2]]).start()
        finish(proc, log, timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    got = stored(server)
    assert len(got) == len(rows), f"{len(rows)} generated, {len(got)} stored"
    assert got == rows  # every reading once, in order, with its exact values
    report.put("sensor", "generated", len(rows))
    report.put("sensor", "stored", len(got))
    report.put("sensor", "server_kills", len(downtimes))
    report.put("sensor", "downtimes_s", downtimes)
    report.put("sensor", "lost", 0)
    report.put("sensor", "duplicated", 0)
