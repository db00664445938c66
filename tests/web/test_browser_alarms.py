"""The live dashboard's alarm panel, and a page that outlives its appliance's database, in
Debian's Chromium against the real server (the fixtures of tests/web/conftest.py and the
conventions of test_browser.py).

The module's server raises an alarm after one reading (`{"defaults": {"consecutive": 1}}`)
and has an ingest token, so acknowledging from the page has to ask for it.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta

import pytest

from tests.harness import Server
from tests.web.browser_helpers import HOSTILE, PHONE, expect, number, open_live, shot, shown_fault, wait_live

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]

WRITE = "w-s3cret_ingest"
NOTE = 'bearing ordered <img src=x onerror=alert(1)> & "soon"'


def rules_file(path, scenario) -> list[str]:
    """One reading above warning raises, one below clear clears. The exaggerated readings lie far
    outside the model's training data (their quality is suspect): these tests are about the panel,
    so suspect readings count and raise no data-quality alarm (tests/alarms/test_quality_alarms.py)."""
    defaults: dict[str, float | str] = {"consecutive": 1, "suspect": "count"}
    if scenario["args"]:  # thresholds moved for this model: keep clear (warning - 5) above healthy rows
        defaults["clear"] = round(scenario["warning"] - 0.01, 2)
    path.write_text(json.dumps({"defaults": defaults, "quality": {"alarm": False}}))
    return ["--alarm-rules", str(path)]


@pytest.fixture(scope="module")
def server(tmp_path_factory, model_dir, scenario):
    base = tmp_path_factory.mktemp("browser-alarms")
    args = scenario["args"] + rules_file(base / "rules.json", scenario) + ["--token", WRITE, "--no-access-log"]
    with Server(base / "data", model_dir, args=args, power_cut=True) as srv:
        yield srv


def send(srv: Server, reading: dict) -> dict[str, float]:
    status, body = srv.request("POST", "/send", reading, {"Authorization": f"Bearer {WRITE}"})
    assert status == 200, (status, body)
    return body[0]


def local(iso: str) -> str:
    """The page's fmtTime: local time, seconds, and its zone ("UTC" or "UTC+01:00")."""
    t = datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone()
    offset = t.utcoffset() or timedelta(0)
    minutes = int(offset.total_seconds() // 60)
    zone = "UTC" if not minutes else f"UTC{'+' if minutes > 0 else '−'}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"
    return f"{t.strftime('%Y-%m-%d %H:%M:%S')} {zone}"


def panel_order(alarms: list[dict]) -> list[int]:
    """Active alarms as the panel lists them: alarm before warning, newest raised first."""
    def key(a):
        raised = datetime.fromisoformat(a["raised_at"].replace("Z", "+00:00")).timestamp()
        return (a["severity"] != "alarm", -round(raised * 1000), -a["id"])
    return [a["id"] for a in sorted(alarms, key=key)]


def draw_charts(page) -> None:
    """Charts below the fold are redrawn when scrolled to; a full-page screenshot does not scroll."""
    page.locator("#charts").scroll_into_view_if_needed()
    page.wait_for_timeout(300)
    page.evaluate("window.scrollTo(0, 0)")


def ids(locator) -> list[int]:
    return [int(i) for i in locator.evaluate_all("els => els.map(e => e.dataset.id)")]


def test_alarm_panel_raise_acknowledge_clear(server, scenario, open_context):
    catalogue = {c["fault"]: c for c in server.get("/api/model")["catalogue"]}
    machine = "press-1"
    send(server, {"machine": machine, **scenario["healthy"][0]})
    ctx, watch = open_context(viewport={"width": 1280, "height": 900})
    page = open_live(ctx, server.url + "/")
    expect(page.locator("#alarms-none")).to_have_text("No active alarms.")
    expect(page.locator("#alarm-count")).to_have_attribute("data-count", "0")
    expect(page.locator("#alarms-scope")).to_have_text(f"machine {machine}")

    # Raised: listed within 2 s, in the panel's order, with the catalogue's text.
    start = time.monotonic()
    send(server, {"machine": machine, **scenario["strong"]})
    items = page.locator("#alarms-active li.alarm")
    expect(items.first).to_be_visible(timeout=2000)
    assert time.monotonic() - start < 2.0
    active = server.get("/api/alarms", state="active", machine=machine)["alarms"]
    assert any(a["severity"] == "alarm" for a in active), active
    expect(items).to_have_count(len(active))
    assert ids(items) == panel_order(active)
    for a in active:
        li = page.locator(f'#alarms-active li[data-id="{a["id"]}"]')
        entry = catalogue[a["fault"]]
        expect(li.locator(".alarm-category")).to_have_text(entry["category"])
        expect(li.locator(".alarm-fault")).to_have_text(a["fault"])
        expect(li.locator(".alarm-sev")).to_have_text(a["severity"])
        expect(li.locator(".alarm-state")).to_have_text("active")
        expect(li.locator(".f-machine dd")).to_have_text(machine)
        expect(li.locator(".f-raised dd")).to_have_text(local(a["raised_at"]))
        assert number(li.locator(".f-peak dd .mono").text_content()) == pytest.approx(shown_fault(a["peak"]), abs=0.051)
        expect(li.locator(".alarm-observed")).to_have_text(entry["observed"])
        expect(li.locator(".alarm-causes")).to_have_text(entry["root_causes"])
    n = len(active)
    expect(page.locator("#alarm-count")).to_have_text(f"{n} active alarm{'s' if n != 1 else ''}")
    expect(page.locator("#alarm-count")).to_have_attribute("data-count", str(n))
    draw_charts(page)
    shot(page, "dashboard-alarms.png")

    # Acknowledge: the server wants the ingest token, so the form asks for it, then retries.
    top = page.locator(f'#alarms-active li[data-id="{ids(items)[0]}"]')
    top_id = ids(items)[0]
    top.locator(".ack-open").click()
    form = top.locator("form.ack-form")
    expect(form.get_by_label("Your name")).to_be_focused()
    form.get_by_label("Your name").fill("Ana")
    form.get_by_label("Note").fill(NOTE)
    token = form.get_by_label("Write token")
    expect(token).to_be_hidden()
    ack_url = f"/api/alarms/{top_id}/ack"
    with page.expect_response(lambda r: r.url.endswith(ack_url)) as answer:
        form.locator("button[type=submit]").click()
    assert answer.value.status == 401
    expect(token).to_be_visible()
    expect(token).to_be_focused()
    expect(form.locator(".ack-msg")).to_have_text("Acknowledging needs the appliance's write token.")
    token.fill("not-the-token")
    with page.expect_response(lambda r: r.url.endswith(ack_url)) as answer:
        form.locator("button[type=submit]").click()
    assert answer.value.status == 401
    expect(form.locator(".ack-msg")).to_contain_text("not accepted")
    shot(page, "dashboard-alarm-ack-token.png")
    token.fill(WRITE)
    with page.expect_response(lambda r: r.url.endswith(ack_url)) as answer:
        form.locator("button[type=submit]").click()
    assert answer.value.status == 200
    assert answer.value.request.headers.get("authorization") == f"Bearer {WRITE}"
    assert "cookie" not in answer.value.request.headers
    expect(form).to_be_hidden()
    expect(top.locator(".alarm-state")).to_have_text("active · acknowledged")
    expect(top.locator(".ack-by")).to_have_text("Ana")
    expect(top.locator(".ack-note")).to_have_text(NOTE)
    expect(top.locator(".ack-open")).to_be_hidden()
    acked = server.get(f"/api/alarms/{top_id}")["alarm"]
    assert (acked["state"], acked["acked_by"], acked["ack_note"]) == ("active", "Ana", NOTE)
    assert top.get_attribute("data-acked") == "true"

    # The token stays in this tab: never in a URL, a cookie or localStorage.
    assert not [u for u in watch.requests if WRITE in u]
    assert all(c["value"] != WRITE for c in ctx.cookies())
    assert WRITE not in page.evaluate("JSON.stringify(localStorage)")
    assert page.evaluate("sessionStorage.getItem('fdedge_write_token')") == WRITE
    assert page.evaluate("document.images.length") == 0

    # A second alarm in the same tab: name remembered, token reused, no question.
    if n > 1:
        second_id = ids(items)[1]
        second = page.locator(f'#alarms-active li[data-id="{second_id}"]')
        second.locator(".ack-open").click()
        form2 = second.locator("form.ack-form")
        expect(form2.get_by_label("Your name")).to_have_value("Ana")
        with page.expect_response(lambda r: r.url.endswith(f"/api/alarms/{second_id}/ack")) as answer:
            form2.locator("button[type=submit]").click()
        assert answer.value.status == 200
        expect(second.locator(".alarm-state")).to_have_text("active · acknowledged")
        assert server.get(f"/api/alarms/{second_id}")["alarm"]["acked_by"] == "Ana"

    # A phone: everything fits, the header count is on screen, a form opens.
    phone = ctx.new_page()
    phone.set_viewport_size(PHONE)
    phone.goto(server.url + "/")
    wait_live(phone)
    expect(phone.locator("#alarms-active li.alarm")).to_have_count(n)
    expect(phone.locator(f'#alarms-active li[data-id="{top_id}"] .ack-note')).to_have_text(NOTE)
    expect(phone.locator("#alarm-count")).to_be_in_viewport()
    unacked = phone.locator('#alarms-active li[data-acked="false"] .ack-open')
    if unacked.count():
        unacked.first.click()
        expect(phone.locator("form.ack-form").first).to_be_visible()
    overflow = phone.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"page is {overflow}px wider than a phone screen"
    draw_charts(phone)
    shot(phone, "dashboard-alarms-phone.png")

    # Healthy readings until the server clears them: the panel moves them to "cleared".
    page.bring_to_front()  # a page behind another gets few frames (and slow screenshots)
    for i in range(1, 10):
        send(server, {"machine": machine, **scenario["healthy"][i % len(scenario["healthy"])]})
        if not server.get("/api/alarms", state="active", machine=machine)["alarms"]:
            break
    else:
        pytest.fail("healthy readings did not clear the alarms")
    expect(items).to_have_count(0, timeout=2000)
    expect(page.locator("#alarms-none")).to_have_text("No active alarms.")
    expect(page.locator("#alarm-count")).to_have_attribute("data-count", "0")
    expect(page.locator("#alarm-count")).to_have_text("no alarms")
    page.locator("#alarms-cleared-box summary").click()
    cleared = page.locator("#alarms-cleared li.alarm")
    expect(cleared).to_have_count(n)
    for a in server.get("/api/alarms", state="cleared", machine=machine)["alarms"]:
        li = page.locator(f'#alarms-cleared li[data-id="{a["id"]}"]')
        expect(li).to_have_attribute("data-state", "cleared")
        expect(li.locator(".alarm-state")).to_have_text("cleared · acknowledged" if a["acked"] else "cleared")
        expect(li.locator(".f-cleared dd")).to_have_text(local(a["cleared_at"]))
    expect(phone.locator("#alarms-active li.alarm")).to_have_count(0)
    draw_charts(page)
    shot(page, "dashboard-alarms-cleared.png")


def test_alarm_panel_follows_the_selected_machine(server, scenario, open_context):
    send(server, {"machine": "line-a", **scenario["healthy"][0]})
    send(server, {"machine": HOSTILE, **scenario["strong"]})  # another machine, in alarm
    theirs = server.get("/api/alarms", state="active", machine=HOSTILE)["alarms"]
    everywhere = server.get("/api/alarms", state="active")["alarms"]
    assert theirs

    ctx, watch = open_context(viewport={"width": 1280, "height": 900})
    page = open_live(ctx, server.url + "/?machine=line-a")
    expect(page.locator("#alarms-scope")).to_have_text("machine line-a")
    expect(page.locator("#alarms-none")).to_have_text("No active alarms.")
    expect(page.locator("#alarm-count")).to_have_attribute("data-count", str(len(everywhere)))
    other = page.locator("#alarms-elsewhere button", has_text=HOSTILE)
    expect(other).to_have_text(f"{HOSTILE} ({len(theirs)} active alarm{'s' if len(theirs) != 1 else ''})")

    other.click()  # shows that machine: selector, panel and stream follow
    expect(page.locator("#machine")).to_have_value(HOSTILE)
    expect(page.locator("#alarms-active li.alarm")).to_have_count(len(theirs))
    assert ids(page.locator("#alarms-active li.alarm")) == panel_order(theirs)
    expect(page.locator("#alarms-active li.alarm .f-machine dd").first).to_have_text(HOSTILE)
    expect(page.locator("#latest-machine")).to_have_text(HOSTILE)
    wait_live(page)
    send(server, {"machine": HOSTILE, **scenario["healthy"][0]})  # live for the new machine
    expect(page.locator("#alarms-active li.alarm")).to_have_count(0, timeout=2000)
    assert page.evaluate("document.images.length") == 0
    assert not any(u.endswith("/x") for u in watch.requests)


def test_new_empty_database_after_restart_shows_new_readings(tmp_path, model_dir, scenario, open_context,
                                                             server_factory):
    """The appliance comes back on the same address with a new, empty database: row ids
    start again at 1, below what the pages have shown; they must not drop the new rows."""
    srv = server_factory(model_dir, data_dir=tmp_path / "first", power_cut=True,
                         args=scenario["args"] + rules_file(tmp_path / "rules.json", scenario) + ["--no-access-log"])
    srv.start()
    for r in scenario["healthy"][:5]:
        srv.send(r)
    srv.send(scenario["strong"])  # an alarm the old database has and the new one has not
    old_last = srv.latest()["id"]
    ctx, _ = open_context(hosts={f"127.0.0.1:{srv.port}"}, viewport={"width": 1280, "height": 900})
    live = ctx.new_page()
    live.goto(srv.url + "/")
    table = ctx.new_page()
    table.goto(srv.url + "/dashboard")
    wait_live(live)
    wait_live(table)
    expect(live.locator("#latest-id")).to_have_text(str(old_last))
    expect(live.locator("#alarms-active li.alarm").first).to_be_visible()
    expect(table.locator("#rows tr").first).to_have_attribute("data-id", str(old_last))

    srv.stop()
    srv.data_dir = tmp_path / "second"
    expect(table.locator("#conn")).not_to_have_attribute("data-state", "live", timeout=5000)
    srv.start()
    srv.send(scenario["healthy"][0])  # possibly before the pages have reconnected
    wait_live(table)
    wait_live(live)
    for r in scenario["healthy"][1:3]:
        srv.send(r)
    last = srv.latest()["id"]
    assert last == 3 < old_last

    expect(live.locator("#latest-id")).to_have_text(str(last), timeout=10_000)
    expect(table.locator("#rows tr").first).to_have_attribute("data-id", str(last), timeout=10_000)
    expect(table.locator("#rows tr")).to_have_count(last)  # only the new database's rows
    assert ids(table.locator("#rows tr")) == [3, 2, 1]
    expect(live.locator("#alarms-active li.alarm")).to_have_count(0)  # the old database's are gone
    expect(live.locator("#alarm-count")).to_have_attribute("data-count", "0")

    srv.send(scenario["strong"])  # the stream goes on, alarms included
    expect(live.locator("#latest-id")).to_have_text(str(last + 1), timeout=2000)
    expect(table.locator("#rows tr").first).to_have_attribute("data-id", str(last + 1), timeout=2000)
    active = srv.get("/api/alarms", state="active")["alarms"]
    expect(live.locator("#alarms-active li.alarm")).to_have_count(len(active), timeout=2000)
    assert ids(live.locator("#alarms-active li.alarm")) == panel_order(active)
    for a in active:
        li = live.locator(f'#alarms-active li[data-id="{a["id"]}"]')
        expect(li.locator(".f-raised dd")).to_have_text(local(a["raised_at"]))
        assert number(li.locator(".f-peak dd .mono").text_content()) == pytest.approx(shown_fault(a["peak"]), abs=0.051)


def test_alarm_changes_missed_while_disconnected_show_after_reconnect(server, scenario, open_context):
    """Alarm events have no SSE id and are not replayed: the page reloads /api/alarms when
    its stream connects again."""
    machine = "line-c"
    send(server, {"machine": machine, **scenario["healthy"][0]})
    ctx, _ = open_context(viewport={"width": 1280, "height": 900})
    page = open_live(ctx, server.url + f"/?machine={machine}")
    expect(page.locator("#alarms-none")).to_have_text("No active alarms.")

    page.route("**/events*", lambda route: route.abort())  # the stream drops and cannot come back
    page.evaluate("window.dispatchEvent(new Event('online'))")  # LiveFeed reconnects at once
    expect(page.locator("#conn")).not_to_have_attribute("data-state", "live", timeout=3000)
    send(server, {"machine": machine, **scenario["strong"]})
    active = server.get("/api/alarms", state="active", machine=machine)["alarms"]
    assert active
    page.wait_for_timeout(300)
    expect(page.locator("#alarms-active li.alarm")).to_have_count(0)  # nothing can have told it

    page.unroute("**/events*")
    wait_live(page)
    expect(page.locator("#alarms-active li.alarm")).to_have_count(len(active), timeout=3000)
    assert ids(page.locator("#alarms-active li.alarm")) == panel_order(active)
    send(server, {"machine": machine, **scenario["healthy"][1]})  # and live again
    expect(page.locator("#alarms-active li.alarm")).to_have_count(0, timeout=2000)
