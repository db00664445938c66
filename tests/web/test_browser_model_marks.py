"""The charts mark where another model took over (GET /api/model/changes), in Debian's Chromium
against the real server: an activation over HTTP, then readings scored by the new model."""

from __future__ import annotations

import json
import urllib.request
from datetime import UTC, datetime, timedelta

import pytest

from tests.harness import Server, make_linear_model, model_archive
from tests.http.test_model_routes import with_replay
from tests.web.browser_helpers import expect, open_live, shot

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]

ADMIN = {"Authorization": "Bearer admin-secret"}


@pytest.fixture(scope="module")
def server(tmp_path_factory, model_dir, scenario):
    with Server(tmp_path_factory.mktemp("browser-marks") / "data", model_dir,
                args=[*scenario["args"], "--admin-token", "admin-secret", "--no-access-log"]) as srv:
        yield srv


def test_a_model_switch_is_marked_on_every_chart(server, tmp_path, scenario, open_context):
    other = tmp_path / "model-b"
    with_replay(other, make_linear_model(other, seed=5))
    srv = server
    if True:
        now = datetime.now(UTC).replace(microsecond=0)

        def send(k: int) -> None:
            srv.send({**scenario["healthy"][k % len(scenario["healthy"])],
                      "Time": (now - timedelta(seconds=300 - 10 * k)).strftime("%Y-%m-%d %H:%M:%S")})

        for k in range(10):
            send(k)
        upload = urllib.request.Request(srv.url + "/api/models", data=model_archive(other), method="POST",
                                        headers={**ADMIN, "Content-Type": "application/gzip"})
        with urllib.request.urlopen(upload, timeout=30) as answer:
            added = json.loads(answer.read())
        status, body = srv.request("POST", f"/api/models/{added['version']}/activate", headers=ADMIN)
        assert status == 200, body
        for k in range(10, 20):
            send(k)
        changes = srv.get("/api/model/changes")["changes"]
        assert [c["version"] for c in changes][-1] == added["version"]

        ctx, _ = open_context(viewport={"width": 1440, "height": 900})
        page = open_live(ctx, srv.url + "/?range=1h")
        marks = page.locator("#charts .chart-mark")
        expect(marks.first).to_be_attached(timeout=5000)
        assert marks.count() == page.locator("#charts .chart").count()  # one per chart
        assert added["version"] in marks.first.get_attribute("title")
        shot(page, "charts-model-switch.png")
