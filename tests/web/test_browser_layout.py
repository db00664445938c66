"""The 8 fault tiles lay out 8 across, 4x2 or 2x4 at every width, never 7+1 (seen at 1,280 and
1,440 px), in Debian's Chromium against the real server."""

from __future__ import annotations

from collections import Counter

import pytest

from tests.harness import Server
from tests.web.browser_helpers import expect, open_live, shot

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def server(tmp_path_factory, model_dir, scenario):
    with Server(tmp_path_factory.mktemp("browser-layout") / "data", model_dir,
                args=[*scenario["args"], "--no-access-log"]) as srv:
        srv.send(scenario["healthy"][0])
        yield srv


@pytest.mark.parametrize("width,height", [(1440, 900), (1280, 800), (1024, 768), (800, 900), (390, 844)])
def test_the_fault_tiles_fill_whole_rows(server, open_context, width, height):
    ctx, _ = open_context(viewport={"width": width, "height": height})
    page = open_live(ctx, server.url + "/")
    tiles = page.locator("#faults > li")
    expect(tiles).to_have_count(8)
    tops = Counter(round(t) for t in tiles.evaluate_all("els => els.map(e => e.getBoundingClientRect().top)"))
    per_row = sorted(tops.values())
    assert per_row in ([8], [4, 4], [2, 2, 2, 2]), f"{width} px: tiles per row {per_row}"
    if width in (1440, 390):
        shot(page, f"fault-tiles-{width}.png")
