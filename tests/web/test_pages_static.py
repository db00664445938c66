"""The pages as served, without a browser (the browser tests in test_pages_shared.py show the
same in Chromium): each page's <meta> Content-Security-Policy is the server's header, every page
script is built on the one shared script (web/static/common.js), and no script names a fault."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.web.browser_helpers import NOT_IN_META, directives

STATIC = Path(__file__).resolve().parents[2] / "web" / "static"
PAGES = ("/", "/report", "/dashboard", "/machines", "/alarms", "/models")
META = re.compile(r'<meta http-equiv="Content-Security-Policy" content="([^"]*)">')
SCRIPT = re.compile(r'<script type="module" src="/static/([\w.-]+\.js)"></script>')


@pytest.mark.parametrize("path", PAGES)
def test_meta_csp_is_the_header(client, path):
    r = client.get(path)
    assert r.status_code == 200
    metas = META.findall(r.text)
    assert len(metas) == 1, metas
    header = directives(r.headers["content-security-policy"])
    assert directives(metas[0]) == {k: v for k, v in header.items() if k not in NOT_IN_META}


@pytest.mark.parametrize("path", PAGES)
def test_every_page_script_uses_the_shared_script(client, path):
    html = client.get(path).text
    scripts = SCRIPT.findall(html)
    assert len(scripts) == 1, scripts
    assert '<link rel="modulepreload" href="/static/common.js">' in html
    source = client.get(f"/static/{scripts[0]}").text
    assert re.search(r'from "\./common\.js";', source), scripts[0]


def test_no_script_hard_codes_the_faults():
    """The fault names (and how many there are) come from /api/model."""
    for js in STATIC.glob("*.js"):
        text = js.read_text()
        assert not re.search(r"fault\d", text), js.name
        assert not re.search(r"length: 8\b|< 8\b", text), js.name


NAV = re.compile(r'<nav aria-label="Pages">(.*?)</nav>', re.S)


@pytest.mark.parametrize("path", PAGES)
def test_every_page_links_every_page_in_its_navigation(client, path):
    """The fleet overview is one click from anywhere, and each page marks itself as current."""
    navs = NAV.findall(client.get(path).text)
    assert len(navs) == 1, path
    links = re.findall(r'<a href="([^"]+)"', navs[0])
    assert sorted(links) == sorted(PAGES), (path, links)
    assert re.search(rf'<a href="{re.escape(path)}" aria-current="page">', navs[0]), path
