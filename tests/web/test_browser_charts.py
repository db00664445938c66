"""Charts an engineer can work with, in Debian's Chromium against the real server: drag to zoom,
the range in the URL (survives a reload), double-click back, pan earlier/later, fault names in the legend."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.harness import Server
from tests.web.browser_helpers import expect, open_live, shot

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def server(tmp_path_factory, model_dir, scenario):
    with Server(tmp_path_factory.mktemp("browser-charts") / "data", model_dir,
                args=[*scenario["args"], "--no-access-log"]) as srv:
        now = datetime.now(UTC).replace(microsecond=0)
        srv.send([{**scenario["healthy"][k % len(scenario["healthy"])],
                   "Time": (now - timedelta(seconds=600 - 5 * k)).strftime("%Y-%m-%d %H:%M:%S")} for k in range(120)])
        yield srv


def query(page) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(page.url).query).items()}


def test_drag_zooms_into_the_url_a_reload_keeps_it_and_a_double_click_goes_back(server, open_context):
    ctx, _ = open_context(viewport={"width": 1440, "height": 900})
    page = open_live(ctx, server.url + "/?range=15m")
    plot = page.locator("#charts .chart-box .u-over").last  # the fault chart's drawing area
    expect(plot).to_be_visible()
    plot.scroll_into_view_if_needed()
    box = plot.bounding_box()
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + box["width"] * 0.3, y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.6, y, steps=8)
    page.mouse.up()
    expect(page.locator("#live-mode")).to_have_text("fixed range")
    q = query(page)
    assert q["range"] == "custom" and q["from"] == "15m", q
    start, end = (datetime.fromisoformat(q[k].replace("Z", "+00:00")) for k in ("start", "end"))
    assert timedelta(minutes=3) < end - start < timedelta(minutes=6), (start, end)  # 30 % of 15 min
    expect(page.locator("#custom-range")).to_be_visible()

    page.reload()
    expect(page.locator("#live-mode")).to_have_text("fixed range")
    assert query(page)["start"] == q["start"] and query(page)["end"] == q["end"]
    expect(page.locator("#ranges button[data-range=custom]")).to_have_attribute("aria-pressed", "true")
    shot(page, "charts-zoomed.png")

    page.locator("#charts .chart-box").last.dblclick()
    expect(page.locator("#live-mode")).to_have_text("live")
    back = query(page)
    assert back["range"] == "15m" and "start" not in back and "from" not in back, back


def spans(q: dict[str, str]) -> tuple[datetime, ...]:
    return tuple(datetime.fromisoformat(q[k].replace("Z", "+00:00")) for k in ("start", "end"))


def test_earlier_and_later_pan_by_half_the_span_in_the_url_and_with_the_keyboard(server, open_context):
    ctx, _ = open_context(viewport={"width": 1440, "height": 900})
    page = open_live(ctx, server.url + "/?range=15m")
    page.get_by_role("button", name="Earlier").click()  # from a live range: that window, half a span back
    expect(page.locator("#live-mode")).to_have_text("fixed range")
    start, end = spans(query(page))
    assert end - start == timedelta(minutes=15), (start, end)
    assert timedelta(minutes=7) < datetime.now(UTC) - end < timedelta(minutes=9), end
    later = page.get_by_role("button", name="Later")
    later.focus()
    page.keyboard.press("Enter")
    start2, end2 = spans(query(page))
    assert end2 - start2 == timedelta(minutes=15) and start2 - start == timedelta(seconds=450), (start2, start)
    page.reload()
    assert spans(query(page)) == (start2, end2)
    page.get_by_role("button", name="Later").click()  # never past now: the window ends at now
    start3, end3 = spans(query(page))
    assert end3 - start3 == timedelta(minutes=15) and abs(datetime.now(UTC) - end3) < timedelta(seconds=30)
    shot(page, "charts-panned.png")


def test_a_pause_in_the_data_is_drawn_as_a_gap_and_steady_data_as_one_line(server, tmp_path, model_dir, scenario,
                                                                             open_context):
    ctx, _ = open_context(viewport={"width": 1440, "height": 900})
    page = open_live(ctx, server.url + "/?range=15m")  # readings every 5 s for 10 minutes
    expect(page.locator("#charts .chart-box").first).to_have_attribute("data-gaps", "0")
    with Server(tmp_path / "gap", model_dir, args=[*scenario["args"], "--no-access-log"]) as paused:
        now = datetime.now(UTC).replace(microsecond=0)
        times = [now - timedelta(minutes=50) + timedelta(seconds=5 * k) for k in range(60)]
        times += [now - timedelta(minutes=20) + timedelta(seconds=5 * k) for k in range(60)]  # after 25 silent minutes
        paused.send([{**scenario["healthy"][k % len(scenario["healthy"])], "Time": t.strftime("%Y-%m-%d %H:%M:%S")}
                     for k, t in enumerate(times)])
        ctx2, _ = open_context(hosts={f"127.0.0.1:{paused.port}"}, viewport={"width": 1440, "height": 900})
        page = open_live(ctx2, paused.url + "/?range=1h")
        for box in page.locator("#charts .chart-box").all():
            expect(box).to_have_attribute("data-gaps", "1")
        shot(page, "charts-gap.png")


def test_the_fault_legend_names_the_catalogue_faults(server, open_context):
    ctx, _ = open_context(viewport={"width": 1440, "height": 900})
    page = open_live(ctx, server.url + "/")
    catalogue = {c["fault"]: c["category"] for c in server.get("/api/model")["catalogue"]}
    legend = page.locator("#charts .chart").last.locator(".u-legend")
    for fault, category in catalogue.items():
        expect(legend).to_contain_text(f"{category} ({fault})")
    assert re.search(r"fault0", legend.inner_text())
    note = page.locator("#charts .chart").last.locator(".chart-note")
    expect(note).to_contain_text("0 (none) to 100")
    expect(note).to_contain_text(f"warning from {scenario_warning(server)}")


def scenario_warning(server: Server) -> str:
    return f"{server.get('/api/model')['thresholds']['warning']:g}"
