"""The fleet overview of a new appliance, and one machine, in Debian's Chromium against the real
server: /machines says nothing has sent yet, the first machine's tile appears live, and with a
single machine `/` stays the machine's dashboard as before (no overview link)."""

from __future__ import annotations

import pytest

from tests.harness import Server
from tests.web.browser_helpers import expect, open_live

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def server(tmp_path_factory, unchecked_model_dir, scenario):
    base = tmp_path_factory.mktemp("browser-fleet-single")
    with Server(base / "data", unchecked_model_dir, args=[*scenario["args"], "--no-access-log"], power_cut=True) as srv:
        yield srv


def test_an_empty_appliance_then_its_first_machine(server, scenario, open_context):
    ctx, _ = open_context(viewport={"width": 1280, "height": 900})
    page = open_live(ctx, server.url + "/machines")
    expect(page.locator("#empty")).to_be_visible()
    expect(page.locator("#summary")).to_have_text("No machines yet.")
    server.send({"machine": "solo", **scenario["ok"][0]})
    expect(page.locator('#tiles li[data-machine="solo"]')).to_have_attribute("data-state", "normal", timeout=5000)
    expect(page.locator("#empty")).to_be_hidden()
    expect(page.locator("#summary")).to_have_text("1 machine · 1 normal")

    live = open_live(ctx, server.url + "/")
    expect(live.locator("#machine-one")).to_have_text("solo")
    expect(live.locator("#fleet-link")).to_be_hidden()
    assert live.url == server.url + "/?range=15m"  # the dashboard, as before: no redirect
