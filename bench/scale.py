"""Section "scale": what a read costs as the history grows, on databases the server built itself
through the batch API (10 machines, one reading each every 10 s, ending now: 10M readings are
116 days), reported as ratios to the smallest size measured in the same run.

Also on the largest size: a restart to /readyz, a retention pass deleting 10 % while a fixed
rate of single readings comes in (ingest p99 during the pass against quiet), the file size after
it, and a 30-day CSV export's rows/s."""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import orjson

from bench import resources
from bench.common import BenchError, Plan, median, ratio
from bench.loadgen import open_loop
from bench.servers import Server, http_get

MACHINES = 10
EVERY_S = 10.0
BATCH = 5000


def _body(readings: list[dict[str, Any]], first: int, rows: int, end: datetime, total: int) -> bytes:
    out = []
    for k in range(first, first + rows):
        step, machine = divmod(k, MACHINES)
        t = end - timedelta(seconds=(total // MACHINES - step) * EVERY_S - machine * 0.5)
        out.append({**readings[k % len(readings)], "Time": t.strftime("%Y-%m-%d %H:%M:%S"),
                    "machine": f"machine-{machine:02d}"})
    return orjson.dumps(out)


def _fill(server: Server, readings: list[dict[str, Any]], total: int, end: datetime) -> float:
    bodies = (_body(readings, first, min(BATCH, total - first), end, total) for first in range(0, total, BATCH))
    return resources.ingest(server, bodies, -(-total // BATCH))


def _timed_get(port: int, path: str, repeats: int) -> tuple[float | None, bytes]:
    times, body = [], b""
    for _ in range(repeats):
        started = time.perf_counter()
        status, body = http_get(port, path, timeout=300)
        times.append(time.perf_counter() - started)
        if status != 200:
            raise BenchError(f"GET {path} answered {status}: {body[:200]!r}")
    return median(times), body


def _queries(end: datetime) -> dict[str, str]:
    def iso(t: datetime) -> str:
        return t.isoformat().replace("+00:00", "Z")
    day = (end - timedelta(days=30)).date().isoformat()
    series = "/api/series?" + "metrics=temperature,fault0,fault3&points=600&"
    return {
        "machines": "/api/machines",
        "fleet": "/api/fleet",  # the fleet overview's reload
        "fleet_spark30": "/api/fleet?spark=30",  # its first load: a sparkline per machine from the rollups
        "latest": "/api/latest?machine=machine-03&limit=20",
        "series_one_machine_15min": series + urlencode(
            {"start": iso(end - timedelta(minutes=15)), "end": iso(end), "machine": "machine-03"}),
        "series_one_machine_7d": series + urlencode(
            {"start": iso(end - timedelta(days=7)), "end": iso(end), "machine": "machine-03"}),
        "series_all_90d": series + urlencode({"start": iso(end - timedelta(days=90)), "end": iso(end)}),
        "count_30d_threshold": "/api/count?" + urlencode(
            {"start": day, "end": end.date().isoformat(), "threshold": "0.5"}),
        "count_30d": "/api/count?" + urlencode({"start": day, "end": end.date().isoformat()}),
    }


def _export(port: int, end: datetime) -> dict[str, Any]:
    day = (end - timedelta(days=30)).date().isoformat()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    started = time.perf_counter()
    conn.request("GET", "/generate_csv?" + urlencode({"start": day, "end": end.date().isoformat()}))
    response = conn.getresponse()
    lines = 0
    while chunk := response.read(1 << 20):
        lines += chunk.count(b"\n")
    seconds = time.perf_counter() - started
    conn.close()
    return {"rows": lines - 1, "seconds": seconds, "rows_per_s": (lines - 1) / seconds if seconds else None}


def _metric(port: int, name: str) -> float:
    status, body = http_get(port, "/metrics", timeout=10)
    for line in body.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise BenchError(f"/metrics has no {name}")


def _wait_pass(server: Server, timeout: float, done: threading.Event) -> float | None:
    """Seconds until the first retention pass has finished (rows cut, buckets made exact, space
    handed back), then sets `done`."""
    started = time.perf_counter()
    try:
        while time.perf_counter() - started < timeout:
            if _metric(server.port, "fdedge_retention_passes_total") >= 1:
                return time.perf_counter() - started
            time.sleep(0.05)
        return None
    finally:
        done.set()


def run(plan: Plan, root: Path, model_dir: Path, readings: list[dict[str, Any]], sizes: list[int],
        log: Callable[[str], None] = print) -> dict[str, Any]:
    end = datetime.now(UTC).replace(microsecond=0)
    repeats = 3 if plan.quick else 5
    out: dict[str, Any] = {"sizes": sizes, "machines": MACHINES, "every_s": EVERY_S, "by_size": {}}
    largest = max(sizes)
    for size in sorted(sizes):
        log(f"  building {size:,} readings through the batch API")
        server = Server("edge", root, model_dir=model_dir, name=f"edge-scale-{size}").start()
        row: dict[str, Any] = {}
        try:
            fill_s = _fill(server, readings, size, end)
            row["fill_readings_per_s"] = size / fill_s
            time.sleep(1.0)
            for name, path in _queries(end).items():
                row[f"{name}_s"], body = _timed_get(server.port, path, repeats)
                if name == "series_all_90d":
                    answer = json.loads(body)
                    row["series_all_90d_points"] = len(answer["time"])
                    row["series_all_90d_resolution"] = answer.get("resolution", "raw")
            if size == largest:
                row["export_30d"] = _export(server.port, end)
        finally:
            server.stop()
        with Server("edge", root, model_dir=model_dir, data_dir=server.data_dir, name=f"edge-restart-{size}") as again:
            row["restart_s"] = again.ready_seconds
        if size == largest:
            row.update(_retention(plan, root, model_dir, server.data_dir, size, readings))
        db = server.data_dir / "sensor_data.db"
        row["db_bytes"] = db.stat().st_size
        out["by_size"][str(size)] = row
    smallest = str(min(sizes))
    out["ratios"] = {str(size): {k: ratio(v, out["by_size"][smallest].get(k))
                                 for k, v in out["by_size"][str(size)].items()
                                 if k.endswith("_s") and not k.startswith("fill")}
                     for size in sizes if str(size) != smallest}
    return out


def _retention(plan: Plan, root: Path, model_dir: Path, data_dir: Path, size: int,
               readings: list[dict[str, Any]]) -> dict[str, Any]:
    """Restart with --retention-rows at 90 %: the first pass starts at once; single readings
    arrive at a fixed rate from its start to its end (vacuum included), then again once it is
    over (quiet). The file's size is taken after the pass, so it shows the space handed back."""
    keep = size - size // 10
    body = orjson.dumps({**readings[0], "machine": "machine-00"})
    rate, seconds = (200, 2.0) if plan.quick else (200, 6.0)
    before = (data_dir / "sensor_data.db").stat().st_size
    done = threading.Event()
    with Server("edge", root, model_dir=model_dir, data_dir=data_dir, name=f"edge-retention-{size}",
                args=("--retention-rows", str(keep), "--retention-interval", "3600")) as server:
        with ThreadPoolExecutor(1) as pool:
            load = pool.submit(open_loop, server.port, body, rate, 1800, 8, 0.2, done)
            took = _wait_pass(server, 1800, done)
            during = load.result()
        if took is None:
            raise BenchError("the retention pass did not finish within 30 min")
        after = (data_dir / "sensor_data.db").stat().st_size
        pruned = _metric(server.port, "fdedge_readings_pruned_total")
        time.sleep(1.0)
        quiet = open_loop(server.port, body, rate, seconds, connections=8, discard=0.2)
    return {
        "retention_deleted": int(pruned),
        "retention_pass_s": took,
        "load_s": seconds,  # a pass shorter than this mixes quiet time into "during"
        "ingest_p99_during_retention_ms": during.get("p99_ms"),
        "ingest_p99_quiet_ms": quiet.get("p99_ms"),
        "retention_p99_ratio": ratio(during.get("p99_ms"), quiet.get("p99_ms")),
        "db_bytes_before_retention": before,
        "db_bytes_after_retention": after,
    }
