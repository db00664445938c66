"""The pages in a real browser: Debian's Chromium driven by Playwright, against the real
server (`python -m edge serve`) started as a subprocess.

Never downloads a browser: without /usr/bin/chromium (apt-get install chromium) these tests
skip, or fail when FDEDGE_REQUIRE_BROWSER=1 (CI). Screenshots go to
test-output/screenshots/. Fixtures: tests/web/conftest.py; helpers: tests/web/browser_helpers.py.
"""

from __future__ import annotations

import csv
import io
import math
import time
import urllib.parse
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from tests.harness import Server
from tests.web.browser_helpers import (
    HOSTILE,
    PHONE,
    expect,
    fault_tile,
    number,
    open_live,
    shot,
    shown_fault,
    wait_live,
)

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def server(tmp_path_factory, model_dir, scenario):
    """`python -m edge serve` on loopback; restartable on the same port and database, and
    stopped like a power cut: committed rows are on disk (WAL)."""
    base = tmp_path_factory.mktemp("browser-server")
    with Server(base / "data", model_dir, args=scenario["args"] + ["--no-access-log"], power_cut=True) as srv:
        yield srv


# --- tests -----------------------------------------------------------------------------

def test_dashboard_offline_and_a_new_reading_shows_within_1s(server, scenario, open_context):
    ctx, watch = open_context(viewport={"width": 1280, "height": 900})
    model = server.get("/api/model")
    page = open_live(ctx, server.url + "/")

    # All 8 faults with their category from the model's catalogue, thresholds on the page.
    expect(page.locator("#faults li")).to_have_count(len(model["faults"]))
    for entry in model["catalogue"]:
        expect(fault_tile(page, entry["fault"]).locator(".fault-cat")).to_have_text(entry["category"])
    assert number(page.text_content("#thr-warning")) == pytest.approx(scenario["warning"], abs=0.051)
    assert number(page.text_content("#thr-alarm")) == pytest.approx(scenario["alarm"], abs=0.051)
    expect(page.locator("#model-name")).to_have_text(model["name"])
    expect(page.locator("#model-version")).to_have_text(model["version"])

    reading = scenario["healthy"][0]
    start = time.monotonic()
    faults = server.send(reading)
    rid = server.latest()["id"]
    left = 1.0 - (time.monotonic() - start)
    expect(page.locator("#latest-id")).to_have_text(str(rid), timeout=max(left, 0.05) * 1000)
    assert time.monotonic() - start < 1.0

    for fault, value in faults.items():
        shown = number(fault_tile(page, fault).locator(".fault-value").text_content())
        assert shown == pytest.approx(shown_fault(value), abs=0.051), fault  # clamped to 0..100
    expect(page.locator("#features dd")).to_have_count(35)
    temperature = page.locator("#features .feat", has_text="Temperature").locator("dd")
    assert number(temperature.text_content()) == pytest.approx(reading["Temperature"], rel=1e-3)
    expect(page.locator(".chart .uplot")).to_have_count(4)

    # The last 10 minutes, oldest first, so the charts draw lines from live events.
    now = datetime.now(timezone.utc).replace(microsecond=0)
    for i in range(20):
        r = scenario["healthy"][i % len(scenario["healthy"])]
        server.send({**r, "Time": (now - timedelta(seconds=30 * (19 - i))).strftime("%Y-%m-%d %H:%M:%S")})
    expect(page.locator("#latest-id")).to_have_text(str(server.latest()["id"]))
    expect(page.locator("#rate")).not_to_have_text("0.0", timeout=2000)  # refreshed once a second
    shot(page, "dashboard.png")

    # Other ranges come from /api/series (server-side downsampling).
    for label, seconds in (("24 h", 86400), ("7 days", 604800)):
        with page.expect_response(lambda r: "/api/series" in r.url) as answer:
            page.get_by_role("button", name=label).click()
        q = urllib.parse.parse_qs(urllib.parse.urlsplit(answer.value.url).query)
        span = datetime.fromisoformat(q["end"][0].replace("Z", "+00:00")) - datetime.fromisoformat(
            q["start"][0].replace("Z", "+00:00"))
        assert answer.value.status == 200 and abs(span.total_seconds() - seconds) < 5
        assert q["machine"] == ["default"] and "fault7" in q["metrics"][0].split(",")
    page.get_by_role("button", name="Custom").click()
    local = datetime.now().replace(microsecond=0)
    page.fill("#custom-start", (local - timedelta(minutes=20)).isoformat())
    page.fill("#custom-end", local.isoformat())
    with page.expect_response(lambda r: "/api/series" in r.url) as answer:
        page.get_by_role("button", name="Show").click()
    assert answer.value.status == 200 and len(answer.value.json()["time"]) > 1
    expect(page.locator("#live-mode")).to_have_text("fixed range")

    phone = ctx.new_page()
    phone.set_viewport_size(PHONE)
    phone.goto(server.url + "/")
    wait_live(phone)
    expect(phone.locator("#latest-id")).to_have_text(str(server.latest()["id"]))
    overflow = phone.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"page is {overflow}px wider than a phone screen"
    shot(phone, "dashboard-phone.png")
    assert watch.requests, "request recording saw nothing"


def test_alarm_shows_state_and_root_causes(server, scenario, open_context):
    ctx, _ = open_context(viewport={"width": 1280, "height": 900})
    page = open_live(ctx, server.url + "/")
    faults = server.send(scenario["strong"])
    dominant = max(faults, key=faults.get)
    assert faults[dominant] >= scenario["alarm"], (faults, scenario["alarm"])
    entry = next(c for c in server.get("/api/model")["catalogue"] if c["fault"] == dominant)

    expect(page.locator("#dom-state")).to_have_text("alarm", timeout=2000)
    expect(page.locator("#dominant")).to_have_class("card dominant state-alarm")
    expect(page.locator("#dom-name")).to_contain_text(entry["category"])
    expect(page.locator("#dom-observed")).to_have_text(entry["observed"])
    expect(page.locator("#dom-causes")).to_have_text(entry["root_causes"])
    expect(fault_tile(page, dominant)).to_have_class("fault state-alarm")
    expect(fault_tile(page, dominant).locator(".fault-state")).to_have_text("alarm")
    for fault, value in faults.items():  # every tile's state follows the thresholds
        state = "alarm" if value >= scenario["alarm"] else "warning" if value >= scenario["warning"] else "normal"
        expect(fault_tile(page, fault).locator(".fault-state")).to_have_text(state)
    page.wait_for_timeout(300)  # let the chart frame draw
    shot(page, "dashboard-alarm.png")


def test_report_counts_and_downloads_matching_rows(server, scenario, open_context):
    machine = "report-line"
    base = scenario["healthy"]
    times = ["2023-11-05 23:59:59", "2023-11-06 00:00:00", "2023-11-06 15:00:00",
             "2023-11-07 09:00:00", "2023-11-07 23:59:59", "2023-11-08 00:00:00"]
    posted = []
    for i, t in enumerate(times):
        reading = base[i % len(base)] if i % 2 else scenario["strong"]
        faults = server.send({"Time": t, "machine": machine, **reading})
        posted.append((t, max(faults.values())))
    in_range = [(t, m) for t, m in posted if "2023-11-06" <= t[:10] <= "2023-11-07"]
    # Rounded down: a threshold typed on the page still matches the row it came from.
    threshold = math.floor(sorted(m for _, m in in_range)[len(in_range) // 2] * 1000) / 1000
    expected = sorted(t for t, m in in_range if m >= threshold)
    assert 0 < len(expected) < len(posted)

    ctx, _ = open_context(viewport={"width": 1000, "height": 700})
    page = ctx.new_page()
    page.goto(server.url + "/report")
    expect(page.locator("#machine option", has_text=machine)).to_have_count(1)
    page.fill("#start", "2023-11-06")
    page.fill("#end", "2023-11-07")
    page.fill("#threshold", str(threshold))
    page.select_option("#machine", machine)
    n = len(expected)
    expect(page.locator("#count")).to_have_text(f"{n} matching row{'s' if n != 1 else ''}")

    with page.expect_download() as info:
        page.click("#download")
    download = info.value
    rows = list(csv.DictReader(io.StringIO(Path(download.path()).read_text())))
    # FD-Edge's columns after FD-REST's: machine, alarms, the model version, then the data-quality verdict
    assert list(rows[0])[-6:] == ["machine", "alarms", "model_version", "quality", "quality_score", "quality_reasons"]
    assert sorted(r["time"][:19] for r in rows) == expected
    assert all(r["machine"] == machine and float(r["max_fault"]) >= threshold for r in rows)
    assert download.suggested_filename.endswith(".csv")
    expect(page.locator("#result")).to_contain_text(f"Downloading {n} row")
    shot(page, "report.png")

    # Nothing in range: a message, and no download.
    page.fill("#start", "2001-01-01")
    page.fill("#end", "2001-01-02")
    page.click("#download")
    expect(page.locator("#result")).to_contain_text("No readings match")
    expect(page.locator("#count")).to_have_text("0 matching rows")

    # Bad input caught on the page, and the server's own message for what only it checks.
    page.fill("#start", "2023-11-08")
    page.fill("#end", "2023-11-06")
    page.click("#count-btn")
    expect(page.locator("#result")).to_have_text("The start date is after the end date.")
    page.fill("#start", "2023-11-06")
    page.fill("#end", "2023-11-07")
    page.evaluate("""() => { const o = document.createElement("option");
        o.value = "fault9"; o.textContent = "fault9"; document.getElementById("fault").append(o); }""")
    page.select_option("#fault", "fault9")
    status, body = server.request("GET", "/api/count?start=2023-11-06&end=2023-11-07&fault=fault9")
    assert status == 400
    expect(page.locator("#result")).to_have_text(body["message"])
    expect(page.locator("#result")).to_have_class("result error")


def test_stream_resumes_without_gap_after_server_restart(server, scenario, open_context):
    ctx, watch = open_context(viewport={"width": 1280, "height": 900})
    table = open_live(ctx, server.url + "/dashboard")
    live = open_live(ctx, server.url + "/?machine=default")

    healthy = scenario["healthy"]
    faults = server.send(healthy[0])
    first = server.latest()["id"]
    expect(table.locator("#rows tr").first).to_have_attribute("data-id", str(first))
    # The pages ask for the compact arrays shape and name its values from hello.
    cells = table.locator("#rows tr").first.locator("td").all_text_contents()
    shown = [shown_fault(faults[f"fault{i}"]) for i in range(8)]  # clamped to 0..100
    assert [number(c) for c in cells[5:13]] == pytest.approx(shown, abs=0.051)
    assert number(cells[13]) == pytest.approx(healthy[0]["Temperature"], rel=1e-3)
    assert number(cells[14]) == pytest.approx(healthy[0]["Rotation Speed"], rel=1e-3)
    streams = [urllib.parse.urlsplit(u) for u in watch.requests if urllib.parse.urlsplit(u).path == "/events"]
    assert len(streams) >= 2 and all(urllib.parse.parse_qs(u.query)["shape"] == ["arrays"] for u in streams)

    server.stop()  # a power cut (power_cut=True)
    expect(table.locator("#conn")).not_to_have_attribute("data-state", "live", timeout=5000)
    server.start()
    for r in healthy[1:4]:  # posted before the pages have reconnected
        server.send(r)
    wait_live(table)
    for r in healthy[4:7]:
        server.send(r)
    last = server.latest()["id"]

    expect(table.locator("#rows tr").first).to_have_attribute("data-id", str(last), timeout=10_000)
    ids = [int(i) for i in table.locator("#rows tr").evaluate_all("rows => rows.map(r => r.dataset.id)")]
    assert ids[: last - first + 1] == list(range(last, first - 1, -1)), "rows missing or repeated"
    expect(live.locator("#latest-id")).to_have_text(str(last), timeout=10_000)
    wait_live(live)
    shot(table, "table.png")


def test_burst_keeps_table_bounded_and_shows_the_newest(server, scenario, open_context):
    ctx, _ = open_context(viewport={"width": 1280, "height": 900})
    table = ctx.new_page()
    table.goto(server.url + "/dashboard")
    live = ctx.new_page()
    live.goto(server.url + "/?machine=default")
    wait_live(table)
    wait_live(live)
    batch = [scenario["healthy"][i % len(scenario["healthy"])] for i in range(600)]
    status, body = server.request("POST", "/send", batch)
    assert status == 200 and len(body) == 600
    last = server.latest()["id"]
    expect(table.locator("#rows tr").first).to_have_attribute("data-id", str(last), timeout=3000)
    expect(table.locator("#rows tr")).to_have_count(50)
    expect(live.locator("#latest-id")).to_have_text(str(last), timeout=3000)
    assert live.evaluate("performance.now()") > 0  # still answering


def test_hostile_machine_name_renders_as_text(server, scenario, open_context):
    ctx, watch = open_context(viewport={"width": 1280, "height": 900})
    server.send({"machine": HOSTILE, **scenario["healthy"][0]})
    page = open_live(ctx, server.url + "/?machine=" + urllib.parse.quote(HOSTILE))
    expect(page.locator("#latest-machine")).to_have_text(HOSTILE)
    expect(page.locator("#machine option", has_text=HOSTILE)).to_have_count(1)
    expect(page.locator("#machine-pick")).to_be_visible()

    page.select_option("#machine", "default")  # and back: the selector switches the stream
    expect(page.locator("#latest-machine")).to_have_text("default")
    page.select_option("#machine", HOSTILE)
    expect(page.locator("#latest-machine")).to_have_text(HOSTILE)
    wait_live(page)

    table = ctx.new_page()
    table.goto(server.url + "/dashboard")
    expect(table.locator("#rows td.name", has_text=HOSTILE).first).to_be_visible()
    shot(table, "table-hostile-name.png")
    report = ctx.new_page()
    report.goto(server.url + "/report")
    expect(report.locator("#machine option", has_text=HOSTILE)).to_have_count(1)
    for p in (page, table, report):
        p.wait_for_timeout(200)
        assert p.evaluate("document.images.length") == 0
    assert not any(urllib.parse.urlsplit(u).path == "/x" for u in watch.requests)
    assert not watch.dialogs


def test_read_token_form_stores_cookie_and_retries(model_dir, open_context, scenario, server_factory):
    srv = server_factory(model_dir, args=["--read-token", "s3cret-token", "--no-access-log"], power_cut=True).start()
    ctx, _ = open_context(hosts={f"127.0.0.1:{srv.port}"}, viewport=PHONE)
    page = ctx.new_page()
    page.goto(srv.url + "/")
    form = page.locator("#token-form")
    expect(form).to_be_visible()
    shot(page, "token-form.png")
    form.locator("input").fill("wrong")
    form.locator("button").click()
    expect(form).to_be_visible()  # asked again
    form.locator("input").fill("s3cret-token")
    form.locator("button").click()
    wait_live(page)
    expect(form).to_be_hidden()
    cookie = next(c for c in ctx.cookies() if c["name"] == "fdedge_token")
    assert (cookie["value"], cookie["sameSite"], cookie["path"]) == ("s3cret-token", "Strict", "/")
    assert cookie["httpOnly"]  # set by POST /login: no script on the page can read it
    assert page.evaluate("document.cookie") == ""
    srv.send(scenario["healthy"][0])
    expect(page.locator("#latest-id")).to_have_text("1")  # first row of a fresh database


def test_the_login_page_logs_in_and_returns_to_the_page_that_sent_it(model_dir, open_context, server_factory):
    srv = server_factory(model_dir, args=["--read-token", "s3cret-token", "--no-access-log"], power_cut=True).start()
    ctx, _ = open_context(hosts={f"127.0.0.1:{srv.port}"}, viewport=PHONE)
    page = ctx.new_page()
    page.goto(srv.url + "/login?next=/alarms")
    page.fill("#login-token", "wrong")
    page.click("#login button[type=submit]")
    expect(page.locator("#login-msg")).to_contain_text("not accepted")
    assert not [c for c in ctx.cookies() if c["name"] == "fdedge_token"]
    page.fill("#login-token", "s3cret-token")
    page.click("#login button[type=submit]")
    page.wait_for_url("**/alarms")
    expect(page.locator("#log-summary")).to_have_text("No alarms match.")  # the read with the cookie worked
    cookie = next(c for c in ctx.cookies() if c["name"] == "fdedge_token")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    page.goto(srv.url + "/login")
    page.click("#logout")
    expect(page.locator("#login-msg")).to_contain_text("Logged out")
    assert not [c for c in ctx.cookies() if c["name"] == "fdedge_token" and c["value"]]
