"""Values as a plant engineer reads them (issue 19 items 2, 3, 6), in Debian's Chromium against the
real server: fault intensities shown clamped to 0..100 on every page while the API keeps the model's
own value; the report's days and CSV times in the page's zone; units on the charts' axes, in the
feature grid and the table; every page readable at 390 px without a horizontal page scroll.

The server scores with tests/harness.py's linear test model, whose outputs on real readings lie far
below 0 and above 100: what the clamp is for."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.harness import Server, make_linear_model
from tests.web.browser_helpers import PHONE, expect, number, open_live, shot, shown_fault

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]

DESKTOP = {"width": 1440, "height": 900}
PAGES = ("/", "/machines", "/alarms", "/report", "/dashboard", "/models", "/login")
# New York is UTC-05:00 in November: its 20 November runs from 05:00 UTC on the 20th to 05:00 on the 21st.
NY_TIMES = ["2026-11-20 04:59:59", "2026-11-20 05:00:00", "2026-11-20 21:05:00", "2026-11-21 04:59:59",
            "2026-11-21 05:00:00"]


@pytest.fixture(scope="module")
def linear_dir(tmp_path_factory) -> Path:
    pytest.importorskip("onnx")
    directory = tmp_path_factory.mktemp("linear-model")
    make_linear_model(directory)
    return directory


@pytest.fixture(scope="module")
def server(tmp_path_factory, linear_dir, scenario):
    base = tmp_path_factory.mktemp("browser-values")
    with Server(base / "data", linear_dir, args=["--no-access-log"], power_cut=True) as srv:
        for t in NY_TIMES:
            srv.send({"machine": "ny-press", "Time": t, **scenario["healthy"][0]})
        now = datetime.now(UTC).replace(microsecond=0)
        # press-1 as many times as an alarm rule waits for (consecutive readings), newest last
        for i, machine in enumerate(("press-2", *["press-1"] * 5)):
            srv.send({"machine": machine, "Time": (now - timedelta(seconds=10 - i)).strftime("%Y-%m-%d %H:%M:%S"),
                      **scenario["healthy"][0]})
        yield srv


def fault_text(v: float) -> str:
    text = f"{shown_fault(v):.1f}"
    return "0.0" if text == "-0.0" else text


def assert_clamped(cell, raw: float) -> None:
    """cell shows raw clamped to 0..100, and says the model's own value when that changed it."""
    expect(cell).to_have_text(fault_text(raw))
    if shown_fault(raw) != raw:
        assert float(cell.get_attribute("data-raw")) == pytest.approx(raw, rel=1e-6)
        assert "The model answered" in cell.get_attribute("title")
        marker = cell.evaluate("e => getComputedStyle(e, '::before').content")
        assert marker == ('"≥"' if raw > 100 else '"≤"')  # seen without hovering: "≥100.0", "≤0.0"
    else:
        assert cell.get_attribute("data-raw") is None


def test_intensities_outside_0_to_100_are_shown_clamped_and_the_api_keeps_them(server, open_context):
    latest = server.latest("press-1")
    raw = latest["faults"]
    assert min(raw.values()) < 0 and max(raw.values()) > 100, raw  # the linear model's outputs: the case tested
    ctx, _ = open_context(viewport=DESKTOP)

    page = open_live(ctx, server.url + "/?machine=press-1")
    expect(page.locator("#latest-id")).to_have_text(str(latest["id"]))
    for fault, value in raw.items():
        assert_clamped(page.locator(f'#faults li[data-fault="{fault}"] .fault-value'), value)
    top = max(raw.values())
    assert_clamped(page.locator("#dom-value"), top)
    # the charts draw them clamped too: the fault axis never leaves 0..100
    expect(page.locator('.chart-box[data-y-label="intensity 0–100"]')).to_have_count(1)
    # ... and their legend says the model's own value beside the one drawn
    chart = page.locator(".chart").last
    chart.locator(".u-over").scroll_into_view_if_needed()
    box = chart.locator(".u-over").bounding_box()
    page.mouse.move(box["x"] + box["width"] - 3, box["y"] + box["height"] / 2)
    values = chart.locator(".u-legend .u-series .u-value")
    expect(values.nth(1)).not_to_have_text("–")
    for i, (fault, value) in enumerate(raw.items(), start=1):
        text = values.nth(i).text_content()
        if shown_fault(value) == value:
            assert text == fault_text(value), fault
        else:
            head, _, rest = text.partition(" (raw ")
            assert head == fault_text(value) and float(rest.rstrip(")")) == pytest.approx(value, rel=1e-3), text
    shot(page, "values-clamped-dashboard.png")

    table = open_live(ctx, server.url + "/dashboard?machine=press-1")
    row = table.locator(f'#rows tr[data-id="{latest["id"]}"]')
    heads = table.locator("#head th").all_text_contents()
    for fault, value in raw.items():
        assert_clamped(row.locator("td").nth(heads.index(fault)), value)
    assert_clamped(row.locator("td").nth(heads.index("max (0–100)")), top)

    fleet = ctx.new_page()
    fleet.goto(server.url + "/machines")
    assert_clamped(fleet.locator('#tiles li[data-machine="press-1"] .tile-value'), top)

    # the alarms the out-of-range values raised: their peaks as raw in the API, clamped on the pages
    alarms = [a for a in server.get("/api/alarms", machine="press-1")["alarms"] if a.get("kind") != "stale"]
    assert any(a["peak"] > 100 for a in alarms), alarms
    log = ctx.new_page()
    log.goto(server.url + "/alarms?machine=press-1")
    for a in alarms:
        cells = log.locator(f'tr[data-id="{a["id"]}"] td')
        expect(cells.first).to_be_visible()
        peak = [i for i, label in enumerate(cells.evaluate_all("tds => tds.map(t => t.dataset.label)"))
                if label and label.lower().startswith("peak")][0]
        assert_clamped(cells.nth(peak), a["peak"])
    for a in alarms:
        li = page.locator(f'#alarms-active li[data-id="{a["id"]}"]')
        assert number(li.locator(".f-peak dd .mono").text_content()) == pytest.approx(shown_fault(a["peak"]), abs=0.051)

    # the CSV keeps the model's own numbers
    text = ctx.request.get(server.url + "/generate_csv?" + f"start={latest['time'][:10]}&end={latest['time'][:10]}"
                           "&machine=press-1").text()
    row = next(csv.DictReader(io.StringIO(text)))
    for fault, value in raw.items():
        assert float(row[fault]) == pytest.approx(value, rel=1e-6)


def download_rows(page) -> tuple[list[dict[str, str]], str]:
    with page.expect_download() as info:
        page.click("#download")
    download = info.value
    return list(csv.DictReader(io.StringIO(Path(download.path()).read_text()))), download.url


def test_the_report_reads_its_days_in_local_time_and_offers_the_offset(server, open_context):
    ctx, _ = open_context(viewport=DESKTOP, timezone_id="America/New_York")
    page = ctx.new_page()
    page.goto(server.url + "/report")
    expect(page.locator("#report-zone")).to_have_text("local time, UTC−05:00 (America/New_York)")
    expect(page.locator("#machine option", has_text="ny-press")).to_have_count(1)
    page.fill("#start", "2026-11-20")
    page.fill("#end", "2026-11-20")
    page.select_option("#machine", "ny-press")
    expect(page.locator("#count")).to_have_text("3 matching rows")
    rows, url = download_rows(page)
    assert [r["time"] for r in rows] == NY_TIMES[1:4]  # FD-REST's UTC text by default
    assert "tz=America%2FNew_York" in url and "offset" not in url

    page.check("#offset")
    rows, url = download_rows(page)
    assert [r["time"] for r in rows] == ["2026-11-20T00:00:00-05:00", "2026-11-20T16:05:00-05:00",
                                         "2026-11-20T23:59:59-05:00"]
    shot(page, "values-report-new-york.png")

    page.get_by_label("Times in").select_option("UTC")  # the page reloads in UTC
    expect(page.locator("#report-zone")).to_have_text("UTC")
    page.fill("#start", "2026-11-20")
    page.fill("#end", "2026-11-20")
    page.select_option("#machine", "ny-press")
    expect(page.locator("#count")).to_have_text("3 matching rows")
    rows, url = download_rows(page)
    assert [r["time"] for r in rows] == NY_TIMES[:3] and "tz=" not in url


def test_units_on_every_axis_in_the_feature_grid_and_the_table(server, open_context):
    ctx, _ = open_context(viewport=DESKTOP, timezone_id="Europe/Berlin")
    page = open_live(ctx, server.url + "/?machine=press-1")
    expect(page.locator(".chart .uplot")).to_have_count(4)
    boxes = page.locator(".chart-box")
    labels = boxes.evaluate_all("bs => bs.map(b => [b.dataset.xLabel, b.dataset.yLabel])")
    assert [y for _, y in labels] == ["°C", "no unit", "mm/s", "intensity 0–100"]
    assert {x for x, _ in labels} == {"time (UTC+01:00)"}
    grid = page.locator("#features .feat dt")
    expect(grid).to_have_count(35)
    texts = grid.all_text_contents()
    for want in ("Temperature °C", "Rotation speed rpm", "RMS velocity, axial mm/s", "Peak acceleration, vertical g",
                 "Ultrasound 0–8 kHz dB", "Vibration 0–200 Hz g", "Kurtosis, horizontal"):
        assert want in texts, (want, texts)
    assert grid.first.get_attribute("title") == "Rotation Speed"  # the raw key stays findable

    table = open_live(ctx, server.url + "/dashboard")
    heads = table.locator("#head th").all_text_contents()
    assert "Temperature (°C)" in heads and "Rotation speed (rpm)" in heads
    expect(table.locator("#rows tr")).to_have_count(11)
    table.select_option("#table-machine", "press-2")
    expect(table.locator("#rows tr")).to_have_count(1)
    expect(table.locator("#rows tr").first).to_have_attribute("data-machine", "press-2")
    assert "machine=press-2" in table.url
    table.reload()
    expect(table.locator("#table-machine")).to_have_value("press-2")
    expect(table.locator("#rows tr")).to_have_count(1)


@pytest.mark.parametrize("path", PAGES)
def test_every_page_fits_a_phone_without_a_horizontal_page_scroll(server, open_context, path):
    name = path.strip("/") or "live"
    for size, label in ((PHONE, "390"), (DESKTOP, "1440")):
        ctx, _ = open_context(viewport=size)
        page = ctx.new_page()
        page.goto(server.url + path + ("?machine=press-1" if path == "/" else ""))
        page.wait_for_load_state("networkidle")
        if path == "/":
            expect(page.locator(".chart .uplot")).to_have_count(4)
        if path == "/dashboard":
            expect(page.locator("#rows tr").first).to_be_visible()
        over = page.evaluate("() => document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert over <= 0, f"{path} at {label} px scrolls sideways by {over} px"
        shot(page, f"values-{name}-{label}.png")
        ctx.close()
