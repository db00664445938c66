"""A day of hostile and careless clients, compressed, against a server under steady ingest.

While one sensor posts a batch every 50 ms with an Idempotency-Key, the others, all at once and
over and over: open idle and half-head sockets, start exports and /events streams they never
read, post 8 MiB bodies built to explode, stamp a reading 23 h ahead, and name every reading as a
new machine. At the end: every reading the steady sensor had acknowledged is stored, once; the
server's memory is where it was after warm-up; its alarms still fired after the future-dated
readings; /healthz answered throughout.

`make test` runs it for 15 s; `make soak` for FDEDGE_SOAK_SECONDS (default 600).
"""

from __future__ import annotations

import json
import socket
import sqlite3
import threading
import time
import uuid

import pytest

from edge.fdrest import now_text
from tests.harness import reading
from tests.reliability_helpers import get, post, rss_mb, soak_seconds, stuck_sse_clients

REPORT_SECTION = "hostile"
HALF_HEAD = b"POST /send HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
EXPLODING = b"[" + b"{}," * (8 * 1024 * 1024 // 3 - 2) + b"{}]"


class Steady:
    """The sensor that must lose nothing: 10 readings every 50 ms, keyed, re-sent until answered."""

    def __init__(self, port: int) -> None:
        self.port, self.acked, self.errors, self.stop = port, 0, 0, threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        sensor = uuid.uuid4().hex[:8]
        k = 0
        while not self.stop.is_set():
            body = json.dumps([reading(k * 10 + i, Time=now_text(), machine="line-1") for i in range(10)]).encode()
            for _attempt in range(20):
                try:
                    r = post(self.port, body, headers={"Idempotency-Key": f"{sensor}:{k}"}, timeout=10)
                except OSError:
                    r = None
                if r is not None and r.status == 200:
                    self.acked += 10
                    break
                self.errors += 1
                time.sleep(0.1)
            k += 1
            time.sleep(0.05)


def _hostile(port: int, stop: threading.Event, counts: dict[str, int]) -> None:
    held: list[socket.socket] = []
    k = 0
    while not stop.is_set():
        k += 1
        for _ in range(50):  # idle and half-head sockets, left for the server to close
            s = socket.socket()
            try:
                s.connect(("127.0.0.1", port))
                if k % 2:
                    s.sendall(HALF_HEAD)
            except OSError:
                s.close()
                continue
            held.append(s)
        counts["idle_sockets"] += 50
        held.extend(stuck_sse_clients(port, 2, last_event_id=0))  # streams nobody reads
        slow = socket.socket()
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow.connect(("127.0.0.1", port))
        slow.sendall(b"GET /generate_csv?start=2000-01-01&end=2100-01-01 HTTP/1.1\r\nHost: x\r\n\r\n")
        held.append(slow)
        counts["stalled_streams"] += 3
        try:
            r = post(port, EXPLODING, timeout=60)
            counts["hostile_bodies"] += r.status == 413
        except OSError:
            pass
        future = post(port, reading(k, Time=now_text(23 * 3600), machine="line-1"))
        counts["future_readings"] += future.status == 200
        names = [reading(i, machine=f"serial-{uuid.uuid4().hex}") for i in range(20)]
        for one in names:
            counts["new_names_refused"] += post(port, one).status == 422
        if len(held) > 600:  # the client side's own descriptors: drop the oldest
            for s in held[:300]:
                s.close()
            del held[:300]
        stop.wait(0.5)
    for s in held:
        s.close()


def run_hostile_day(server_factory, linear_model, report, seconds: float) -> None:
    server = server_factory(linear_model[0], args=[
        "--head-timeout", "2", "--send-timeout", "2", "--max-machines", "50", "--retention-interval", "5"]).start()
    for i in range(5):  # warm-up: model, pools, a large parse, the SSE ring
        assert post(server.port, [reading(i * 1000 + k, machine="line-1") for k in range(1000)]).status == 200
    time.sleep(1)
    warm = rss_mb(server.proc.pid)
    steady = Steady(server.port)
    stop = threading.Event()
    counts = dict.fromkeys(("idle_sockets", "stalled_streams", "hostile_bodies", "future_readings",
                            "new_names_refused"), 0)
    hostile = threading.Thread(target=_hostile, args=(server.port, stop, counts), daemon=True)
    steady.thread.start()
    hostile.start()
    health_failures, peak = 0, warm
    first_future_at = None
    end = time.monotonic() + seconds
    try:
        while time.monotonic() < end:
            time.sleep(1)
            if first_future_at is None and counts["future_readings"]:
                first_future_at = now_text()
            try:
                health_failures += get(server.port, "/healthz", timeout=5).status != 200
            except OSError:
                health_failures += 1
            peak = max(peak, rss_mb(server.proc.pid))
            assert server.proc.poll() is None, "the server died"
    finally:
        stop.set()
        steady.stop.set()
        hostile.join(90)
        steady.thread.join(30)
    time.sleep(6)  # the last stalled streams reach their deadline; a retention pass collects and trims
    end_rss = rss_mb(server.proc.pid)
    alarms = get(server.port, "/api/alarms?machine=line-1&limit=1000").json()["alarms"]
    server.stop()
    with sqlite3.connect(server.data_dir / "sensor_data.db") as conn:
        stored = conn.execute("SELECT count(*) FROM sensor_data WHERE machine = 'line-1'").fetchone()[0]
    expected = 5000 + steady.acked + counts["future_readings"]
    assert stored == expected, f"{stored} readings of line-1 stored, {expected} acknowledged"
    assert health_failures == 0
    assert counts["hostile_bodies"] and counts["future_readings"] and counts["new_names_refused"]
    # flat: what is left is the SSE ring's encoded events (bounded by --sse-buffer) and caches
    assert end_rss < warm + 60, f"RSS {warm:.0f} MB after warm-up, {end_rss:.0f} MB at the end"
    assert first_future_at is not None
    later = [a for a in alarms if (a.get("raised_at") or "") >= first_future_at.replace(" ", "T")]
    assert later, "no alarm was raised after the first future-dated reading"
    report.put("hostile", f"soak_{int(seconds)}s",
               f"{seconds:.0f} s of hostile traffic ({counts['idle_sockets']:,} idle or half-head sockets, "
               f"{counts['stalled_streams']} unread streams, {counts['hostile_bodies']} exploding 8 MiB bodies, "
               f"{counts['future_readings']} readings 23 h ahead, {counts['new_names_refused']} new names refused) "
               f"beside a sensor posting 10 readings every 50 ms: {steady.acked:,} acknowledged, all stored once; "
               f"/healthz never failed; RSS {warm:.0f} MB after warm-up, peak {peak:.0f}, {end_rss:.0f} at the end; "
               f"{len(later)} alarms raised after the first future-dated reading")


@pytest.mark.slow
def test_a_quarter_minute_of_hostile_traffic(server_factory, linear_model, report):
    run_hostile_day(server_factory, linear_model, report, 15)


@pytest.mark.soak
def test_ten_minutes_of_hostile_traffic(server_factory, linear_model, report):
    run_hostile_day(server_factory, linear_model, report, soak_seconds(600))
