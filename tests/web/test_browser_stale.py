"""Stale machines and an offline appliance on every page, in Debian's Chromium against the real
server (tests/web/conftest.py's fixtures): the module's server runs with --stale-after 1, so a
machine is stale a second after its reading, without waiting for minutes."""

from __future__ import annotations

import re
import time

import pytest

from tests.harness import Server
from tests.web.browser_helpers import expect, open_live, shot

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def server(tmp_path_factory, model_dir, scenario):
    base = tmp_path_factory.mktemp("browser-stale")
    args = [*scenario["args"], "--stale-after", "1", "--no-access-log"]
    with Server(base / "data", model_dir, args=args, power_cut=True) as srv:
        yield srv


def stale_in_api(srv: Server, machine: str) -> bool:
    listed = {m["machine"]: m for m in srv.get("/api/machines")["machines"]}
    return machine in listed and listed[machine]["stale"]


def wait_stale(srv: Server, machine: str) -> None:
    deadline = time.monotonic() + 10
    while not stale_in_api(srv, machine):
        assert time.monotonic() < deadline, f"{machine} never turned stale"
        time.sleep(0.1)


def test_a_stale_machine_is_greyed_with_its_age_and_a_banner_on_every_page(server, scenario, open_context):
    machine = "press-7"
    server.send({"machine": machine, **scenario["healthy"][0]})
    wait_stale(server, machine)
    ctx, _ = open_context(viewport={"width": 1280, "height": 900})

    page = open_live(ctx, server.url + "/")
    banner = page.locator("#status-banner")
    expect(banner).to_be_visible()
    expect(banner).to_contain_text("Stale machine")
    expect(banner).to_contain_text(re.compile(r"press-7 — last reading \d+ s ago"))
    for card in ("#dominant", "#faults-card", "#latest-card"):
        expect(page.locator(card)).to_have_class(re.compile(r"\bis-stale\b"))
    seen = page.locator("#machine-seen")
    expect(seen).to_have_text(re.compile(r"^last reading \d+ s ago$"))
    first = seen.inner_text()
    expect(seen).not_to_have_text(first, timeout=5000)  # it keeps counting
    expect(page.locator("#stale-note")).to_contain_text("press-7 is silent")
    shot(page, "stale-dashboard.png")

    table = ctx.new_page()
    table.goto(server.url + "/dashboard")
    expect(table.locator("#status-banner")).to_contain_text("press-7")
    expect(table.locator('#rows tr[data-machine="press-7"]').first).to_have_class(re.compile(r"\bis-stale\b"))
    report = ctx.new_page()
    report.goto(server.url + "/report")
    expect(report.locator("#status-banner")).to_contain_text(re.compile(r"press-7 — last reading \d+ s ago"))

    # it speaks again: fresh at once on the live pages, greyed again a second later
    server.send({"machine": machine, **scenario["healthy"][0]})
    expect(page.locator("#faults-card")).not_to_have_class(re.compile(r"\bis-stale\b"), timeout=5000)
    expect(page.locator("#faults-card")).to_have_class(re.compile(r"\bis-stale\b"), timeout=10000)


def test_an_unreachable_appliance_puts_offline_in_the_banner(server, scenario, open_context):
    server.send({"machine": "press-8", **scenario["healthy"][0]})
    ctx, _ = open_context(viewport={"width": 1280, "height": 900})
    page = open_live(ctx, server.url + "/")
    report = ctx.new_page()
    report.goto(server.url + "/report")
    expect(report.locator("#status-banner")).to_be_visible()  # press-7 and press-8 stale
    server.kill()
    try:
        offline = page.locator("#status-banner .banner-offline")
        expect(offline).to_contain_text("Offline", timeout=30000)
        expect(offline).to_contain_text("no live data from the appliance")
        shot(page, "stale-offline.png")
        expect(report.locator("#status-banner .banner-offline")).to_contain_text("Offline", timeout=30000)
    finally:
        server.start()
