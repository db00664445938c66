"""What the three pages share (web/static/common.js), in Debian's Chromium against the real server
(the fixtures of tests/web/conftest.py, the conventions of test_browser.py): every page loads the
one shared script, carries the server's Content-Security-Policy in its <meta>, says "cannot reach
the appliance" when the server goes away and asks for the read token on a 401; and the fault and
feature names on every page are the model's (/api/model), not the code's.

The module's server runs the model with a changed manifest: other catalogue categories and
the features in reverse order, so a page that shows FD-REST's names from code fails here.
"""

from __future__ import annotations

import json
import shutil
import urllib.parse

import pytest

from tests.harness import Server
from tests.web.browser_helpers import NOT_IN_META, PHONE, directives, expect, shot, wait_live

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]

PAGES = {"/": "index", "/dashboard": "table", "/report": "report"}
STREAM_PAGES = ("/", "/dashboard")  # the pages with a live stream, #conn and #notice
TOKEN = "r34d-t0ken"
NEEDED = "This appliance needs a read token to show data."
NOT_ACCEPTED = "The read token was not accepted. Enter the appliance's read token."
UNREACHABLE = "Cannot reach the appliance"


def renamed(category: str, i: int) -> str:
    return f"Manifest category {i} <i>{category}</i> ü"  # markup must show as text


@pytest.fixture(scope="module")
def custom_model(tmp_path_factory, model_dir):
    """The module's model with other catalogue categories and its features reversed."""
    directory = tmp_path_factory.mktemp("custom-model")
    manifest = json.loads((model_dir / "manifest.json").read_text())
    for name in (manifest.get("onnx", "model.onnx"), manifest.get("scalers", "scalers.npz")):
        shutil.copy(model_dir / name, directory / name)
    manifest["catalogue"] = [{**c, "category": renamed(c["category"], i)} for i, c in enumerate(manifest["catalogue"])]
    manifest["features"] = list(reversed(manifest["features"]))
    (directory / "manifest.json").write_text(json.dumps(manifest))
    return directory


@pytest.fixture(scope="module")
def server(tmp_path_factory, custom_model):
    data = tmp_path_factory.mktemp("pages-shared") / "data"
    with Server(data, custom_model, args=["--no-access-log"], power_cut=True) as srv:
        yield srv


LOADED = "(path) => performance.getEntriesByType('resource').some((e) => new URL(e.name).pathname === path)"


def loads_common(page) -> bool:
    return page.evaluate(LOADED, "/static/common.js")


def test_every_page_loads_the_shared_script_and_agrees_with_the_csp_header(server, open_context):
    ctx, _ = open_context(viewport={"width": 1280, "height": 900})
    for path in PAGES:
        page = ctx.new_page()
        answer = page.goto(server.url + path)
        header = directives(answer.headers["content-security-policy"])
        meta = directives(page.locator('meta[http-equiv="Content-Security-Policy"]').get_attribute("content"))
        assert meta == {k: v for k, v in header.items() if k not in NOT_IN_META}, path
        if path in STREAM_PAGES:
            wait_live(page)
        else:
            expect(page.locator("#count")).to_have_text("0 matching rows")
        assert loads_common(page), f"{path} did not load /static/common.js"
        page.close()


def test_fault_and_feature_names_follow_the_model(server, open_context):
    model = server.get("/api/model")
    categories = {c["fault"]: c["category"] for c in model["catalogue"]}
    assert all(v.startswith("Manifest category") for v in categories.values())
    assert model["features"][0] == "1.8-2 kHz"  # the reversed manifest is what the server serves
    ctx, _ = open_context(viewport={"width": 1280, "height": 900})

    live = ctx.new_page()
    live.goto(server.url + "/")
    wait_live(live)
    tiles = live.locator("#faults li")
    expect(tiles).to_have_count(len(model["faults"]))
    assert tiles.evaluate_all("els => els.map((e) => e.dataset.fault)") == model["faults"]
    for fault in model["faults"]:
        expect(live.locator(f'#faults li[data-fault="{fault}"] .fault-cat')).to_have_text(categories[fault])
    expect(live.locator("#features dt")).to_have_count(len(model["features"]))
    # each shown by its label and unit (features.js), the model's key in its title, in the model's order
    assert live.locator("#features dt").evaluate_all("els => els.map((e) => e.title)") == model["features"]
    fault_chart = live.locator(".chart").last
    expect(fault_chart.locator("figcaption")).to_have_text("Fault intensities")
    legend = fault_chart.locator(".u-legend .u-series .u-label").all_text_contents()
    assert legend == ["time", *(f"{categories[f]} ({f})" for f in model["faults"])]  # the model's names
    with live.expect_response(lambda r: "/api/series" in r.url) as answer:
        live.get_by_role("button", name="1 h").click()
    metrics = urllib.parse.parse_qs(urllib.parse.urlsplit(answer.value.url).query)["metrics"][0].split(",")
    assert metrics[-len(model["faults"]):] == model["faults"]
    shot(live, "pages-model-live.png")

    table = ctx.new_page()
    table.goto(server.url + "/dashboard")
    wait_live(table)
    heads = table.locator("#head th").all_text_contents()
    assert heads[5:5 + len(model["faults"])] == model["faults"]

    report = ctx.new_page()
    report.goto(server.url + "/report")
    options = report.locator("#fault option")
    expect(options).to_have_count(1 + len(model["faults"]))
    assert options.all_text_contents()[1:] == [f"{f} · {categories[f]}" for f in model["faults"]]
    assert options.evaluate_all("os => os.map((o) => o.value)")[1:] == model["faults"]
    for p in (live, table, report):
        assert p.evaluate("document.querySelectorAll('i').length") == 0  # the catalogue's text stayed text


def test_pages_say_when_the_appliance_cannot_be_reached_and_recover(tmp_path, custom_model, open_context):
    srv = Server(tmp_path / "data", custom_model, args=["--no-access-log"], power_cut=True)
    srv.start()
    try:
        ctx, _ = open_context(hosts={f"127.0.0.1:{srv.port}"}, viewport=PHONE)
        pages = {}
        for path in PAGES:
            pages[path] = page = ctx.new_page()
            page.goto(srv.url + path)
        for path in STREAM_PAGES:
            wait_live(pages[path])
            expect(pages[path].locator("#notice")).to_be_empty()
        report = pages["/report"]
        expect(report.locator("#count")).to_have_text("0 matching rows")

        srv.stop()  # a power cut
        for path in STREAM_PAGES:
            expect(pages[path].locator("#notice")).to_contain_text(UNREACHABLE, timeout=15_000)
            expect(pages[path].locator("#conn")).not_to_have_attribute("data-state", "live")
        report.click("#count-btn")
        expect(report.locator("#result")).to_contain_text(UNREACHABLE)
        expect(report.locator("#result")).to_have_class("result error")
        shot(pages["/"], "pages-unreachable-phone.png")

        srv.start()  # back on the same port and database: the notice goes by itself
        for path in STREAM_PAGES:
            wait_live(pages[path])
            expect(pages[path].locator("#notice")).to_be_empty()
        report.click("#count-btn")
        expect(report.locator("#count")).to_have_text("0 matching rows")
        expect(report.locator("#result")).to_have_class("result info")  # "No readings match (...)"
    finally:
        srv.stop()


def test_pages_ask_for_the_read_token_and_say_when_it_is_wrong(tmp_path, custom_model, open_context):
    srv = Server(tmp_path / "data", custom_model, args=["--read-token", TOKEN, "--no-access-log"], power_cut=True)
    srv.start()
    try:
        for path in PAGES:
            ctx, _ = open_context(hosts={f"127.0.0.1:{srv.port}"}, viewport={"width": 1000, "height": 700})
            page = ctx.new_page()
            page.goto(srv.url + path)
            form = page.locator("#token-form")
            expect(form).to_be_visible()
            expect(form.locator(".token-msg")).to_have_text(NEEDED)
            if path in STREAM_PAGES:
                expect(page.locator("#conn")).to_have_attribute("data-state", "offline")
                expect(page.locator("#conn")).to_have_text("offline (read token needed)")
            assert loads_common(page)

            form.locator("input").fill("wrong")
            form.locator("button").click()
            expect(form).to_be_visible()
            expect(form.locator(".token-msg")).to_have_text(NOT_ACCEPTED)

            form.locator("input").fill(TOKEN)
            form.locator("button").click()
            expect(form).to_be_hidden()
            if path in STREAM_PAGES:
                wait_live(page)
            else:
                expect(page.locator("#count")).to_have_text("0 matching rows")
            shot(page, f"pages-token-{PAGES[path]}.png")
    finally:
        srv.stop()
