"""The dashboard shows which model scores (name, manifest version, model store version) and
follows a swap: a reading stamped with another store version makes it fetch the model again.
Debian's Chromium against the real server (tests/web/conftest.py's fixtures)."""

from __future__ import annotations

import json
import urllib.request

import pytest

from tests.harness import Server, make_linear_model, model_archive
from tests.web.browser_helpers import expect, open_live, shot

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]
ADMIN = "admin-Secr3t-b7"


@pytest.fixture(scope="module")
def server(tmp_path_factory, model_dir, scenario):
    base = tmp_path_factory.mktemp("browser-models")
    args = [*scenario["args"], "--admin-token", ADMIN, "--no-access-log"]
    with Server(base / "data", model_dir, args=args, power_cut=True) as srv:
        yield srv


def admin(srv: Server, path: str, body: bytes = b"") -> dict:
    req = urllib.request.Request(srv.url + path, data=body, method="POST",
                                 headers={"Authorization": f"Bearer {ADMIN}"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def test_the_dashboard_shows_the_active_model_and_follows_a_swap(server, scenario, open_context, tmp_path):
    ctx, _ = open_context(viewport={"width": 1280, "height": 900})
    before = server.get("/api/model")
    page = open_live(ctx, server.url + "/")
    expect(page.locator("#model-store")).to_have_text(before["store_version"])
    expect(page.locator("#model-name")).to_have_text(before["name"])

    other = tmp_path / "other"
    make_linear_model(other, seed=4)
    version = admin(server, "/api/models", model_archive(other))["version"]
    admin(server, f"/api/models/{version}/activate")
    server.send(scenario["healthy"][0])
    expect(page.locator("#model-store")).to_have_text(version, timeout=10_000)
    expect(page.locator("#model-name")).to_have_text("linear-test")
    shot(page, "dashboard-model-swapped.png")

    admin(server, "/api/models/rollback")
    server.send(scenario["healthy"][0])
    expect(page.locator("#model-store")).to_have_text(before["store_version"], timeout=10_000)
    expect(page.locator("#model-name")).to_have_text(before["name"])


def test_the_models_page_starts_a_shadow_and_shows_the_comparison(server, scenario, open_context, tmp_path):
    """/models (linked from every page's nav): the admin token entered, the versions listed, a
    candidate shadowed with a click, readings sent, the per-fault comparison and the largest
    disagreements shown; the shadow stopped again."""
    ctx, _ = open_context(viewport={"width": 1280, "height": 900})
    candidate = tmp_path / "candidate"
    make_linear_model(candidate, seed=9)
    version = admin(server, "/api/models", model_archive(candidate))["version"]
    page = ctx.new_page()
    page.goto(server.url + "/report")
    page.locator('nav a[href="/models"]').click()
    page.locator("#admin-token").fill(ADMIN)
    page.locator("#admin-form button").click()
    row = page.locator(f'#versions tr[data-version="{version}"]')
    expect(row).to_be_visible()
    row.get_by_role("button", name="Shadow").click()
    expect(row.locator("td").nth(3)).to_have_text("shadow", timeout=10_000)
    for body in scenario["healthy"][:5]:
        server.send(body)
    page.locator("#compare-version").select_option(version)
    for _ in range(50):  # the shadow's thread writes within a fraction of a second
        page.locator("#compare-form button").click()
        if page.locator("#per-fault tbody tr").count() == 8:
            break
        page.wait_for_timeout(200)
    expect(page.locator("#per-fault tbody tr")).to_have_count(8)
    expect(page.locator("#compare-summary")).to_contain_text("readings scored by both")
    compared = json.loads(urllib.request.urlopen(urllib.request.Request(
        f"{server.url}/api/models/{version}/compare", headers={"Authorization": f"Bearer {ADMIN}"}),
        timeout=30).read())
    expect(page.locator("#disagreements tbody tr").first.locator("td").first).to_have_text(
        str(compared["disagreements"][0]["id"]))
    shot(page, "models-compare.png")
    row.get_by_role("button", name="Stop shadow").click()
    expect(row.locator("td").nth(3)).to_have_text("", timeout=10_000)
