"""The dominant-fault card says why (GET /api/explain) and when the data is unlike the model's
training data (drift), in Debian's Chromium against the real server with the bundled model."""

from __future__ import annotations

import json
import re
import time

import pytest

from edge.fdrest import FEATURES
from tests.harness import BUNDLED, Server
from tests.web.browser_helpers import expect, open_live, shot

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]

STATS = json.loads((BUNDLED / "manifest.json").read_text())["training_stats"]["features"]


def body(machine: str, **sigmas: float) -> dict:
    out = {f: STATS[f]["mean"] + sigmas.get(f.replace(" ", "_"), 0.0) * STATS[f]["std"] for f in FEATURES}
    return {**out, "machine": machine}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("browser-explain")
    # readings pushed 8 σ out lie outside the training data (suspect): here they are to raise fault
    # alarms, so suspect readings count (tests/alarms/test_quality_alarms.py has the default policy)
    rules = base / "rules.json"
    rules.write_text(json.dumps({"defaults": {"suspect": "count"}, "quality": {"alarm": False}}))
    with Server(base / "data", BUNDLED, args=["--drift-interval", "0.2", "--drift-window", "30",
                                             "--alarm-rules", str(rules), "--no-access-log"]) as srv:
        yield srv


def test_the_card_names_the_driving_feature_then_says_healthy_without_causes(server, open_context):
    ctx, _ = open_context(viewport={"width": 1280, "height": 900})
    page = open_live(ctx, server.url + "/")
    faults = server.send(body("pump-1", PEAK_Axial=8.0))
    assert max(faults.values()) >= 30, faults
    expect(page.locator("#dom-why")).to_contain_text(re.compile(r"Peak acceleration, axial \+8\.0 σ"), timeout=5000)
    expect(page.locator("#dom-detail")).to_be_visible()
    shot(page, "dashboard-explained.png")
    server.send(body("pump-1"))
    expect(page.locator("#dom-name")).to_have_text("Healthy", timeout=5000)
    expect(page.locator("#dom-detail")).to_be_hidden()
    expect(page.locator("#dom-note")).to_contain_text("below the warning threshold")


def test_a_drifted_machine_is_said_on_the_card(server, open_context):
    hot = [{**body("pump-hot", Temperature=6.0), "Time": f"2024-06-01 10:00:{k:02d}"} for k in range(40)]
    server.send(hot)
    deadline = time.monotonic() + 10
    while not (drift := {m["machine"]: m["drift"] for m in server.get("/api/machines")["machines"]}.get("pump-hot")):
        assert time.monotonic() < deadline, "the appliance never scored pump-hot's drift"
        time.sleep(0.1)
    assert drift["drifted"]
    ctx, _ = open_context(viewport={"width": 1280, "height": 900})
    page = open_live(ctx, server.url + "/?machine=pump-hot")
    note = page.locator("#dom-drift")
    expect(note).to_be_visible(timeout=20000)
    expect(note).to_contain_text("Temperature")
    expect(note).to_contain_text("Trust the fault values less")


def test_an_alarm_says_what_drove_it(server, open_context):
    server.send([{**body("press-9", PEAK_Axial=8.0), "Time": f"2024-06-02 10:00:{k:02d}"} for k in range(10)])
    ctx, _ = open_context(viewport={"width": 1280, "height": 900})
    page = open_live(ctx, server.url + "/?machine=press-9")
    alarm = page.locator("li.alarm[data-state=active]").filter(has_text="press-9").first
    expect(alarm).to_be_visible(timeout=10000)
    expect(alarm.locator(".alarm-why")).to_contain_text(re.compile(r"Peak acceleration, axial \+8\.0 σ"), timeout=5000)
    shot(page, "alarm-explained.png")
