"""The alarm log page (/alarms) and the alarm count on every page, in Debian's Chromium against
the real server: filters that stay in the URL, unacknowledged alarms set apart, the CSV of the
same selection."""

from __future__ import annotations

import csv
import io
import re

import pytest

from tests.harness import Server
from tests.web.browser_helpers import expect, shot

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def server(tmp_path_factory, model_dir, scenario):
    with Server(tmp_path_factory.mktemp("browser-alarm-log") / "data", model_dir,
                args=[*scenario["args"], "--no-access-log"]) as srv:
        for k, machine in enumerate(("press-1", "press-2", "pump-3")):
            srv.send([{**scenario["strong"], "machine": machine, "Time": f"2024-06-0{k + 1} 10:00:0{i}"}
                      for i in range(5)])
        listed = srv.get("/api/alarms", state="active")["alarms"]
        assert {a["machine"] for a in listed} == {"press-1", "press-2", "pump-3"}, listed
        for alarm in listed:
            if alarm["machine"] == "press-2":
                status, body = srv.request("POST", f"/api/alarms/{alarm['id']}/ack", {"by": "ana", "note": "checked"})
                assert status == 200, body
        yield srv


def counts(server: Server) -> dict[str, int]:
    listed = server.get("/api/alarms", state="active")["alarms"]
    return {"all": len(listed), "acked": sum(a["acked"] for a in listed),
            "press-1": sum(a["machine"] == "press-1" for a in listed)}


def test_the_log_lists_filters_and_exports_the_same_alarms(server, open_context):
    n = counts(server)
    ctx, _ = open_context(viewport={"width": 1440, "height": 900})
    page = ctx.new_page()
    page.goto(server.url + "/alarms")
    rows = page.locator("#log-rows tr")
    expect(rows).to_have_count(n["all"])
    expect(page.locator("#log-rows tr.is-acked")).to_have_count(n["acked"])
    expect(page.locator("#log-rows tr.is-acked").first).to_contain_text("ana")
    expect(page.locator("#log-rows tr .new-badge")).to_have_count(n["all"] - n["acked"])
    expect(page.locator("#log-rows tr").first).to_contain_text(re.compile(r"UTC"))  # times say their zone
    shot(page, "alarm-log-1440.png")

    page.fill("#f-machine", "press-1")
    page.click("#filters button[type=submit]")
    expect(rows).to_have_count(n["press-1"])
    expect(rows.first).to_contain_text("press-1")
    assert "machine=press-1" in page.url
    page.reload()
    expect(page.locator("#f-machine")).to_have_value("press-1")
    expect(rows).to_have_count(n["press-1"])

    page.fill("#f-machine", "")
    page.select_option("#f-acked", "false")
    expect(rows).to_have_count(n["all"] - n["acked"])
    href = page.locator("#csv").get_attribute("href")
    assert href and "acked=false" in href
    answer = page.request.get(server.url + href)
    assert answer.ok and answer.headers["content-type"].startswith("text/csv")
    exported = list(csv.DictReader(io.StringIO(answer.text())))
    shown = [page.locator("#log-rows tr").nth(i).get_attribute("data-id") for i in range(n["all"] - n["acked"])]
    assert [r["id"] for r in exported] == shown


def test_every_page_shows_the_active_alarm_count(server, open_context):
    n = counts(server)
    ctx, _ = open_context(viewport={"width": 1280, "height": 800})
    page = ctx.new_page()
    for path in ("/report", "/dashboard", "/alarms", "/machines", "/"):
        page.goto(server.url + path)
        expect(page.locator("#alarm-count")).to_have_text(re.compile(rf"^{n['all']} active alarms"), timeout=5000)


def test_the_log_fits_a_phone(server, open_context):
    ctx, _ = open_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    page = ctx.new_page()
    page.goto(server.url + "/alarms")
    expect(page.locator("#log-rows tr")).to_have_count(counts(server)["all"])
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"page is {overflow}px wider than a phone screen"
    shot(page, "alarm-log-390.png")
