"""The fleet overview when a sensor stops or the appliance goes away, in Debian's Chromium against
the real server run with --stale-after 2: the silent machine's tile turns stale on time without a
reload (greyed, dashed, first in the grid) while one that keeps sending stays normal, and its next
reading makes it fresh at once; with the appliance unreachable the whole grid is greyed under the
banner's "Offline"."""

from __future__ import annotations

import re
import time

import pytest

from tests.harness import Server
from tests.web.browser_helpers import expect, open_live, shot

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def server(tmp_path_factory, unchecked_model_dir, scenario):
    base = tmp_path_factory.mktemp("browser-fleet-stale")
    with Server(base / "data", unchecked_model_dir, args=[*scenario["args"], "--stale-after", "2", "--no-access-log"],
                power_cut=True) as srv:
        yield srv


def test_a_machine_that_stops_sending_turns_stale_on_the_overview_and_fresh_when_it_speaks(
        server, scenario, open_context):
    healthy = scenario["ok"][0]
    for machine in ("talker", "quiet"):
        server.send({"machine": machine, **healthy})
    ctx, _ = open_context(viewport={"width": 1280, "height": 900})
    page = open_live(ctx, server.url + "/machines")
    quiet = page.locator('#tiles li[data-machine="quiet"]')
    talker = page.locator('#tiles li[data-machine="talker"]')
    expect(quiet).to_have_attribute("data-state", "normal")

    deadline = time.monotonic() + 15
    while quiet.get_attribute("data-state") != "stale":  # the talker keeps talking meanwhile
        assert time.monotonic() < deadline, "the silent machine never turned stale on the page"
        server.send({"machine": "talker", **healthy})
        time.sleep(0.3)
    expect(quiet).to_have_class(re.compile(r"\bis-stale\b"))
    expect(quiet.locator(".tile-state")).to_have_text("stale")
    expect(quiet.locator(".tile-ago")).to_have_text(re.compile(r"^\d+ s ago$"))
    assert quiet.locator(".tile-link").evaluate("e => getComputedStyle(e).borderTopStyle") == "dashed"
    assert quiet.locator(".tile-fault").evaluate("e => getComputedStyle(e).filter") == "grayscale(1)"
    expect(talker).to_have_attribute("data-state", "normal")
    assert page.locator("#tiles li").first.get_attribute("data-machine") == "quiet"  # worst first
    expect(page.locator("#status-banner")).to_contain_text("quiet")
    shot(page, "fleet-stale.png")

    server.send({"machine": "quiet", **healthy})
    expect(quiet).to_have_attribute("data-state", "normal", timeout=3000)
    expect(quiet).not_to_have_class(re.compile(r"\bis-stale\b"))


def test_an_unreachable_appliance_greys_the_whole_grid_and_says_offline(server, scenario, open_context):
    server.send({"machine": "talker", **scenario["ok"][0]})
    ctx, _ = open_context(viewport={"width": 1280, "height": 900})
    page = open_live(ctx, server.url + "/machines")
    expect(page.locator("#tiles")).not_to_have_class(re.compile(r"\bis-offline\b"))
    server.kill()
    try:
        expect(page.locator("#status-banner")).to_contain_text("Offline", timeout=30_000)
        expect(page.locator("#tiles")).to_have_class(re.compile(r"\bis-offline\b"), timeout=30_000)
        shot(page, "fleet-offline.png")
    finally:
        server.start()
    expect(page.locator("#conn")).to_have_attribute("data-state", "live", timeout=30_000)
    expect(page.locator("#tiles")).not_to_have_class(re.compile(r"\bis-offline\b"))
