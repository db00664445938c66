"""Helpers of the browser tests (tests/web/): Debian's Chromium, readings that look healthy or
faulty, a stand-in model, and what a page must not do. The fixtures built on them are in
tests/web/conftest.py; the server is tests/harness.py's `Server`.

Never downloads a browser: without /usr/bin/chromium (apt-get install chromium) the browser
tests skip, or fail when FDEDGE_REQUIRE_BROWSER=1 (CI). Screenshots go to
test-output/screenshots/.
"""

from __future__ import annotations

import csv
import json
import os
import urllib.parse
from pathlib import Path

import pytest

from edge.fdrest import CATALOGUE, FAULTS, FEATURES
from tests.harness import REPO

try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # pragma: no cover - depends on the test extra
    expect = sync_playwright = None

SHOTS = REPO / "test-output" / "screenshots"
CHROMIUM = Path(os.environ.get("FDEDGE_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
FDREST_DATA = Path(os.environ.get("FDREST_DIR", "/work/shared/fdrest")) / "data.csv"
HOSTILE = "<img src=x onerror=alert(1)>"
PHONE = {"width": 390, "height": 844}
# Chromium logs every non-2xx fetch as a console error; those are expected (401, 404 tests).
NETWORK_NOISE = ("Failed to load resource", "net::ERR_")
# Reports CSP violations as console errors so the per-test check sees them.
CSP_WATCH = """document.addEventListener("securitypolicyviolation",
  (e) => console.error("CSP violation: " + e.violatedDirective + " " + e.blockedURI));"""


def need_browser(reason: str) -> None:
    if os.environ.get("FDEDGE_REQUIRE_BROWSER") == "1":
        pytest.fail(f"FDEDGE_REQUIRE_BROWSER=1 but {reason}")
    pytest.skip(reason)


# --- readings --------------------------------------------------------------------------

# Used only when neither FD-REST's data.csv nor the simulator is available.
LITERAL_HEALTHY = dict(zip(FEATURES, (
    3770.0, 33.0, -31.0, 3.1, 3.1, 3.1, 1.5, 1.2, 1.3, 0.40, 0.33, 0.40, 7.5, 6.2, 7.1,
    -4.5, -26.0, -31.0, -36.0, -39.0, -41.0, -41.0, -40.0, -41.0, -47.0,
    0.30, 0.090, 0.070, 0.060, 0.040, 0.055, 0.075, 0.090, 0.080, 0.030), strict=True))


def healthy_readings() -> list[dict[str, float]]:
    """Feature dicts (no Time): FD-REST's sample rows, read at test time, else simulated."""
    if FDREST_DATA.is_file():
        with FDREST_DATA.open(newline="") as fh:
            return [{k: float(row[k]) for k in FEATURES} for row in csv.DictReader(fh)]
    try:
        from simulator.machine import VirtualMachine
        return [dict(r.features) for r in VirtualMachine(seed=7).run(8, 60.0)]
    except Exception:
        return [dict(LITERAL_HEALTHY)]


def exaggerated(base: dict[str, float]) -> list[dict[str, float]]:
    """Readings a fault would produce: impulsive, loud ultrasound, strong vibration."""
    def change(pred, fn):
        return {k: (fn(v) if pred(k) else v) for k, v in base.items()}

    ultrasonic = {"0-8 kHz", "8-16 kHz", "16-24 kHz", "24-32 kHz", "32-40 kHz", "40-48 kHz",
                  "48-56 kHz", "56-64 kHz", "64-72 kHz", "72-80 kHz"}
    low = set(FEATURES[25:])
    impulses = change(lambda k: k.startswith(("KURTOSIS", "PEAK")), lambda v: v * 5)
    loud = change(lambda k: k in ultrasonic, lambda v: v + 30)
    shaking = change(lambda k: k.startswith("VIBRATION"), lambda v: v * 6)
    rumble = change(lambda k: k in low, lambda v: v * 10)
    everything = {**impulses, **{k: loud[k] for k in ultrasonic},
                  **{k: shaking[k] for k in FEATURES if k.startswith("VIBRATION")}, **{k: rumble[k] for k in low}}
    return [impulses, loud, shaking, rumble, everything]


def build_standin_model(directory: Path) -> None:
    """A linear model in the converted-artifact format (docs/ARTIFACTS.md): only used while
    models/default has no converted model, so the pages can still be tested."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = np.zeros((35, 8), np.float32)
    idx = {n: i for i, n in enumerate(FEATURES)}
    w[idx["0-8 kHz"], 0] = 0.5
    for ax in ("Axial", "Vertical", "Horizontal"):
        w[idx[f"KURTOSIS_{ax}"], 1] = 3.0
        w[idx[f"PEAK_{ax}"], 2] = 5.0
        w[idx[f"VIBRATION_ACC_{ax}"], 3] = 20.0
        w[idx[f"VIBRATION_VEL_{ax}"], 5] = 1.5
    w[idx["1.8-2 kHz"], 4] = 100.0
    w[idx["0-200 Hz"], 6] = 30.0
    w[idx["200-400 Hz"], 7] = 50.0
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["features", "W"], ["faults"])], "standin",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 35])],
        [helper.make_tensor_value_info("faults", TensorProto.FLOAT, ["batch", 8])],
        initializer=[numpy_helper.from_array(w, "W")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    directory.mkdir(parents=True, exist_ok=True)
    onnx.save(model, directory / "model.onnx")
    np.savez(directory / "scalers.npz", x_scale=np.ones(35), x_offset=np.zeros(35),
             y_scale=np.ones(8), y_offset=np.zeros(8))
    (directory / "manifest.json").write_text(json.dumps({
        "format": 1, "name": "browser-test-standin", "version": "standin", "onnx": "model.onnx",
        "scalers": "scalers.npz", "input_name": "features", "output_name": "faults", "opset": 17,
        "features": list(FEATURES), "faults": list(FAULTS), "catalogue": list(CATALOGUE)}))


# --- pages -----------------------------------------------------------------------------

class Watch:
    """Everything a context's pages did that a test must not see: requests to other hosts,
    uncaught errors, console errors (CSP violations included), dialogs."""

    def __init__(self, hosts: set[str]) -> None:
        self.hosts = hosts
        self.requests: list[str] = []
        self.errors: list[str] = []
        self.dialogs: list[str] = []

    def attach(self, page) -> None:
        page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))
        page.on("console", lambda m: m.type == "error" and not m.text.startswith(NETWORK_NOISE)
                and self.errors.append(f"console: {m.text}"))
        page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))

    def foreign(self) -> list[str]:
        return [u for u in self.requests if urllib.parse.urlsplit(u).netloc not in self.hosts]


def shot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / name), full_page=True)


def number(text: str) -> float:
    return float(text.replace("−", "-"))


def shown_fault(value: float) -> float:
    """What every page displays for a fault intensity: the model's value clamped to 0..100."""
    return min(100.0, max(0.0, value))


def fault_tile(page, fault: str):
    return page.locator(f'#faults li[data-fault="{fault}"]')


def wait_live(page) -> None:
    expect(page.locator("#conn")).to_have_attribute("data-state", "live", timeout=10_000)


def open_live(ctx, url: str):
    """A new page at `url`, returned once its event stream is live."""
    page = ctx.new_page()
    page.goto(url)
    wait_live(page)
    return page


# Directives a <meta> policy cannot carry (CSP 3: the browser ignores them there, with an error).
NOT_IN_META = {"frame-ancestors", "report-uri", "sandbox"}


def directives(policy: str) -> dict[str, str]:
    out = {}
    for part in policy.split(";"):
        name, _, value = part.strip().partition(" ")
        if name:
            out[name] = " ".join(value.split())
    return out
