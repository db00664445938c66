"""Fixtures of the browser tests: Debian's Chromium (never downloaded), the model the pages are
tested with and a scenario for it, and browser contexts that fail the test on anything a page
must not do. Each module starts its own server (tests/harness.py's `Server`, stopped like a
power cut: `power_cut=True`)."""

from __future__ import annotations

import urllib.parse
from pathlib import Path

import pytest

from edge.fdrest import FEATURES
from tests.harness import BUNDLED
from tests.web.browser_helpers import (
    CHROMIUM,
    CHROMIUM_ARGS,
    CSP_WATCH,
    Watch,
    build_standin_model,
    exaggerated,
    healthy_readings,
    need_browser,
    sync_playwright,
)


@pytest.fixture(scope="module", autouse=True)
def browser_available(request) -> None:
    """Checked before any server of a browser-marked module starts."""
    if request.node.get_closest_marker("browser") is None:
        return
    if sync_playwright is None:
        need_browser("playwright (Python) is not installed")
    if not CHROMIUM.exists():
        need_browser(f"{CHROMIUM} is missing (apt-get install -y chromium)")


@pytest.fixture(scope="module")
def browser(browser_available):
    if sync_playwright is None or not CHROMIUM.exists():
        need_browser(f"no Playwright or no {CHROMIUM}")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    if (BUNDLED / "manifest.json").is_file():
        return BUNDLED
    try:
        import onnx  # noqa: F401  (build extra)
    except ImportError:
        pytest.skip("models/default has no converted model (make convert) and onnx is not installed for a stand-in")
    directory = tmp_path_factory.mktemp("standin-model")
    build_standin_model(directory)
    return directory


@pytest.fixture(scope="module")
def scenario(model_dir) -> dict:
    """Healthy readings, the exaggerated reading the model scores highest, and thresholds
    that put the healthy ones below warning and that one in alarm (the defaults if they do)."""
    import numpy as np

    from edge.scoring.model import load

    model = load(model_dir)
    healthy = healthy_readings()
    strong = exaggerated(healthy[0])
    def score(rows):
        return model.predict(np.array([[r[k] for k in FEATURES] for r in rows], dtype=np.float64))
    healthy_max = float(score(healthy).max())
    strong_scores = score(strong).max(axis=1)
    best = int(strong_scores.argmax())
    top = float(strong_scores[best])
    if top >= 60.0 and healthy_max < 30.0:
        args, warning, alarm = [], 30.0, 60.0
    elif top > healthy_max:
        alarm = round((top + healthy_max) / 2, 2)
        warning = round((alarm + healthy_max) / 2, 2)
        args = ["--warning-threshold", str(warning), "--alarm-threshold", str(alarm)]
    else:  # a model that does not react: everything alarms, the page must still say so
        alarm, warning = round(top - 1, 2), round(top - 2, 2)
        args = ["--warning-threshold", str(warning), "--alarm-threshold", str(alarm)]
    # the healthy rows the model's data-quality check calls ok (FD-REST's sample rows lie partly
    # outside the bundled model's training data: suspect, which the fleet overview ranks first)
    from edge.scoring.quality import SUSPECT, Quality

    verdicts = Quality(model.training_stats).evaluate(
        np.array([[r[k] for k in FEATURES] for r in healthy], dtype=np.float64), [f"m{i}" for i in range(len(healthy))])
    ok = [r for r, status in zip(healthy, verdicts.status, strict=True) if status < SUSPECT] or healthy
    return {"healthy": healthy, "ok": ok, "strong": strong[best], "warning": warning, "alarm": alarm, "args": args}


@pytest.fixture(scope="module")
def unchecked_model_dir(model_dir, tmp_path_factory) -> Path:
    """The model without its training statistics: every reading's quality is unknown. For pages
    tested on their alarm and stale states, which a suspect verdict would outrank (the readings the
    tests exaggerate lie far outside the training data); quality on the pages has tests of its own."""
    import json
    import shutil

    directory = tmp_path_factory.mktemp("unchecked-model")
    for f in model_dir.iterdir():
        if f.is_file():
            shutil.copy(f, directory / f.name)
    manifest = json.loads((directory / "manifest.json").read_text())
    manifest.pop("training_stats", None)
    (directory / "manifest.json").write_text(json.dumps(manifest))
    return directory


@pytest.fixture
def open_context(browser, server):
    """open_context(**options) -> (context, watch); checked for foreign requests and errors."""
    made: list[tuple] = []

    def make(hosts: set[str] | None = None, **options):
        ctx = browser.new_context(accept_downloads=True, **options)
        watch = Watch(hosts or {f"127.0.0.1:{server.port}"})
        ctx.add_init_script(CSP_WATCH)
        ctx.on("request", lambda r: watch.requests.append(r.url))
        # API errors are part of some tests; a missing asset or page never is.
        ctx.on("response", lambda r: r.status >= 400 and not urllib.parse.urlsplit(r.url).path.startswith(
            ("/api/", "/events", "/generate_csv", "/login")) and watch.errors.append(f"HTTP {r.status} {r.url}"))
        ctx.on("page", watch.attach)
        made.append((ctx, watch))
        return ctx, watch

    yield make
    for ctx, watch in made:
        ctx.close()
        assert not watch.foreign(), f"requests left the appliance: {watch.foreign()}"
        assert not watch.errors, watch.errors
        assert not watch.dialogs, f"dialogs opened: {watch.dialogs}"
