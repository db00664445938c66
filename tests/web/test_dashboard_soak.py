"""The live pages held open for a long time: the dashboard (/) and the live table (/dashboard) in
Debian's Chromium against the real server (subprocess, temporary data directory, free port; the
fixtures of tests/web/conftest.py, the helpers of tests/web/browser_helpers.py), while a sender
thread posts 10 readings per second, one POST /send each (FD-REST's sample rows with advancing
times; every ALARM_EVERY-th reading is alarm-level, and the module's rules raise an alarm on one
reading and clear it on the next, so the alarm panel raises and clears all the time).

Runs FDEDGE_DASHBOARD_SOAK_S seconds (default 120); marked `soak` (and `browser`), so `make soak`
runs it and `make test` (-m "not soak") does not. Every second it probes how far each page is
behind the newest stored reading; every SAMPLE_S seconds it appends a line of JSON to
test-output/dashboard-soak.jsonl (elapsed s, readings stored, newest id shown vs stored and the
lag in readings and seconds, JS heap after a forced GC, DOM nodes, table rows, alarm items shown,
server RSS, console errors so far). test-output/dashboard-soak.json holds the summary and
test-output/screenshots/dashboard-soak*.png the pages at the end. The viewport (1280 x 1600) shows
the whole dashboard, so all four charts redraw throughout (charts.js skips charts off screen).

Checked (the bounds):
- after the first LAG_GRACE_S, neither page is ever more than MAX_LAG_S behind: the oldest reading
  it has not shown was sent at most MAX_LAG_S ago (probed every second);
- JS heap (used, after a forced GC) at the end < HEAP_GROWTH x the heap at the reference sample
  (60 s, or half the run when it is shorter than 2 minutes): no unbounded growth;
- DOM nodes of each page never above DOM_GROWTH x its count at the reference sample, and the
  live table never holds more than its 50 rows;
- server RSS at the end < RSS at the first sample + RSS_GROWTH_MB;
- no console errors, page errors, dialogs or failed (>= 400) responses, no request to any other
  host (browser_helpers' Watch), and each page's connection state is "live" throughout (a
  MutationObserver records every change of #conn's data-state);
- every reading was accepted (200) and at least 95 % of 10 per second were sent; every
  ALARM_EVERY-th one was alarm-level, and /api/alarms holds exactly one alarm (active or cleared)
  per fault those readings were scored at or above warning; the alarm panel shows what
  /api/alarms says at the end.
"""

from __future__ import annotations

import json
import os
import threading
import time
from datetime import date, datetime, timedelta, timezone

import pytest

from tests.harness import REPO, Server
from tests.reliability_helpers import post, rss_mb
from tests.web.browser_helpers import expect, open_live, shot

SOAK_S = float(os.environ.get("FDEDGE_DASHBOARD_SOAK_S") or 120)
RATE = 10  # readings per second, one POST each
ALARM_EVERY = 300  # every 300th reading (every 30 s) is alarm-level
SAMPLE_S = 10.0  # one line of JSON every 10 s
LAG_GRACE_S = 10.0  # the lag is judged from here on
MAX_LAG_S = 2.0
HEAP_GROWTH = 2.0  # heap at the end < 2 x heap at the reference sample
DOM_GROWTH = 1.5  # DOM nodes never above 1.5 x the reference sample's
RSS_GROWTH_MB = 20.0
TABLE_ROWS = 50  # table.js MAX_ROWS
OUT = REPO / "test-output"
JSONL = OUT / "dashboard-soak.jsonl"
SUMMARY = OUT / "dashboard-soak.json"

pytestmark = [pytest.mark.soak, pytest.mark.browser, pytest.mark.timeout(int(SOAK_S) + 600)]

# Every change of the connection state, with the page's clock.
CONN_LOG = """() => {
  window.__connLog = [];
  const c = document.getElementById("conn");
  new MutationObserver(() => window.__connLog.push([Math.round(performance.now()), c.dataset.state]))
    .observe(c, { attributes: true, attributeFilter: ["data-state"] });
}"""


@pytest.fixture(scope="module")
def server(tmp_path_factory, model_dir, scenario):
    """One reading at or above warning raises an alarm, one below warning clears it."""
    base = tmp_path_factory.mktemp("dashboard-soak")
    rules = base / "rules.json"
    # the exaggerated readings are suspect data (far outside training): counted, no quality alarm
    rules.write_text(json.dumps({"defaults": {"consecutive": 1, "clear": round(scenario["warning"] - 0.01, 2),
                                              "suspect": "count"}, "quality": {"alarm": False}}))
    args = scenario["args"] + ["--alarm-rules", str(rules), "--no-access-log"]
    with Server(base / "data", model_dir, args=args, power_cut=True) as srv:
        yield srv


def utc(text: str) -> datetime:
    dt = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace(" ", "T"))
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


class Sender(threading.Thread):
    """RATE single readings per second on its own schedule (catches up if it falls behind).
    `raised` counts the alarms the accepted alarm-level readings must have raised: one per fault
    the appliance scored at or above `warning` (the readings between clear them again)."""

    def __init__(self, port: int, healthy: list[dict], strong: dict, warning: float) -> None:
        super().__init__(name="dashboard-soak-sender", daemon=True)
        self.port, self.healthy, self.strong, self.warning = port, healthy, strong, warning
        self.stop = threading.Event()
        self.sent = self.alarms = self.raised = 0
        self.errors: list[str] = []

    def run(self) -> None:
        due = time.monotonic()
        i = 0
        while not self.stop.is_set():
            due += 1 / RATE
            pause = due - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            alarm = i % ALARM_EVERY == ALARM_EVERY // 2
            body = dict(self.strong if alarm else self.healthy[i % len(self.healthy)])
            body["Time"] = datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
            try:
                r = post(self.port, body, timeout=10)
                if r.status == 200:
                    self.sent += 1
                    self.alarms += alarm
                    if alarm:
                        self.raised += sum(v >= self.warning for v in r.json()[0].values())
                else:
                    self.errors.append(f"{r.status} {r.text[:200]}")
            except OSError as exc:
                self.errors.append(repr(exc))
            i += 1


def lag(shown: int | None, newest: list[dict]) -> tuple[int, float]:
    """(readings stored after the one shown, seconds since the oldest of them was sent).
    newest: /api/latest rows, newest first."""
    if not newest:
        return 0, 0.0
    top = newest[0]["id"]
    if shown is not None and shown >= top:
        return 0, 0.0
    behind = top - (shown or 0)
    unshown = [r for r in newest if shown is None or r["id"] > shown]
    oldest = unshown[-1]
    seconds = (datetime.now(timezone.utc) - utc(oldest["time"])).total_seconds()
    if len(unshown) < behind:  # more behind than the rows asked for: at least this
        seconds = max(seconds, behind / RATE)
    return behind, round(max(seconds, 0.0), 3)


def test_dashboard_and_table_hold_up(server, scenario, open_context):
    OUT.mkdir(parents=True, exist_ok=True)
    JSONL.write_text("")
    # Tall enough for the whole dashboard: charts off screen are not redrawn (charts.js), and a
    # wall display shows them all.
    # Each page in its own context, as on two wall displays: Chromium throttles the animation
    # frames of a page that shares its window with one opened after it (5 a second, at times
    # one), though it reports itself visible, and the dashboard renders on animation frames.
    failed: list[str] = []  # any response >= 400, API and stream included
    watches = []
    pages = {}
    for name, path in (("dashboard", "/"), ("table", "/dashboard")):
        ctx, page_watch = open_context(viewport={"width": 1280, "height": 1600})
        ctx.on("response", lambda r: r.status >= 400 and failed.append(f"HTTP {r.status} {r.url}"))
        watches.append(page_watch)
        pages[name] = open_live(ctx, server.url + path)
    dash, table = pages["dashboard"], pages["table"]

    def errors() -> list[str]:
        return [e for w in watches for e in w.errors]

    def foreign() -> list[str]:
        return [u for w in watches for u in w.foreign()]
    cdp = {}
    for name, page in pages.items():
        page.evaluate(CONN_LOG)
        session = page.context.new_cdp_session(page)
        session.send("Performance.enable")
        cdp[name] = session

    def shown_id(name: str) -> int | None:
        if name == "dashboard":
            text = dash.text_content("#latest-id") or ""
        else:
            text = table.evaluate("() => document.querySelector('#rows tr')?.dataset.id ?? ''")
        return int(text) if text.strip().isdigit() else None

    def newest(limit: int) -> list[dict]:
        return server.get("/api/latest", limit=limit)["readings"]

    def heap_mb(name: str) -> tuple[float, float]:
        """(JS heap used before, after a forced garbage collection), MB."""
        session = cdp[name]
        metric = lambda: {m["name"]: m["value"] for m in session.send("Performance.getMetrics")["metrics"]}
        before = metric()["JSHeapUsedSize"]
        session.send("HeapProfiler.collectGarbage")
        after = metric()["JSHeapUsedSize"]
        return round(before / 2**20, 2), round(after / 2**20, 2)

    day = date.today()
    count_span = {"start": (day - timedelta(days=1)).isoformat(), "end": (day + timedelta(days=2)).isoformat()}
    sender = Sender(server.port, scenario["healthy"], scenario["strong"], scenario["warning"])
    probes: list[dict] = []  # every second: elapsed, lag of each page
    samples: list[dict] = []
    t0 = time.monotonic()
    sender.start()
    next_sample = SAMPLE_S
    try:
        while True:
            dash.wait_for_timeout(1000)  # keeps Playwright's events flowing while waiting
            elapsed = time.monotonic() - t0
            ids = {name: shown_id(name) for name in pages}
            rows = newest(50)
            if rows and min((i or 0) for i in ids.values()) < rows[-1]["id"]:
                rows = newest(1000)
            probe = {"t": round(elapsed, 1)}
            for name, shown in ids.items():
                probe[f"{name}_lag_readings"], probe[f"{name}_lag_s"] = lag(shown, rows)
                probe[f"{name}_conn"] = pages[name].get_attribute("#conn", "data-state")
            probes.append(probe)
            assert server.proc.poll() is None, f"the server died: {server.read_log()}"

            if elapsed >= next_sample or elapsed >= SOAK_S:
                window = [p for p in probes if p["t"] > elapsed - SAMPLE_S - 0.5]
                sample = {
                    "t": round(elapsed, 1),
                    "stored": server.get("/api/count", **count_span)["count"],
                    "stored_id": rows[0]["id"] if rows else 0,
                    "sent": sender.sent, "send_errors": len(sender.errors), "alarm_readings": sender.alarms,
                }
                for name, page in pages.items():
                    before, after = heap_mb(name)
                    sample.update({
                        f"{name}_id": ids[name],
                        f"{name}_lag_readings": probe[f"{name}_lag_readings"],
                        f"{name}_lag_s": probe[f"{name}_lag_s"],
                        f"{name}_lag_max_s": max(p[f"{name}_lag_s"] for p in window),
                        f"{name}_heap_mb": after, f"{name}_heap_before_gc_mb": before,
                        f"{name}_dom_nodes": page.evaluate("document.getElementsByTagName('*').length"),
                        f"{name}_conn": probe[f"{name}_conn"],
                        f"{name}_conn_changes": len(page.evaluate("window.__connLog")),
                    })
                sample["table_rows"] = table.locator("#rows tr").count()
                sample["alarms_active_shown"] = dash.locator("#alarms-active li").count()
                sample["alarms_cleared_shown"] = dash.locator("#alarms-cleared li").count()
                sample["server_rss_mb"] = round(rss_mb(server.proc.pid), 1)
                sample["console_errors"] = len(errors())
                sample["failed_responses"] = len(failed)
                samples.append(sample)
                with JSONL.open("a") as fh:
                    fh.write(json.dumps(sample) + "\n")
                next_sample += SAMPLE_S
            if elapsed >= SOAK_S:
                shot(dash, "dashboard-soak.png")  # still live: readings are arriving
                shot(table, "dashboard-soak-table.png")
                break
    finally:
        sender.stop.set()
        sender.join(30)

    # -- the end: what the alarm panel shows agrees with the server
    alarms_active = len(server.get("/api/alarms", state="active", limit=1000)["alarms"])
    alarms_cleared = len(server.get("/api/alarms", state="cleared", limit=1000)["alarms"])
    panel_ok = True
    try:
        expect(dash.locator("#alarms-active li")).to_have_count(alarms_active, timeout=5000)
        expect(dash.locator("#alarms-cleared li")).to_have_count(min(alarms_cleared, 10), timeout=5000)
    except AssertionError:
        panel_ok = False
    conn_log = {name: page.evaluate("window.__connLog") for name, page in pages.items()}

    # -- figures
    judged = [p for p in probes if p["t"] >= LAG_GRACE_S]
    reference_t = min(60.0, SOAK_S / 2)
    reference = next((s for s in samples if s["t"] >= reference_t - 0.5), samples[-1])
    first, last = samples[0], samples[-1]
    summary = {
        "seconds": SOAK_S, "rate": RATE, "alarm_every": ALARM_EVERY, "sample_s": SAMPLE_S,
        "samples": len(samples), "probes": len(probes),
        "readings_sent": sender.sent, "send_errors": len(sender.errors), "alarm_readings": sender.alarms,
        "stored": last["stored"],
        "alarms_active": alarms_active, "alarms_cleared": alarms_cleared, "alarm_panel_agrees": panel_ok,
        "reference_t": reference["t"],
        "server_rss_start_mb": first["server_rss_mb"], "server_rss_end_mb": last["server_rss_mb"],
        "server_rss_max_mb": max(s["server_rss_mb"] for s in samples),
        "console_errors": errors(), "failed_responses": failed[:20], "dialogs": [d for w in watches for d in w.dialogs],
        "foreign_requests": foreign(), "conn_changes": conn_log,
        "bounds": {"max_lag_s": MAX_LAG_S, "lag_grace_s": LAG_GRACE_S, "heap_growth": HEAP_GROWTH,
                   "dom_growth": DOM_GROWTH, "rss_growth_mb": RSS_GROWTH_MB, "table_rows": TABLE_ROWS},
    }
    for name in pages:
        lags = [p[f"{name}_lag_s"] for p in judged] or [0.0]
        summary[name] = {
            "lag_first_s": first[f"{name}_lag_s"], "lag_last_s": last[f"{name}_lag_s"],
            "lag_max_s": max(lags), "lag_max_readings": max([p[f"{name}_lag_readings"] for p in judged] or [0]),
            "lag_p99_s": sorted(lags)[min(len(lags) - 1, int(0.99 * len(lags)))],
            "heap_first_mb": first[f"{name}_heap_mb"], "heap_reference_mb": reference[f"{name}_heap_mb"],
            "heap_end_mb": last[f"{name}_heap_mb"], "heap_max_mb": max(s[f"{name}_heap_mb"] for s in samples),
            "dom_first": first[f"{name}_dom_nodes"], "dom_reference": reference[f"{name}_dom_nodes"],
            "dom_end": last[f"{name}_dom_nodes"], "dom_max": max(s[f"{name}_dom_nodes"] for s in samples),
            "not_live_probes": sum(1 for p in probes if p[f"{name}_conn"] != "live"),
            "probes_over_0_5_s": sum(1 for x in lags if x > 0.5),
            "worst_probes": [{"t": p["t"], "lag_s": p[f"{name}_lag_s"], "lag_readings": p[f"{name}_lag_readings"]}
                             for p in sorted(judged, key=lambda p: -p[f"{name}_lag_s"])[:5]],
        }
    summary["table"]["rows_max"] = max(s["table_rows"] for s in samples)
    SUMMARY.write_text(json.dumps(summary, indent=2) + "\n")

    # -- verdicts
    assert not sender.errors, f"{len(sender.errors)} readings refused, e.g. {sender.errors[:3]}"
    assert sender.sent >= 0.95 * RATE * SOAK_S, f"sent {sender.sent} readings in {SOAK_S:.0f} s at {RATE}/s"
    for name in pages:
        s = summary[name]
        worst = max(judged, key=lambda p: p[f"{name}_lag_s"]) if judged else None
        assert s["lag_max_s"] <= MAX_LAG_S, f"{name} fell {s['lag_max_s']} s behind: {worst}"
        assert s["heap_end_mb"] < HEAP_GROWTH * s["heap_reference_mb"], (
            f"{name}: JS heap {s['heap_end_mb']} MB at the end, {s['heap_reference_mb']} MB at "
            f"{reference['t']:.0f} s: {[x[f'{name}_heap_mb'] for x in samples]}")
        assert s["dom_max"] <= DOM_GROWTH * s["dom_reference"], (
            f"{name}: {s['dom_max']} DOM nodes, {s['dom_reference']} at {reference['t']:.0f} s: "
            f"{[x[f'{name}_dom_nodes'] for x in samples]}")
        assert s["not_live_probes"] == 0 and not conn_log[name], f"{name} left 'live': {conn_log[name]}"
    assert summary["table"]["rows_max"] <= TABLE_ROWS
    growth = last["server_rss_mb"] - first["server_rss_mb"]
    assert growth < RSS_GROWTH_MB, f"server RSS grew {growth:.1f} MB: {[s['server_rss_mb'] for s in samples]}"
    assert not errors(), errors()
    assert not failed, failed[:10]
    assert not foreign(), f"requests left the appliance: {foreign()}"
    assert sender.alarms == (sender.sent + ALARM_EVERY // 2) // ALARM_EVERY, "alarm-level readings went missing"
    assert sender.raised >= sender.alarms, "an alarm-level reading scored no fault at warning"
    assert alarms_active + alarms_cleared == sender.raised, (
        f"{sender.alarms} alarm-level readings must have raised {sender.raised} alarms (one per fault at or "
        f"above warning, cleared by the next reading): {alarms_active} active + {alarms_cleared} cleared")
    assert panel_ok, f"the alarm panel does not show the {alarms_active} active / {alarms_cleared} cleared alarms"
