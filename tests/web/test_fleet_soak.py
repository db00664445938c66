"""The fleet overview (/machines) held open while 200 machines send: a sender thread posts one
batch a second with a reading of every machine (200 readings/s; every 5th second one machine's
reading is alarm-level, so tiles change state, re-sort, and alarm events arrive), in Debian's
Chromium against the real server (the fixtures of tests/web/conftest.py).

Runs FDEDGE_FLEET_SOAK_S seconds (default 60); marked `soak` (and `browser`), so `make soak` runs
it and `make test` does not. Writes test-output/fleet-soak.json (probes, heap, DOM nodes).

Checked (the bounds):
- after LAG_GRACE_S, the page never shows a newest reading older than the one stored MAX_LAG_S
  earlier (probed every second): it keeps up with 200 readings/s;
- at the end every tile shows its machine's newest stored reading;
- JS heap after a forced GC at the end < HEAP_GROWTH x at the reference sample (half the run);
  DOM nodes at the end within DOM_SLACK of the reference (200 tiles, nothing piling up);
- the stream stays live, and (browser_helpers' Watch) no console or page errors, no request to
  any other host.
"""

from __future__ import annotations

import json
import os
import threading
import time

import pytest

from tests.harness import REPO, Server
from tests.reliability_helpers import get, post
from tests.web.browser_helpers import expect, open_live, shot

SOAK_S = float(os.environ.get("FDEDGE_FLEET_SOAK_S") or 60)
FLEET = 200
LAG_GRACE_S = 5.0
MAX_LAG_S = 3.0
HEAP_GROWTH = 2.0
DOM_SLACK = 50
OUT = REPO / "test-output"

pytestmark = [pytest.mark.soak, pytest.mark.browser, pytest.mark.timeout(int(SOAK_S) + 300)]


@pytest.fixture(scope="module")
def server(tmp_path_factory, model_dir, scenario):
    base = tmp_path_factory.mktemp("fleet-soak")
    with Server(base / "data", model_dir, args=[*scenario["args"], "--no-access-log"], power_cut=True) as srv:
        yield srv


class Sender(threading.Thread):
    """One batch a second, a reading of every machine; `stored` is (monotonic s, newest id) per batch."""

    def __init__(self, port: int, healthy: list[dict], strong: dict) -> None:
        super().__init__(daemon=True)
        self.port, self.healthy, self.strong = port, healthy, strong
        self.stop = threading.Event()
        self.stored: list[tuple[float, int]] = []
        self.failures: list[str] = []

    def run(self) -> None:
        k = 0
        while not self.stop.is_set():
            started = time.monotonic()
            hot = k % FLEET if k % 5 == 0 else None
            rows = [self.strong if i == hot else self.healthy[(i + k) % len(self.healthy)] for i in range(FLEET)]
            batch = [{"machine": f"m-{i:03d}", **row} for i, row in enumerate(rows)]
            r = post(self.port, batch, timeout=10)
            if r.status != 200:
                self.failures.append(f"{r.status}: {r.text[:200]}")
            else:  # the answer holds the faults, not the ids: the newest id is asked for
                newest = get(self.port, "/api/latest?limit=1", timeout=10).json()["readings"][0]["id"]
                self.stored.append((time.monotonic(), int(newest)))
            k += 1
            self.stop.wait(max(0.0, 1.0 - (time.monotonic() - started)))


def test_the_overview_keeps_up_with_200_machines(server, scenario, open_context):
    sender = Sender(server.port, scenario["healthy"], scenario["strong"])
    sender.start()
    try:
        while not sender.stored:  # every machine exists before the page opens
            time.sleep(0.1)
        ctx, _ = open_context(viewport={"width": 1440, "height": 900})
        page = open_live(ctx, server.url + "/machines")
        expect(page.locator("#tiles li")).to_have_count(FLEET)
        session = ctx.new_cdp_session(page)
        session.send("Performance.enable")

        def heap_mb() -> float:
            session.send("HeapProfiler.collectGarbage")
            metrics = {m["name"]: m["value"] for m in session.send("Performance.getMetrics")["metrics"]}
            return round(metrics["JSHeapUsedSize"] / 2**20, 2)

        def dom_nodes() -> int:
            return page.evaluate("document.getElementsByTagName('*').length")

        probes, reference = [], None
        t0 = time.monotonic()
        while (elapsed := time.monotonic() - t0) < SOAK_S:
            page.wait_for_timeout(1000)
            shown = page.evaluate("Math.max(0, ...[...document.querySelectorAll('#tiles li')]"
                                  ".map((e) => Number(e.dataset.id) || 0))")
            now = time.monotonic()
            due = [i for t, i in sender.stored if t <= now - MAX_LAG_S]
            probe = {"t": round(elapsed, 1), "shown": shown, "stored": sender.stored[-1][1],
                     "conn": page.get_attribute("#conn", "data-state")}
            probes.append(probe)
            if elapsed > LAG_GRACE_S and due:
                assert shown >= due[-1], f"the page is more than {MAX_LAG_S} s behind: {probe}"
            assert probe["conn"] == "live", probe
            if reference is None and elapsed >= SOAK_S / 2:
                reference = {"heap_mb": heap_mb(), "dom": dom_nodes(), "t": round(elapsed, 1)}
    finally:
        sender.stop.set()
        sender.join(10)
    assert not sender.failures, sender.failures[:3]
    assert len(sender.stored) >= 0.9 * SOAK_S, f"only {len(sender.stored)} batches in {SOAK_S:.0f} s"

    newest = {m["machine"]: m["last_id"] for m in server.get("/api/fleet")["machines"]}
    page.wait_for_function("(want) => Object.entries(want).every(([n, id]) => "
                           "Number(document.querySelector(`#tiles li[data-machine=\"${n}\"]`)?.dataset.id) === id)",
                           arg=newest, timeout=10_000)
    end = {"heap_mb": heap_mb(), "dom": dom_nodes()}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "fleet-soak.json").write_text(json.dumps(
        {"seconds": SOAK_S, "machines": FLEET, "batches": len(sender.stored), "reference": reference,
         "end": end, "probes": probes}, indent=1))
    shot(page, "fleet-soak.png")
    assert reference is not None
    assert end["heap_mb"] < HEAP_GROWTH * reference["heap_mb"], (reference, end)
    assert abs(end["dom"] - reference["dom"]) <= DOM_SLACK, (reference, end)
