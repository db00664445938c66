"""Labels from the floor in Debian's Chromium against the real server: a verdict on an alarm
from the live page's list (shown with the label afterwards, and after a reload), and a time range
of a machine labelled on the report page. The server has an ingest token, so the first label
asks for it (the shared --token may label)."""

from __future__ import annotations

import pytest

from tests.harness import Server
from tests.web.browser_helpers import HOSTILE, expect, open_live, shot
from tests.web.test_browser_alarms import WRITE, local, rules_file, send

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]

NOTE = 'pressure spike from the valve test <b>not</b> a fault & "fine"'


@pytest.fixture(scope="module")
def server(tmp_path_factory, model_dir, scenario):
    base = tmp_path_factory.mktemp("browser-labels")
    args = scenario["args"] + rules_file(base / "rules.json", scenario) + ["--token", WRITE, "--no-access-log"]
    with Server(base / "data", model_dir, args=args) as srv:
        yield srv


def test_an_alarm_is_labelled_from_the_list_and_shows_its_label(server, scenario, open_context):
    machine = "press-9"
    send(server, {"machine": machine, **scenario["healthy"][0]})
    send(server, {"machine": machine, **scenario["strong"]})
    active = server.get("/api/alarms", state="active", machine=machine)["alarms"]
    assert active
    ctx, watch = open_context(viewport={"width": 1280, "height": 900})
    page = open_live(ctx, server.url + "/")
    target = active[0]["id"]
    li = page.locator(f'#alarms-active li[data-id="{target}"]')
    expect(li.locator(".label-open")).to_have_count(3)
    li.locator('.label-open[data-verdict="false_alarm"]').click()
    form = li.locator("form.label-form")
    expect(form.locator(".label-title")).to_have_text("Label as: False alarm")
    form.get_by_label("Your name").fill("Ana")
    form.get_by_label("Note").fill(NOTE)
    with page.expect_response(lambda r: r.url.endswith("/api/labels")) as answer:
        form.locator("button[type=submit]").click()
    assert answer.value.status == 401
    expect(form.get_by_label("Write token")).to_be_visible()
    expect(form.locator(".label-msg")).to_have_text("Labelling needs an operator's token.")
    form.get_by_label("Write token").fill(WRITE)
    with page.expect_response(lambda r: r.url.endswith("/api/labels")) as answer:
        form.locator("button[type=submit]").click()
    assert answer.value.status == 201
    expect(form).to_have_count(0)
    expect(li).to_have_attribute("data-label", "false_alarm")
    verdict = li.locator(".label-verdict")
    expect(verdict).to_contain_text("False alarm, by Ana")
    expect(verdict).to_contain_text(NOTE)
    expect(li.locator(".label-buttons")).to_be_hidden()
    (stored,) = server.get("/api/labels", alarm=str(target))["labels"]
    assert (stored["verdict"], stored["by"], stored["note"], stored["machine"]) == ("false_alarm", "Ana", NOTE, machine)
    assert page.evaluate("document.images.length") == 0  # the note went in as text
    shot(page, "dashboard-alarm-labelled.png")

    page.reload()  # the label comes back from /api/labels
    li = page.locator(f'#alarms-active li[data-id="{target}"]')
    expect(li).to_have_attribute("data-label", "false_alarm")
    expect(li.locator(".label-verdict")).to_contain_text("False alarm, by Ana")
    others = [a["id"] for a in active if a["id"] != target]
    if others:  # the others still offer the buttons; the tab's token is reused without asking
        other = page.locator(f'#alarms-active li[data-id="{others[0]}"]')
        other.locator('.label-open[data-verdict="confirmed"]').click()
        with page.expect_response(lambda r: r.url.endswith("/api/labels")) as answer:
            other.locator("form.label-form button[type=submit]").click()
        assert answer.value.status == 201
        expect(other.locator(".label-verdict")).to_contain_text("Confirmed fault, by Ana")

    # Change: the label goes (DELETE), the verdict buttons come back
    li.locator(".label-change").click()
    expect(li).to_have_attribute("data-label", "")
    expect(li.locator(".label-buttons")).to_be_visible()
    assert server.get("/api/labels", alarm=str(target))["labels"] == []
    assert not [u for u in watch.requests if WRITE in u]


def test_a_time_range_is_labelled_on_the_report_page(server, scenario, open_context):
    machine = HOSTILE  # a name that would be markup if parsed
    send(server, {"machine": machine, **scenario["healthy"][0]})
    ctx, _ = open_context(viewport={"width": 1280, "height": 1100})
    page = ctx.new_page()
    page.goto(server.url + "/report")
    form = page.locator("form#label-range")
    expect(form).to_be_visible()
    form.get_by_label("Machine", exact=True).fill(machine)
    form.get_by_label("From", exact=True).fill("2024-03-01T10:00:00")
    form.get_by_label("To", exact=True).fill("2024-03-01T11:30:00")
    form.locator("select[name=label-fault]").select_option("fault3")
    form.get_by_label("Intensity (0-100)", exact=True).fill("150")
    form.get_by_label("Your name", exact=True).fill("Bo")
    form.locator("button[type=submit]").click()
    expect(form.locator(".label-msg")).to_have_text("The intensity is a number from 0 to 100.")
    assert server.get("/api/labels", machine=machine)["labels"] == []
    form.get_by_label("Intensity (0-100)", exact=True).fill("45")
    form.get_by_label("Note", exact=True).fill("bearing noise after the shift change")
    form.locator("button[type=submit]").click()  # 401 first: the token row
    form.locator("input[name=token]").fill(WRITE)
    with page.expect_response(lambda r: r.url.endswith("/api/labels") and r.request.method == "POST") as answer:
        form.locator("button[type=submit]").click()
    assert answer.value.status == 201
    (label,) = server.get("/api/labels", machine=machine)["labels"]
    start = page.evaluate("new Date('2024-03-01T10:00:00').toISOString().replace(/\\.\\d{3}Z$/, 'Z')")
    assert (label["kind"], label["fault"], label["intensity"], label["by"], label["start"]) == (
        "range", "fault3", 45.0, "Bo", start)
    expect(form.locator(".label-msg")).to_contain_text(f"Label {label['id']} stored: fault3 at 45, by Bo")
    expect(page.locator(f'#labels-recent li[data-id="{label["id"]}"]')).to_contain_text("bearing noise")
    expect(page.locator("#labelled-csv")).to_have_attribute("href", "/generate_csv?labelled=1")
    assert local(label["created"])  # a time the page can show
    shot(page, "report-label-range.png")
