"""Dark mode follows the system's setting, in Debian's Chromium against the real server: every
page's ground, cards and inputs dark, its text light; and light stays light."""

from __future__ import annotations

import re

import pytest

from tests.harness import Server
from tests.web.browser_helpers import shot

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]

PAGES = ("/", "/machines", "/alarms", "/report", "/dashboard", "/models", "/login")


@pytest.fixture(scope="module")
def server(tmp_path_factory, model_dir, scenario):
    with Server(tmp_path_factory.mktemp("browser-dark") / "data", model_dir,
                args=[*scenario["args"], "--no-access-log"]) as srv:
        srv.send(scenario["healthy"][0])
        yield srv


def luminance(css: str) -> float:
    r, g, b = (int(v) / 255 for v in re.findall(r"\d+", css)[:3])
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def colours(page) -> dict[str, str]:
    return page.evaluate("""() => {
        const of = (el, p) => el ? getComputedStyle(el)[p] : null;
        return {body: of(document.body, "backgroundColor"), text: of(document.body, "color"),
                card: of(document.querySelector(".card"), "backgroundColor"),
                field: of(document.querySelector("main input, main select"), "backgroundColor")};
    }""")


@pytest.mark.parametrize("scheme", ["dark", "light"])
def test_every_page_follows_the_systems_colour_scheme(server, open_context, scheme):
    ctx, _ = open_context(viewport={"width": 1280, "height": 900}, color_scheme=scheme)
    page = ctx.new_page()
    for path in PAGES:
        page.goto(server.url + path)
        c = colours(page)
        dark = scheme == "dark"
        assert (luminance(c["body"]) < 0.2) == dark and (luminance(c["text"]) > 0.6) == dark, (path, c)
        if c["card"]:
            assert (luminance(c["card"]) < 0.2) == dark, (path, c)
        if c["field"]:
            assert (luminance(c["field"]) < 0.2) == dark, (path, c)
    if scheme == "dark":
        page.goto(server.url + "/")
        page.wait_for_timeout(500)
        shot(page, "dashboard-dark.png")


LIGHT_GRID = (229, 231, 235)  # app.css's light --chart-grid, #e5e7eb


def light_grid_pixels(page) -> int:
    """Pixels of the light scheme's grid colour on the first chart's canvas."""
    return page.evaluate("""([r, g, b]) => {
        const c = document.querySelector("#charts .uplot canvas");
        const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
        let n = 0;
        for (let i = 0; i < d.length; i += 4) {
            if (Math.abs(d[i] - r) < 6 && Math.abs(d[i + 1] - g) < 6 && Math.abs(d[i + 2] - b) < 6 && d[i + 3] > 200) n++;
        }
        return n;
    }""", list(LIGHT_GRID))


def test_charts_follow_a_switch_of_scheme_with_the_page_open(server, open_context):
    """The system turns dark at sunset while the dashboard stays open: the page's colours follow
    by CSS alone, and the charts (drawn on canvas with colours read once) redraw their axes and
    grid in the new scheme instead of keeping light grid lines on a dark ground."""
    ctx, _ = open_context(viewport={"width": 1280, "height": 900}, color_scheme="light")
    page = ctx.new_page()
    page.goto(server.url + "/")
    page.wait_for_selector("#charts .uplot canvas")
    page.wait_for_timeout(700)
    assert light_grid_pixels(page) > 200  # the grid is drawn, in the light colour
    page.emulate_media(color_scheme="dark")
    page.wait_for_timeout(700)
    assert light_grid_pixels(page) == 0
    shot(page, "dashboard-dark-switched.png")
