"""Load is held: the real server at a steady 200 readings/s (single readings and batches of 50)
with 50 SSE clients connected and consuming, and retention keeping the table at a bound.

Checked over the run: no request fails; server memory stays flat (RSS at the end below 1.5 x the
RSS after warm-up + 20 MB); POST /send p99 in every later window stays within 2 x the first
window's (+5 ms), judged on the windows where other processes on the machine used less than half
a core (their CPU is measured from /proc; at least half the windows must qualify); the row count never exceeds the bound by more than what arrives between two retention
passes; every SSE client received every reading from its first to the last one, each once
(missing and duplicated ids counted, declared gaps counted separately).

`make test` runs 30 s in 10 s windows; `make soak` runs FDEDGE_SOAK_SECONDS (default 600) in
60 s windows. The SSE clients run in a separate process (asyncio, raw sockets) so that reading
10,000 events/s does not slow the load generator's clock.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.harness import BUNDLED, REPO, reading
from tests.reliability_helpers import get, metric_value, post, rss_mb, soak_seconds, wait_for

REPORT_SECTION = "load"

RATE = 200  # readings per second
BATCH = 50
SINGLES_PER_S = 50  # + (RATE - SINGLES_PER_S) / BATCH batches of BATCH per second
SSE_CLIENTS = 50
RETENTION_ROWS = 20_000
RETENTION_INTERVAL = 0.5
GRACE_MS = 5.0  # p99 may exceed 2 x the first window's by this much (timer and scheduler noise)
OTHER_WORK_CORES = 0.5  # a window where other processes used more CPU than this is not judged


# -- the SSE clients (run in their own process) -----------------------------------------------------

async def _client(port: int, stats: dict, stop: asyncio.Event, final: list) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /events HTTP/1.1\r\nHost: soak\r\nAccept: text/event-stream\r\n\r\n")
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    stats["status"] = int(head.split(b" ", 2)[1])
    chunked = b"transfer-encoding: chunked" in head.lower()
    buffer = b""
    last = None

    def handle(block: bytes) -> None:
        nonlocal last
        if block.startswith(b"id: ") and b"\r\nevent: reading\r\n" in block:
            rid = int(block[4:block.index(b"\r\n")])
            if last is not None:
                if rid <= last:
                    stats["duplicates"] += 1
                    return
                stats["missing"] += rid - last - 1
            last = rid
            stats["received"] += 1
            stats["last"] = rid
        elif b"event: hello" in block:
            data = json.loads(block[block.index(b"data: ") + 6:].split(b"\r\n")[0])
            if last is None:
                last = data["last_id"]
                stats["first"] = last
                stats["last"] = last
        elif b"event: gap" in block:
            data = json.loads(block[block.index(b"data: ") + 6:].split(b"\r\n")[0])
            stats["gap_events"] += 1
            stats["declared_skipped"] += data["skipped"]
            last = data["resume_id"]

    raw = b""  # transfer-encoding chunks, undone into `buffer`

    def dechunk() -> None:
        nonlocal raw, buffer
        while True:
            eol = raw.find(b"\r\n")
            if eol < 0:
                return
            size = int(raw[:eol].split(b";")[0], 16)
            if len(raw) < eol + 2 + size + 2:
                return
            buffer += raw[eol + 2:eol + 2 + size]
            raw = raw[eol + 2 + size + 2:]

    while True:
        if final and stats["last"] is not None and stats["last"] >= final[0]:
            break
        try:
            chunk = await asyncio.wait_for(reader.read(1 << 20), 1.0)
        except TimeoutError:
            if stop.is_set() and final and time.monotonic() > final[1]:
                break
            continue
        if not chunk:
            stats["closed"] = True
            break
        if chunked:
            raw += chunk
            dechunk()
        else:
            buffer += chunk
        *blocks, buffer = buffer.split(b"\r\n\r\n")
        for block in blocks:
            handle(block)
    writer.close()


async def _consumers(port: int, n: int) -> list[dict]:
    stats = [{"first": None, "last": None, "received": 0, "missing": 0, "duplicates": 0, "gap_events": 0,
              "declared_skipped": 0, "closed": False, "status": 0} for _ in range(n)]
    stop = asyncio.Event()
    final: list = []
    tasks = [asyncio.create_task(_client(port, s, stop, final)) for s in stats]
    loop = asyncio.get_running_loop()
    print("connected", flush=True)
    line = await loop.run_in_executor(None, sys.stdin.readline)  # the final row id, once the load stopped
    final.extend([int(line), time.monotonic() + 60])
    stop.set()
    await asyncio.wait(tasks, timeout=90)
    return stats


def sse_consumers_main() -> None:
    port, n = int(sys.argv[1]), int(sys.argv[2])
    print(json.dumps(asyncio.run(_consumers(port, n))), flush=True)


# -- the load ---------------------------------------------------------------------------------------

class Load:
    """Paced senders: SINGLES_PER_S single readings and the rest in batches, each thread on its own
    schedule (it catches up if it falls behind, so a slow server does not lower the offered load)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.samples: list[tuple[float, float]] = []  # (seconds since start, latency ms)
        self.errors: list[str] = []
        self.readings = 0
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.t0 = 0.0
        single_threads = 2
        batches_per_s = (RATE - SINGLES_PER_S) / BATCH
        self.plan = [(1, SINGLES_PER_S / single_threads)] * single_threads + [(BATCH, batches_per_s)]

    def sender(self, size: int, per_second: float, seed: int) -> None:
        body = json.dumps(reading(seed) if size == 1 else [reading(seed + i) for i in range(size)]).encode()
        interval = 1 / per_second
        due = time.monotonic()
        while not self.stop.is_set():
            due += interval
            pause = due - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            started = time.perf_counter()
            try:
                r = post(self.port, body, timeout=30)
                ok = r.status == 200
                problem = f"{r.status} {r.text[:200]}"
            except OSError as exc:
                ok, problem = False, repr(exc)
            latency = (time.perf_counter() - started) * 1000
            with self.lock:
                if ok:
                    self.readings += size
                    self.samples.append((time.monotonic() - self.t0, latency))
                else:
                    self.errors.append(problem)

    def start(self) -> None:
        self.t0 = time.monotonic()
        self.threads = [threading.Thread(target=self.sender, args=(size, rate, 1000 * i), daemon=True)
                        for i, (size, rate) in enumerate(self.plan)]
        for t in self.threads:
            t.start()

    def finish(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(60)


def busy_jiffies() -> int:
    """CPU time processes spent, machine-wide, from /proc/stat (user nice system steal). Interrupt
    time is left out: the test's own loopback traffic is mostly handled there, charged to no process."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return fields[0] + fields[1] + fields[2] + fields[7]


def process_jiffies(pid: int) -> int:
    """utime + stime of a process (all its threads), from /proc/<pid>/stat."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def count_rows(db: Path) -> int:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as conn:
        return conn.execute("SELECT count(*) FROM sensor_data").fetchone()[0]


def max_id(db: Path) -> int:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as conn:
        return conn.execute("SELECT coalesce(max(id), 0) FROM sensor_data").fetchone()[0]


# -- the run ----------------------------------------------------------------------------------------

def soak(server_factory, linear_model, report, section: str, seconds: float, window: float) -> None:
    model = BUNDLED if (BUNDLED / "manifest.json").exists() else linear_model[0]
    server = server_factory(model, args=["--retention-rows", str(RETENTION_ROWS),
                                         "--retention-interval", str(RETENTION_INTERVAL)]).start()
    db = server.data_dir / "sensor_data.db"
    for i in range(0, RETENTION_ROWS, 1000):  # start at the bound: retention works from the first second
        assert post(server.port, [reading(i + k) for k in range(1000)]).status == 200

    consumers = subprocess.Popen(
        [sys.executable, "-c", "from tests.reliability.test_soak import sse_consumers_main; sse_consumers_main()",
         str(server.port), str(SSE_CLIENTS)],
        cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert consumers.stdout.readline().strip() == "connected"
        wait_for(lambda: (metric_value(get(server.port, "/metrics").text, "fdedge_sse_clients") or 0) >= SSE_CLIENTS,
                 30, f"{SSE_CLIENTS} SSE clients", every=0.2)
        load = Load(server.port)
        load.start()
        rss: list[tuple[float, float]] = []
        rows: list[int] = []
        loadavg: list[tuple[float, float]] = []  # the machine's 1-minute load: other work skews latency
        own_pids = [server.proc.pid, consumers.pid, os.getpid()]
        cpu: list[tuple[float, int, int]] = [(0.0, busy_jiffies(), sum(map(process_jiffies, own_pids)))]
        end = load.t0 + seconds
        while time.monotonic() < end:
            time.sleep(1)
            rss.append((time.monotonic() - load.t0, rss_mb(server.proc.pid)))
            rows.append(count_rows(db))
            loadavg.append((time.monotonic() - load.t0, float(Path("/proc/loadavg").read_text().split()[0])))
            cpu.append((time.monotonic() - load.t0, busy_jiffies(), sum(map(process_jiffies, own_pids))))
            assert server.proc.poll() is None, "the server died"
        load.finish()
        final = max_id(db)
        consumers.stdin.write(f"{final}\n")
        consumers.stdin.flush()
        out, _ = consumers.communicate(timeout=120)
        clients = json.loads(out.strip().splitlines()[-1])
    finally:
        if consumers.poll() is None:
            consumers.kill()
            consumers.wait(10)

    # -- figures and verdicts
    windows: list[list[float]] = []
    for t, latency in load.samples:
        index = int(t // window)
        if index < int(seconds // window):
            while len(windows) <= index:
                windows.append([])
            windows[index].append(latency)
    p99 = [percentile(w, 0.99) for w in windows if w]
    load_per_window = [round(max([la for t, la in loadavg if i * window <= t < (i + 1) * window] or [0.0]), 2)
                       for i in range(len(p99))]
    # CPU other processes used in each window, in cores: the machine's busy time minus ours
    hz = os.sysconf("SC_CLK_TCK")
    other_cores = []
    for i in range(len(p99)):
        inside = [c for c in cpu if i * window <= c[0] <= (i + 1) * window] or [cpu[-1]]
        first, last = inside[0], inside[-1]
        span = max(last[0] - first[0], 1e-9)
        other_cores.append(round(max(0.0, ((last[1] - first[1]) - (last[2] - first[2])) / hz / span), 2))
    quiet = [i for i, c in enumerate(other_cores) if c <= OTHER_WORK_CORES]
    warm = [mb for t, mb in rss if t >= window] or [rss[-1][1]]
    rss_start, rss_end, rss_peak = warm[0], rss[-1][1], max(mb for _, mb in rss)
    bound = RETENTION_ROWS + RATE * RETENTION_INTERVAL + BATCH
    figures = {
        "seconds": seconds, "window_s": window, "rate": RATE, "sse_clients": SSE_CLIENTS,
        "retention_rows": RETENTION_ROWS, "readings": load.readings, "requests": len(load.samples),
        "errors": len(load.errors), "rss_start_mb": round(rss_start, 1), "rss_end_mb": round(rss_end, 1),
        "rss_peak_mb": round(rss_peak, 1), "p99_windows_ms": [round(x, 2) for x in p99],
        "p99_first_ms": round(p99[quiet[0]] if quiet else p99[0], 2), "loadavg_max_per_window": load_per_window,
        "cpus": os.cpu_count(), "other_work_cores_per_window": other_cores,
        "windows_judged": len(quiet), "windows": len(p99),
        "p99_worst_ms": round(max([p99[i] for i in quiet[1:]] or [p99[quiet[0]] if quiet else p99[0]]), 2),
        "p99_worst_any_ms": round(max(p99), 2),
        "p50_ms": round(percentile([lat for _, lat in load.samples], 0.5), 2),
        "rows_peak": max(rows), "rows_bound_checked": bound,
        "sse_events": sum(c["received"] for c in clients), "sse_missing": sum(c["missing"] for c in clients),
        "sse_duplicates": sum(c["duplicates"] for c in clients), "sse_gap_events": sum(c["gap_events"] for c in clients),
        "sse_behind_at_end": sum(1 for c in clients if (c["last"] or 0) < final),
    }
    for key, value in figures.items():
        report.put(section, key, value)

    assert not load.errors, f"{len(load.errors)} failed requests, e.g. {load.errors[:3]}"
    assert load.readings >= RATE * seconds * 0.9, f"offered {RATE}/s, delivered {load.readings / seconds:.0f}/s"
    assert rss_end < rss_start * 1.5 + 20, f"RSS grew from {rss_start:.0f} to {rss_end:.0f} MB: {rss[::10]}"
    # p99 is judged on windows where other processes left the machine alone (a slower server counts:
    # only other processes' CPU is left out); the first such window is the reference.
    assert len(quiet) >= max(2, (len(p99) + 1) // 2), (
        f"the machine was busy with other work in {len(p99) - len(quiet)} of {len(p99)} windows "
        f"(cores used by other processes {other_cores}, load average {load_per_window}): run make soak on a quiet one")
    reference = p99[quiet[0]]
    for i in quiet[1:]:
        assert p99[i] <= 2 * reference + GRACE_MS, (
            f"p99 of window {i + 1} is {p99[i]:.1f} ms, window {quiet[0] + 1} {reference:.1f} ms: "
            f"{[round(x, 1) for x in p99]}; other processes used {other_cores} cores")
    assert max(rows) <= bound, f"{max(rows)} rows for a bound of {RETENTION_ROWS} (+{bound - RETENTION_ROWS} between passes)"
    assert all(c["status"] == 200 for c in clients)
    assert figures["sse_missing"] == 0 and figures["sse_duplicates"] == 0, clients
    assert figures["sse_behind_at_end"] == 0, "some SSE clients never caught up with the last reading"
    assert figures["sse_events"] >= SSE_CLIENTS * load.readings * 0.99


@pytest.mark.slow
def test_load_is_held_for_thirty_seconds(server_factory, linear_model, report):
    soak(server_factory, linear_model, report, "load", seconds=30, window=10)


@pytest.mark.soak
def test_load_is_held_for_ten_minutes(server_factory, linear_model, report):
    seconds = soak_seconds(600)
    soak(server_factory, linear_model, report, "load_soak", seconds=seconds, window=min(60.0, seconds / 3))
