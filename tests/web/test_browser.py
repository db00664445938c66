"""The pages in a real browser: Debian's Chromium driven by Playwright, against the real
server (`python -m edge serve`) started as a subprocess.

Never downloads a browser: without /usr/bin/chromium (apt-get install chromium) these tests
skip, or fail when FDEDGE_REQUIRE_BROWSER=1 (CI). Screenshots go to
test-output/screenshots/.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from edge.fdrest import CATALOGUE, FAULTS, FEATURES
from tests.conftest import Server as BaseServer

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]

REPO = Path(__file__).resolve().parents[2]
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


try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # pragma: no cover - depends on the test extra
    sync_playwright = None


# --- readings --------------------------------------------------------------------------

# Used only when neither FD-REST's data.csv nor the simulator is available.
LITERAL_HEALTHY = dict(zip(FEATURES, (
    3770.0, 33.0, -31.0, 3.1, 3.1, 3.1, 1.5, 1.2, 1.3, 0.40, 0.33, 0.40, 7.5, 6.2, 7.1,
    -4.5, -26.0, -31.0, -36.0, -39.0, -41.0, -41.0, -40.0, -41.0, -47.0,
    0.30, 0.090, 0.070, 0.060, 0.040, 0.055, 0.075, 0.090, 0.080, 0.030)))


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


# --- the server ------------------------------------------------------------------------

class Server(BaseServer):
    """`python -m edge serve` on loopback (tests/conftest.py); restartable on the same port and
    database, and stopped like a power cut: committed rows are on disk (WAL)."""

    def __init__(self, data_dir: Path, model_dir: Path, args: list[str]) -> None:
        super().__init__(data_dir, model_dir, args=args)

    def stop(self) -> None:
        self.kill()

    def log(self) -> str:
        return self.read_log()

    def request(self, method: str, path: str, body: object = None, headers: dict | None = None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json", **(headers or {})})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")

    def get(self, path: str, **params) -> dict:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        status, body = self.request("GET", path + query)
        assert status == 200, (path, status, body)
        return body

    def send(self, reading: dict) -> dict[str, float]:
        status, body = self.request("POST", "/send", reading)
        assert status == 200, (status, body)
        return body[0]

    def latest(self, machine: str | None = None) -> dict:
        params = {"limit": 1, **({"machine": machine} if machine else {})}
        return self.get("/api/latest", **params)["readings"][0]


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


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    bundled = REPO / "models" / "default"
    if (bundled / "manifest.json").is_file():
        return bundled
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
    score = lambda rows: model.predict(np.array([[r[k] for k in FEATURES] for r in rows], dtype=np.float64))
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
    return {"healthy": healthy, "strong": strong[best], "warning": warning, "alarm": alarm, "args": args}


@pytest.fixture(scope="module")
def server(tmp_path_factory, model_dir, scenario):
    base = tmp_path_factory.mktemp("browser-server")
    srv = Server(base / "data", model_dir, scenario["args"] + ["--no-access-log"])
    srv.start()
    yield srv
    srv.stop()


# --- the browser -----------------------------------------------------------------------

@pytest.fixture(scope="module", autouse=True)
def browser_available() -> None:
    """Checked before any server starts."""
    if sync_playwright is None:
        need_browser("playwright (Python) is not installed")
    if not CHROMIUM.exists():
        need_browser(f"{CHROMIUM} is missing (apt-get install -y chromium)")


@pytest.fixture(scope="module")
def browser(browser_available):
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


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
            ("/api/", "/events", "/generate_csv")) and watch.errors.append(f"HTTP {r.status} {r.url}"))
        ctx.on("page", watch.attach)
        made.append((ctx, watch))
        return ctx, watch

    yield make
    for ctx, watch in made:
        ctx.close()
        assert not watch.foreign(), f"requests left the appliance: {watch.foreign()}"
        assert not watch.errors, watch.errors
        assert not watch.dialogs, f"dialogs opened: {watch.dialogs}"


def shot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / name), full_page=True)


def number(text: str) -> float:
    return float(text.replace("−", "-"))


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


# --- tests -----------------------------------------------------------------------------

def test_dashboard_offline_and_a_new_reading_shows_within_1s(server, scenario, open_context):
    ctx, watch = open_context(viewport={"width": 1280, "height": 900})
    model = server.get("/api/model")
    page = open_live(ctx, server.url + "/")

    # All 8 faults with their category from the model's catalogue, thresholds on the page.
    expect(page.locator("#faults li")).to_have_count(len(model["faults"]))
    for entry in model["catalogue"]:
        expect(fault_tile(page, entry["fault"]).locator(".fault-cat")).to_have_text(entry["category"])
    assert number(page.text_content("#thr-warning")) == pytest.approx(scenario["warning"], abs=0.051)
    assert number(page.text_content("#thr-alarm")) == pytest.approx(scenario["alarm"], abs=0.051)
    expect(page.locator("#model-name")).to_have_text(model["name"])
    expect(page.locator("#model-version")).to_have_text(model["version"])

    reading = scenario["healthy"][0]
    start = time.monotonic()
    faults = server.send(reading)
    rid = server.latest()["id"]
    left = 1.0 - (time.monotonic() - start)
    expect(page.locator("#latest-id")).to_have_text(str(rid), timeout=max(left, 0.05) * 1000)
    assert time.monotonic() - start < 1.0

    for fault, value in faults.items():
        shown = number(fault_tile(page, fault).locator(".fault-value").text_content())
        assert shown == pytest.approx(value, abs=0.051), fault
    expect(page.locator("#features dd")).to_have_count(35)
    temperature = page.locator("#features .feat", has_text="Temperature").locator("dd")
    assert number(temperature.text_content()) == pytest.approx(reading["Temperature"], rel=1e-3)
    expect(page.locator(".chart .uplot")).to_have_count(4)

    # The last 10 minutes, oldest first, so the charts draw lines from live events.
    now = datetime.now(timezone.utc).replace(microsecond=0)
    for i in range(20):
        r = scenario["healthy"][i % len(scenario["healthy"])]
        server.send({**r, "Time": (now - timedelta(seconds=30 * (19 - i))).strftime("%Y-%m-%d %H:%M:%S")})
    expect(page.locator("#latest-id")).to_have_text(str(server.latest()["id"]))
    expect(page.locator("#rate")).not_to_have_text("0.0", timeout=2000)  # refreshed once a second
    shot(page, "dashboard.png")

    # Other ranges come from /api/series (server-side downsampling).
    for label, seconds in (("24 h", 86400), ("7 days", 604800)):
        with page.expect_response(lambda r: "/api/series" in r.url) as answer:
            page.get_by_role("button", name=label).click()
        q = urllib.parse.parse_qs(urllib.parse.urlsplit(answer.value.url).query)
        span = datetime.fromisoformat(q["end"][0].replace("Z", "+00:00")) - datetime.fromisoformat(
            q["start"][0].replace("Z", "+00:00"))
        assert answer.value.status == 200 and abs(span.total_seconds() - seconds) < 5
        assert q["machine"] == ["default"] and "fault7" in q["metrics"][0].split(",")
    page.get_by_role("button", name="Custom").click()
    local = datetime.now().replace(microsecond=0)
    page.fill("#custom-start", (local - timedelta(minutes=20)).isoformat())
    page.fill("#custom-end", local.isoformat())
    with page.expect_response(lambda r: "/api/series" in r.url) as answer:
        page.get_by_role("button", name="Show").click()
    assert answer.value.status == 200 and len(answer.value.json()["time"]) > 1
    expect(page.locator("#live-mode")).to_have_text("fixed range")

    phone = ctx.new_page()
    phone.set_viewport_size(PHONE)
    phone.goto(server.url + "/")
    wait_live(phone)
    expect(phone.locator("#latest-id")).to_have_text(str(server.latest()["id"]))
    overflow = phone.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"page is {overflow}px wider than a phone screen"
    shot(phone, "dashboard-phone.png")
    assert watch.requests, "request recording saw nothing"


def test_alarm_shows_state_and_root_causes(server, scenario, open_context):
    ctx, _ = open_context(viewport={"width": 1280, "height": 900})
    page = open_live(ctx, server.url + "/")
    faults = server.send(scenario["strong"])
    dominant = max(faults, key=faults.get)
    assert faults[dominant] >= scenario["alarm"], (faults, scenario["alarm"])
    entry = next(c for c in server.get("/api/model")["catalogue"] if c["fault"] == dominant)

    expect(page.locator("#dom-state")).to_have_text("alarm", timeout=2000)
    expect(page.locator("#dominant")).to_have_class("card dominant state-alarm")
    expect(page.locator("#dom-name")).to_contain_text(entry["category"])
    expect(page.locator("#dom-observed")).to_have_text(entry["observed"])
    expect(page.locator("#dom-causes")).to_have_text(entry["root_causes"])
    expect(fault_tile(page, dominant)).to_have_class("fault state-alarm")
    expect(fault_tile(page, dominant).locator(".fault-state")).to_have_text("alarm")
    for fault, value in faults.items():  # every tile's state follows the thresholds
        state = "alarm" if value >= scenario["alarm"] else "warning" if value >= scenario["warning"] else "normal"
        expect(fault_tile(page, fault).locator(".fault-state")).to_have_text(state)
    page.wait_for_timeout(300)  # let the chart frame draw
    shot(page, "dashboard-alarm.png")


def test_report_counts_and_downloads_matching_rows(server, scenario, open_context):
    machine = "report-line"
    base = scenario["healthy"]
    times = ["2023-11-05 23:59:59", "2023-11-06 00:00:00", "2023-11-06 15:00:00",
             "2023-11-07 09:00:00", "2023-11-07 23:59:59", "2023-11-08 00:00:00"]
    posted = []
    for i, t in enumerate(times):
        reading = base[i % len(base)] if i % 2 else scenario["strong"]
        faults = server.send({"Time": t, "machine": machine, **reading})
        posted.append((t, max(faults.values())))
    in_range = [(t, m) for t, m in posted if "2023-11-06" <= t[:10] <= "2023-11-07"]
    # Rounded down: a threshold typed on the page still matches the row it came from.
    threshold = math.floor(sorted(m for _, m in in_range)[len(in_range) // 2] * 1000) / 1000
    expected = sorted(t for t, m in in_range if m >= threshold)
    assert 0 < len(expected) < len(posted)

    ctx, _ = open_context(viewport={"width": 1000, "height": 700})
    page = ctx.new_page()
    page.goto(server.url + "/report")
    expect(page.locator("#machine option", has_text=machine)).to_have_count(1)
    page.fill("#start", "2023-11-06")
    page.fill("#end", "2023-11-07")
    page.fill("#threshold", str(threshold))
    page.select_option("#machine", machine)
    n = len(expected)
    expect(page.locator("#count")).to_have_text(f"{n} matching row{'s' if n != 1 else ''}")

    with page.expect_download() as info:
        page.click("#download")
    download = info.value
    rows = list(csv.DictReader(io.StringIO(Path(download.path()).read_text())))
    assert list(rows[0])[-2:] == ["machine", "alarms"]  # FD-Edge's columns after FD-REST's
    assert sorted(r["time"][:19] for r in rows) == expected
    assert all(r["machine"] == machine and float(r["max_fault"]) >= threshold for r in rows)
    assert download.suggested_filename.endswith(".csv")
    expect(page.locator("#result")).to_contain_text(f"Downloading {n} row")
    shot(page, "report.png")

    # Nothing in range: a message, and no download.
    page.fill("#start", "2001-01-01")
    page.fill("#end", "2001-01-02")
    page.click("#download")
    expect(page.locator("#result")).to_contain_text("No readings match")
    expect(page.locator("#count")).to_have_text("0 matching rows")

    # Bad input caught on the page, and the server's own message for what only it checks.
    page.fill("#start", "2023-11-08")
    page.fill("#end", "2023-11-06")
    page.click("#count-btn")
    expect(page.locator("#result")).to_have_text("The start date is after the end date.")
    page.fill("#start", "2023-11-06")
    page.fill("#end", "2023-11-07")
    page.evaluate("""() => { const o = document.createElement("option");
        o.value = "fault9"; o.textContent = "fault9"; document.getElementById("fault").append(o); }""")
    page.select_option("#fault", "fault9")
    status, body = server.request("GET", "/api/count?start=2023-11-06&end=2023-11-07&fault=fault9")
    assert status == 400
    expect(page.locator("#result")).to_have_text(body["message"])
    expect(page.locator("#result")).to_have_class("result error")


def test_stream_resumes_without_gap_after_server_restart(server, scenario, open_context):
    ctx, watch = open_context(viewport={"width": 1280, "height": 900})
    table = open_live(ctx, server.url + "/dashboard")
    live = open_live(ctx, server.url + "/?machine=default")

    healthy = scenario["healthy"]
    faults = server.send(healthy[0])
    first = server.latest()["id"]
    expect(table.locator("#rows tr").first).to_have_attribute("data-id", str(first))
    # The pages ask for the compact arrays shape and name its values from hello.
    cells = table.locator("#rows tr").first.locator("td").all_text_contents()
    assert [number(c) for c in cells[5:13]] == pytest.approx([faults[f"fault{i}"] for i in range(8)], abs=0.051)
    assert number(cells[13]) == pytest.approx(healthy[0]["Temperature"], rel=1e-3)
    assert number(cells[14]) == pytest.approx(healthy[0]["Rotation Speed"], rel=1e-3)
    streams = [urllib.parse.urlsplit(u) for u in watch.requests if urllib.parse.urlsplit(u).path == "/events"]
    assert len(streams) >= 2 and all(urllib.parse.parse_qs(u.query)["shape"] == ["arrays"] for u in streams)

    server.stop()
    expect(table.locator("#conn")).not_to_have_attribute("data-state", "live", timeout=5000)
    server.start()
    for r in healthy[1:4]:  # posted before the pages have reconnected
        server.send(r)
    wait_live(table)
    for r in healthy[4:7]:
        server.send(r)
    last = server.latest()["id"]

    expect(table.locator("#rows tr").first).to_have_attribute("data-id", str(last), timeout=10_000)
    ids = [int(i) for i in table.locator("#rows tr").evaluate_all("rows => rows.map(r => r.dataset.id)")]
    assert ids[: last - first + 1] == list(range(last, first - 1, -1)), "rows missing or repeated"
    expect(live.locator("#latest-id")).to_have_text(str(last), timeout=10_000)
    wait_live(live)
    shot(table, "table.png")


def test_burst_keeps_table_bounded_and_shows_the_newest(server, scenario, open_context):
    ctx, _ = open_context(viewport={"width": 1280, "height": 900})
    table = ctx.new_page()
    table.goto(server.url + "/dashboard")
    live = ctx.new_page()
    live.goto(server.url + "/?machine=default")
    wait_live(table)
    wait_live(live)
    batch = [scenario["healthy"][i % len(scenario["healthy"])] for i in range(600)]
    status, body = server.request("POST", "/send", batch)
    assert status == 200 and len(body) == 600
    last = server.latest()["id"]
    expect(table.locator("#rows tr").first).to_have_attribute("data-id", str(last), timeout=3000)
    expect(table.locator("#rows tr")).to_have_count(50)
    expect(live.locator("#latest-id")).to_have_text(str(last), timeout=3000)
    assert live.evaluate("performance.now()") > 0  # still answering


def test_hostile_machine_name_renders_as_text(server, scenario, open_context):
    ctx, watch = open_context(viewport={"width": 1280, "height": 900})
    server.send({"machine": HOSTILE, **scenario["healthy"][0]})
    page = open_live(ctx, server.url + "/?machine=" + urllib.parse.quote(HOSTILE))
    expect(page.locator("#latest-machine")).to_have_text(HOSTILE)
    expect(page.locator("#machine option", has_text=HOSTILE)).to_have_count(1)
    expect(page.locator("#machine-pick")).to_be_visible()

    page.select_option("#machine", "default")  # and back: the selector switches the stream
    expect(page.locator("#latest-machine")).to_have_text("default")
    page.select_option("#machine", HOSTILE)
    expect(page.locator("#latest-machine")).to_have_text(HOSTILE)
    wait_live(page)

    table = ctx.new_page()
    table.goto(server.url + "/dashboard")
    expect(table.locator("#rows td.name", has_text=HOSTILE).first).to_be_visible()
    shot(table, "table-hostile-name.png")
    report = ctx.new_page()
    report.goto(server.url + "/report")
    expect(report.locator("#machine option", has_text=HOSTILE)).to_have_count(1)
    for p in (page, table, report):
        p.wait_for_timeout(200)
        assert p.evaluate("document.images.length") == 0
    assert not any(urllib.parse.urlsplit(u).path == "/x" for u in watch.requests)
    assert not watch.dialogs


def test_read_token_form_stores_cookie_and_retries(tmp_path, model_dir, open_context, scenario):
    srv = Server(tmp_path / "data", model_dir, ["--read-token", "s3cret-token", "--no-access-log"])
    srv.start()
    try:
        ctx, _ = open_context(hosts={f"127.0.0.1:{srv.port}"}, viewport=PHONE)
        page = ctx.new_page()
        page.goto(srv.url + "/")
        form = page.locator("#token-form")
        expect(form).to_be_visible()
        shot(page, "token-form.png")
        form.locator("input").fill("wrong")
        form.locator("button").click()
        expect(form).to_be_visible()  # asked again
        form.locator("input").fill("s3cret-token")
        form.locator("button").click()
        wait_live(page)
        expect(form).to_be_hidden()
        cookie = next(c for c in ctx.cookies() if c["name"] == "fdedge_token")
        assert (cookie["value"], cookie["sameSite"], cookie["path"]) == ("s3cret-token", "Strict", "/")
        srv.send(scenario["healthy"][0])
        expect(page.locator("#latest-id")).to_have_text("1")  # first row of a fresh database
    finally:
        srv.stop()
