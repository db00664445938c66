"""The real server as a subprocess on loopback: FD-REST's sender, read-back, SSE, and SIGKILL."""

from __future__ import annotations

import csv
import http.client
import io
import json
import random
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from edge.fdrest import FAULTS
from tests.harness import BUNDLED, FDREST, reading

pytestmark = pytest.mark.slow


def model_dir(linear_model) -> Path:
    return BUNDLED if (BUNDLED / "manifest.json").exists() else linear_model[0]


def post(url: str, body, content_type: str = "application/json", headers: dict | None = None) -> tuple[int, bytes]:
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        conn.request("POST", "/send", body=data, headers={"Content-Type": content_type, **(headers or {})})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def get(url: str, path: str) -> tuple[int, bytes]:
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def sse(url: str, path: str, want: int, headers: dict | None = None, timeout: float = 10) -> list[dict]:
    """Read `want` reading events from an SSE stream."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    conn.request("GET", path, headers={"Accept": "text/event-stream", **(headers or {})})
    resp = conn.getresponse()
    assert resp.status == 200 and resp.getheader("content-type").startswith("text/event-stream")
    events, current = [], {}
    try:
        while len(events) < want:
            line = resp.fp.readline().decode().rstrip("\r\n")
            if not line:
                if current.get("event") == "reading":
                    events.append({"id": int(current["id"]), **json.loads(current["data"])})
                current = {}
                continue
            key, _, value = line.partition(":")
            current[key] = value.lstrip(" ")
    finally:
        conn.close()
    return events


def fdrest_rows() -> list[dict]:
    """FD-REST's sample rows as its sender posted them: the data.csv row as JSON, with floats."""
    path = FDREST / "data.csv"
    if not path.exists():
        return [reading(i, Time=f"2023-11-06 15:00:{i:02d}") for i in range(8)]
    out = []
    for row in csv.DictReader(path.open()):
        out.append({k: (v if k == "Time" else float(v)) for k, v in row.items()})
    return out


def test_fdrest_sender_history_export_and_events(server_factory, linear_model):
    server = server_factory(model_dir(linear_model)).start()
    rows = fdrest_rows()
    answers = []
    for row in rows:
        status, body = post(server.url, row)
        assert status == 200, body
        answer = json.loads(body)
        assert isinstance(answer, list) and list(answer[0]) == list(FAULTS)
        answers.append(answer[0])

    status, body = get(server.url, f"/history?metric=temperature&limit={len(rows)}")
    assert status == 200
    history = json.loads(body)
    assert history["values"] == [r["Temperature"] for r in rows]
    assert history["timestamps"] == [r["Time"] for r in rows]

    days = sorted({r["Time"][:10] for r in rows})
    status, body = get(server.url, f"/generate_csv?start={days[0]}&end={days[-1]}")
    assert status == 200
    exported = list(csv.DictReader(io.StringIO(body.decode())))
    assert len(exported) == len(rows)
    for got, answer in zip(exported, answers):
        assert float(got["fault3"]) == pytest.approx(answer["fault3"])

    events = sse(server.url, "/events", want=len(rows), headers={"Last-Event-ID": "0"})
    assert [e["id"] for e in events] == list(range(1, len(rows) + 1))
    assert events[0]["features"]["Temperature"] == rows[0]["Temperature"]
    assert events[-1]["faults"]["fault5"] == pytest.approx(answers[-1]["fault5"])


def test_live_events_arrive_and_resume_after_reconnect(server_factory, linear_model):
    server = server_factory(model_dir(linear_model)).start()
    got: list[dict] = []
    listener = threading.Thread(target=lambda: got.extend(sse(server.url, "/events?machine=m1", want=3)))
    listener.start()
    time.sleep(0.5)  # the stream starts "now": only readings after connecting are live
    for i in range(3):
        assert post(server.url, reading(i, machine="m0"))[0] == 200
        assert post(server.url, reading(i, machine="m1"))[0] == 200
    listener.join(10)
    assert [e["machine"] for e in got] == ["m1"] * 3
    # a reconnect with the last id seen gets exactly what it missed
    last = got[1]["id"]
    resumed = sse(server.url, "/events?machine=m1", want=1, headers={"Last-Event-ID": str(last)})
    assert resumed[0]["id"] == got[2]["id"]


@pytest.mark.parametrize("round_", range(3))
def test_acknowledged_readings_survive_sigkill(server_factory, linear_model, tmp_path, round_):
    """Concurrent single and batch posts; kill -9 at a random moment; every 200 is on disk once."""
    server = server_factory(model_dir(linear_model)).start()
    acked: list[float] = []
    sent: list[float] = []
    lock = threading.Lock()
    stop = threading.Event()

    def worker(n: int) -> None:
        seq = 0
        while not stop.is_set():
            seq += 1
            size = 1 if seq % 3 else 20
            markers = [n * 1_000_000 + seq * 100 + k for k in range(size)]
            body = [reading(k, Level=float(m)) for k, m in enumerate(markers)]
            with lock:
                sent.extend(markers)
            try:
                status, _ = post(server.url, body[0] if size == 1 else body)
            except (OSError, http.client.HTTPException):
                return  # the kill cut this request off: it was never acknowledged
            if status == 200:
                with lock:
                    acked.extend(markers)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    time.sleep(random.Random(round_).uniform(0.5, 1.5))
    server.kill()
    stop.set()
    for t in threads:
        t.join(10)
    assert acked, "the server acknowledged nothing before the kill"

    server.start()  # same port, same database: it must open cleanly after a crash
    with sqlite3.connect(server.data_dir / "sensor_data.db") as conn:
        stored = [r[0] for r in conn.execute("SELECT level FROM sensor_data")]
    counts: dict[float, int] = {}
    for level in stored:
        counts[level] = counts.get(level, 0) + 1
    lost = [m for m in acked if counts.get(m, 0) != 1]
    assert not lost, f"{len(lost)} acknowledged readings missing or duplicated"
    assert set(stored) <= set(sent)
    # batches are all-or-nothing even when killed mid-flight
    batches: dict[int, int] = {}
    for level in stored:
        batches[int(level) // 100] = batches.get(int(level) // 100, 0) + 1
    assert all(n in (1, 20) for n in batches.values())
    assert post(server.url, reading(0))[0] == 200
