"""Section 3: memory, start-up time and disk per reading of `fdedge serve` (default settings)."""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bench.common import BenchError, Plan, batch_body, median
from bench.servers import Server, http_get


def ingest(server: Server, bodies: Iterator[bytes], requests: int) -> float:
    """POST `requests` bodies on one keep-alive connection; returns the seconds it took."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    start = time.perf_counter()
    try:
        for _ in range(requests):
            conn.request("POST", "/send", body=next(bodies), headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            answer = response.read()
            if response.status != 200:
                raise BenchError(f"{server.name}: batch POST answered {response.status}: {answer[:300]!r}")
    finally:
        conn.close()
    return time.perf_counter() - start


def _stored(server: Server) -> int:
    status, body = http_get(server.port, "/api/machines", timeout=30)
    if status != 200:
        raise BenchError(f"{server.name}: /api/machines answered {status}")
    return sum(m["readings"] for m in json.loads(body)["machines"])


def _disk(data_dir: Path) -> dict[str, int]:
    db = data_dir / "sensor_data.db"
    sizes = {"db": db.stat().st_size if db.exists() else 0}
    for suffix in ("-wal", "-shm"):
        p = db.with_name(db.name + suffix)
        sizes[suffix[1:]] = p.stat().st_size if p.exists() else 0
    return sizes


VARIED_MAX_ROWS = 300


def varied_sizes(total: int, most: int = VARIED_MAX_ROWS) -> list[int]:
    """Batch sizes 1..`most` in a fixed scattered order, summing to `total`: a plant's sensors
    flush buffers of any length, and the writer's groups take every size."""
    sizes: list[int] = []
    k = 0
    while sum(sizes) < total:
        sizes.append(min((k * 37) % most + 1, total - sum(sizes)))
        k += 1
    return sizes


def varied_batches_rss(plan: Plan, root: Path, model_dir: Path, readings: list[dict[str, Any]],
                       log: Callable[[str], None] = print) -> int | None:
    """RSS after the plan's readings in batches of every size from 1 to 300. Fixed-size batches
    hid the cost of a statement cached per group size (135 MB at sizes 1..256)."""
    log(f"  storing {plan.stored_readings:,} readings in batches of 1..{VARIED_MAX_ROWS}")
    sizes = varied_sizes(plan.stored_readings)
    firsts = [sum(sizes[:k]) for k in range(len(sizes))]
    server = Server("edge", root, model_dir=model_dir, name="edge-rss-varied").start()
    try:
        bodies = (batch_body(readings, n, first=first) for n, first in zip(sizes, firsts, strict=True))
        ingest(server, bodies, len(sizes))
        time.sleep(1.0)
        return server.status().get("VmRSS")
    finally:
        server.stop()


def run(plan: Plan, root: Path, model_dir: Path, readings: list[dict[str, Any]],
        log: Callable[[str], None] = print) -> dict[str, Any]:
    # Cold starts, each on an empty data directory: process start -> first /readyz 200.
    startups: list[float] = []
    for i in range(plan.startups):
        with Server("edge", root, model_dir=model_dir, name=f"edge-start{i}") as server:
            startups.append(server.ready_seconds or 0.0)

    log(f"  storing {plan.stored_readings:,} readings")
    server = Server("edge", root, model_dir=model_dir, name="edge-rss").start()
    try:
        idle = server.status()
        requests = plan.stored_readings // plan.batch_rows
        bodies = (batch_body(readings, plan.batch_rows, first=k * plan.batch_rows) for k in range(requests))
        seconds = ingest(server, bodies, requests)
        time.sleep(1.0)  # let the writer checkpoint / settle
        after = server.status()
        rows = _stored(server)
        disk = _disk(server.data_dir)
    finally:
        server.stop()
    # A restart on the full database: start-up must not grow with the data.
    with Server("edge", root, model_dir=model_dir, data_dir=server.data_dir, name="edge-restart") as again:
        restart = again.ready_seconds
        restart_rss = again.status().get("VmRSS")
    if rows != plan.stored_readings:
        raise BenchError(f"stored {rows} readings, expected {plan.stored_readings}")
    varied = varied_batches_rss(plan, root, model_dir, readings, log)
    return {
        "rss_after_varied_batches_bytes": varied,
        "startup_s": median(startups),
        "startup_runs_s": startups,
        "restart_with_data_s": restart,
        "rss_idle_bytes": idle.get("VmRSS"),
        "rss_after_bytes": after.get("VmRSS"),
        "rss_peak_bytes": after.get("VmHWM"),
        "rss_after_restart_bytes": restart_rss,
        "threads": after.get("Threads"),
        "stored_readings": rows,
        "ingest_readings_per_s_one_connection": rows / seconds if seconds else None,
        "disk_bytes": disk,
        "bytes_per_reading": (disk["db"] + disk["wal"]) / rows if rows else None,
    }
