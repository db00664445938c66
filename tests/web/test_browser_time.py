"""Honest time (issue 19 item 2) in Debian's Chromium against the real server: every timestamp on
the pages says its zone, and one page-wide choice of local time or UTC, remembered in
localStorage, applies to every page. The browser runs in Europe/Berlin (UTC+01:00 in winter) so
local time and UTC differ."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

import pytest

from tests.harness import Server
from tests.web.browser_helpers import expect, open_live, shot

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]

BERLIN_WINTER = timezone(timedelta(hours=1))
WHEN = datetime(2026, 1, 15, 9, 30, 5, tzinfo=UTC)  # January: Berlin is UTC+01:00
PAGES = ("/", "/dashboard", "/report", "/machines")


@pytest.fixture(scope="module")
def server(tmp_path_factory, model_dir, scenario):
    base = tmp_path_factory.mktemp("browser-time")
    with Server(base / "data", model_dir, args=[*scenario["args"], "--no-access-log"], power_cut=True) as srv:
        for machine in ("press-1", "press-2"):
            srv.send({"machine": machine, "Time": WHEN.strftime("%Y-%m-%d %H:%M:%S"), **scenario["healthy"][0]})
        yield srv


def as_shown(when: datetime, zone: str) -> str:
    if zone == "UTC":
        return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") + " UTC"
    return when.astimezone(BERLIN_WINTER).strftime("%Y-%m-%d %H:%M:%S") + " UTC+01:00"


def test_every_page_offers_local_or_utc_and_remembers_the_choice(server, open_context):
    ctx, _ = open_context(viewport={"width": 1280, "height": 900}, timezone_id="Europe/Berlin")
    page = open_live(ctx, server.url + "/?machine=press-1")
    expect(page.locator("#latest-time")).to_have_text(as_shown(WHEN, "local"))
    for path in PAGES:
        other = ctx.new_page()
        other.goto(server.url + path)
        picker = other.get_by_label("Times in")
        expect(picker).to_have_value("local")
        assert picker.locator("option").all_text_contents() == ["local (UTC+01:00)", "UTC"], path
        other.close()

    page.get_by_label("Times in").select_option("UTC")
    expect(page.locator("#latest-time")).to_have_text(as_shown(WHEN, "UTC"))
    expect(page.locator("#chart-zone")).to_have_text("(UTC)")
    assert page.evaluate("localStorage.getItem('fdedge.timeZone')") == "UTC"
    shot(page, "time-utc-dashboard.png")

    table = ctx.new_page()  # another page of the same browser: the same choice
    table.goto(server.url + "/dashboard")
    expect(table.get_by_label("Times in")).to_have_value("UTC")
    expect(table.locator("#head th").nth(1)).to_have_text("time (UTC)")
    expect(table.locator('#rows tr[data-machine="press-1"] td').nth(1)).to_have_text(as_shown(WHEN, "UTC")[:-4])

    fleet = ctx.new_page()
    fleet.goto(server.url + "/machines")
    when = fleet.locator('#tiles li[data-machine="press-1"] .tile-when')
    expect(when).to_have_text(re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC$"))
    assert as_shown(WHEN, "UTC") in when.get_attribute("title")  # the reading's own time, same zone
    expect(fleet.locator("#zone-name")).to_have_text("UTC")

    fleet.get_by_label("Times in").select_option("local")
    expect(when).to_have_text(re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC\+01:00$"))
    assert as_shown(WHEN, "local") in when.get_attribute("title")
    page.reload()
    expect(page.locator("#latest-time")).to_have_text(as_shown(WHEN, "local"))
    expect(page.locator("#chart-zone")).to_have_text("(UTC+01:00)")


def test_a_custom_chart_range_is_read_in_the_chosen_zone(server, open_context):
    """The From/To inputs say their zone, and a UTC range asks the appliance for those UTC times."""
    ctx, _ = open_context(viewport={"width": 1280, "height": 900}, timezone_id="Europe/Berlin")
    page = open_live(ctx, server.url + "/?machine=press-1")
    page.get_by_label("Times in").select_option("UTC")
    wait = page.locator("#conn")
    expect(wait).to_have_attribute("data-state", "live", timeout=10_000)
    page.get_by_role("button", name="Custom").click()
    expect(page.locator("#custom-zone")).to_have_text("UTC")
    page.fill("#custom-start", "2026-01-15T09:00:00")
    page.fill("#custom-end", "2026-01-15T10:00:00")
    with page.expect_request(lambda r: "/api/series" in r.url) as asked:
        page.get_by_role("button", name="Show").click()
    url = asked.value.url
    assert "start=2026-01-15T09%3A00%3A00Z" in url and "end=2026-01-15T10%3A00%3A00Z" in url, url
