"""The fleet overview (/machines) with 200 machines, in Debian's Chromium against the real server
(tests/web/conftest.py's fixtures, which also fail a test on a console error, a page error or a
request to another host): tiles worst first, the filter in the URL, a new machine live, a machine
whose newest reading is from 2023 visibly stale, one screen at 1440 x 900, no sideways scrolling at
390 px."""

from __future__ import annotations

import re
import time
import urllib.parse

import pytest

from tests.harness import Server
from tests.web.browser_helpers import PHONE, SHOTS, expect, open_live, shot

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]

FLEET = 200
HOT = ("m-007", "m-123", "m-199")  # the exaggerated reading: alarm
OLD = "m-042"  # its newest reading's own time is 2023-11-06: stale, whatever its values say
RANK = {"normal": 0, "warning": 1, "alarm": 2, "stale": 3, "suspect": 4}
VISIBLE = "#tiles li:not([hidden])"


def name(i: int) -> str:
    return f"m-{i:03d}"


@pytest.fixture(scope="module")
def server(tmp_path_factory, unchecked_model_dir, scenario):
    base = tmp_path_factory.mktemp("browser-fleet")
    with Server(base / "data", unchecked_model_dir, args=[*scenario["args"], "--no-access-log"], power_cut=True) as srv:
        healthy = scenario["ok"]
        batch = []
        for i in range(FLEET):
            n = name(i)
            values = scenario["strong"] if n in HOT else healthy[i % len(healthy)]
            row = {"machine": n, **values}
            if n == OLD:
                row["Time"] = "2023-11-06 16:00:00"
            batch.append(row)
        status, body = srv.request("POST", "/send", batch)
        assert status == 200, body
        yield srv


def alarm_count(srv: Server, machine: str) -> int:
    return {m["machine"]: m for m in srv.get("/api/fleet")["machines"]}[machine]["alarms"]["count"]


def states_in_order(page) -> list[str]:
    return page.locator(VISIBLE).evaluate_all("els => els.map((e) => e.dataset.state)")


def names_in_order(page) -> list[str]:
    return page.locator(VISIBLE).evaluate_all("els => els.map((e) => e.dataset.machine)")


def test_200_machines_worst_first_with_state_alarms_dominant_fault_and_sparkline(server, scenario, open_context):
    model = server.get("/api/model")
    categories = {c["fault"]: c["category"] for c in model["catalogue"]}
    fleet = {m["machine"]: m for m in server.get("/api/fleet")["machines"]}
    assert len(fleet) == FLEET
    ctx, _ = open_context(viewport={"width": 1440, "height": 900})
    page = open_live(ctx, server.url + "/machines")
    tiles = page.locator(VISIBLE)
    expect(tiles).to_have_count(FLEET)

    states = states_in_order(page)
    ranks = [RANK[s] for s in states]
    assert ranks == sorted(ranks, reverse=True), states
    assert states[0] == "stale" and names_in_order(page)[0] == OLD
    assert set(names_in_order(page)[1:1 + len(HOT)]) == set(HOT)
    assert set(states[1:1 + len(HOT)]) == {"alarm"}
    assert states[-1] == "normal"

    for n in (*HOT, OLD, name(1)):
        tile = page.locator(f'#tiles li[data-machine="{n}"]')
        faults = fleet[n]["latest"]["faults"]
        dominant = max(faults, key=faults.get)
        expect(tile.locator(".tile-cat")).to_have_text(categories[dominant])  # the catalogue's name
        count = fleet[n]["alarms"]["count"]
        expect(tile.locator(".tile-alarms")).to_have_text(f"{count} alarm{'s' if count != 1 else ''}" if count else "")
        # last seen (arrival); for the 2023 reading, heard just now: how old its data is
        ago = r"^data \d+ days old$" if n == OLD else r"^\d+ (s|min) ago$"
        expect(tile.locator(".tile-ago")).to_have_text(re.compile(ago))
        # the absolute time says its zone
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC([+−]\d\d:\d\d)?",
                            tile.locator(".tile-when").text_content()), n
        assert int(tile.locator("svg.spark").get_attribute("data-points")) >= 1
        assert tile.locator("svg.spark path").get_attribute("d").startswith("M")
        expect(tile.locator("a")).to_have_attribute("href", f"/?machine={urllib.parse.quote(n)}")

    # the 2023 reading is stale: greyed, dashed, the word, and not its old colour
    old = page.locator(f'#tiles li[data-machine="{OLD}"]')
    expect(old).to_have_class(re.compile(r"\bis-stale\b"))
    expect(old.locator(".tile-state")).to_have_text("stale")
    assert "2023-11-06" in old.locator(".tile-when").get_attribute("title")
    assert old.locator(".tile-link").evaluate("e => getComputedStyle(e).borderTopStyle") == "dashed"
    for n in HOT:
        expect(page.locator(f'#tiles li[data-machine="{n}"] .tile-state')).to_have_text("alarm")
    expect(page.locator("#summary")).to_contain_text(f"{FLEET} machines")

    # 200 machines on one 1440 x 900 screen, without scrolling sideways
    bottom = page.evaluate("Math.max(...[...document.querySelectorAll('#tiles li')]"
                           ".map((e) => e.getBoundingClientRect().bottom))")
    shot(page, "fleet-200-1440.png")
    assert bottom <= 900, f"the 200th tile ends at {bottom:.0f} px"
    assert page.evaluate("document.documentElement.scrollWidth") <= 1440
    shot(page, "fleet-200-1440.png")


def test_the_filter_is_in_the_url_and_survives_a_reload(server, open_context):
    ctx, _ = open_context(viewport={"width": 1440, "height": 900})
    page = open_live(ctx, server.url + "/machines")
    expect(page.locator(VISIBLE)).to_have_count(FLEET)
    page.get_by_label("Filter machines by name").fill("m-01")
    expect(page.locator(VISIBLE)).to_have_count(10)  # m-010 .. m-019
    assert sorted(names_in_order(page)) == [name(i) for i in range(10, 20)]
    assert urllib.parse.parse_qs(urllib.parse.urlsplit(page.url).query) == {"q": ["m-01"]}
    expect(page.locator("#summary")).to_contain_text("showing 10 of 200 machines")
    page.reload()
    expect(page.get_by_label("Filter machines by name")).to_have_value("m-01")
    expect(page.locator(VISIBLE)).to_have_count(10)
    page.get_by_label("Filter machines by name").fill("")
    expect(page.locator(VISIBLE)).to_have_count(FLEET)
    assert "q=" not in page.url


def test_a_new_machine_appears_live_and_an_alarm_moves_it_to_the_top(server, scenario, open_context):
    ctx, _ = open_context(viewport={"width": 1440, "height": 900})
    page = open_live(ctx, server.url + "/machines")
    expect(page.locator(VISIBLE)).to_have_count(FLEET)
    server.send({"machine": "zz-new-press", **scenario["ok"][0]})
    tile = page.locator('#tiles li[data-machine="zz-new-press"]')
    expect(tile).to_have_count(1, timeout=5000)  # no reload
    expect(tile).to_have_attribute("data-state", "normal")
    expect(page.locator(VISIBLE)).to_have_count(FLEET + 1)
    server.send({"machine": "zz-new-press", **scenario["strong"]})
    expect(tile).to_have_attribute("data-state", "alarm", timeout=5000)
    names = names_in_order(page)
    assert names.index("zz-new-press") <= len(HOT) + 1  # behind only the stale one and the other alarms
    assert names.index("zz-new-press") < names.index(name(0))

    # two more in a row raise its alarms (`consecutive` 3): the count arrives with the alarm event
    for _ in range(2):
        server.send({"machine": "zz-new-press", **scenario["strong"]})
    deadline = time.monotonic() + 10
    while not (raised := alarm_count(server, "zz-new-press")):
        assert time.monotonic() < deadline, "the strong readings raised no alarm"
        time.sleep(0.1)
    expect(tile.locator(".tile-alarms")).to_have_text(f"{raised} alarm{'s' if raised != 1 else ''}", timeout=5000)
    expect(page.locator("#alarm-count")).not_to_have_text("no alarms")


def test_a_phone_shows_the_tiles_without_sideways_scrolling(server, open_context):
    ctx, _ = open_context(viewport=PHONE, is_mobile=True, has_touch=True)
    page = open_live(ctx, server.url + "/machines")
    expect(page.locator("#tiles li").first).to_be_visible()
    expect(page.locator(VISIBLE)).to_have_count(len(server.get("/api/fleet")["machines"]), timeout=5000)
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "fleet-phone-390-all.png"))  # the first screen of 200
    first = page.locator("#tiles li").first.bounding_box()
    assert first["x"] >= 0 and first["x"] + first["width"] <= PHONE["width"]
    page.get_by_label("Filter machines by name").fill(OLD)
    expect(page.locator(VISIBLE)).to_have_count(1)
    expect(page.locator(f'#tiles li[data-machine="{OLD}"] .tile-when')).to_be_visible()  # absolute time on a phone
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    shot(page, "fleet-phone-390.png")


def test_the_dashboard_links_the_overview_when_there_is_more_than_one_machine(server, open_context):
    ctx, _ = open_context(viewport={"width": 1280, "height": 900})
    page = open_live(ctx, server.url + "/")
    link = page.locator("#fleet-link")
    expect(link).to_be_visible()
    expect(link).to_contain_text(re.compile(r"\d+ machines"))
    expect(link).to_have_attribute("href", "/machines")
    expect(page.get_by_role("navigation", name="Pages").get_by_role("link", name="Machines")).to_have_attribute(
        "href", "/machines")
