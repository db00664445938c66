"""Faults an unattended appliance meets, each answered with a clear error (503 with a reason, or a
one-line refusal to start with exit code 2) while the server keeps running and stores nothing by
halves: full disk (size cap and a real full filesystem), a database locked by another process, a
database deleted, emptied or corrupted while stopped, a missing or corrupt model, clocks far off,
slow bodies (slowloris) and SSE clients that never read."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import dataclasses
import hashlib
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from tests.harness import BUNDLED, Server, reading
from tests.reliability_helpers import (
    count_rows,
    drain,
    get,
    metric_value,
    open_socket,
    post,
    read_response,
    rss_mb,
    stuck_sse_clients,
    wait_for,
)

REPORT_SECTION = "faults"


# -- helpers ----------------------------------------------------------------------------------------

def model_dir(linear_model) -> Path:
    return BUNDLED if (BUNDLED / "manifest.json").exists() else linear_model[0]


def survived(report, name: str, what: str, section: str = "faults") -> None:
    report.section(section).setdefault("survived", {})[name] = what


def batch(n: int, seed: int = 0, **extra) -> list[dict]:
    return [reading(seed + i, **extra) for i in range(n)]


def failed_start(data_dir: Path, model: Path, *args: str, timeout: float = 60) -> tuple[int, str]:
    """`fdedge serve` that must refuse to start: its exit code and output."""
    return Server(data_dir, model, args=args).refused_start(timeout)


def assert_clear_refusal(code: int, out: str, *words: str) -> str:
    """Exit code 2, one `fdedge serve: ...` line naming the problem, no traceback."""
    assert code == 2, f"exit code {code}: {out[-2000:]}"
    assert "Traceback" not in out, out[-3000:]
    lines = [line for line in out.splitlines() if line.startswith("fdedge serve: ")]
    assert len(lines) == 1, out[-2000:]
    for word in words:
        assert word.lower() in lines[0].lower(), lines[0]
    return lines[0]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def populated_database(server_factory, model: Path, rows: int = 3000) -> tuple[Path, Path]:
    """A database with `rows` readings, left by a cleanly stopped server (WAL checkpointed)."""
    server = server_factory(model).start()
    for start in range(0, rows, 1000):
        assert post(server.port, batch(min(1000, rows - start), start)).status == 200
    server.stop()
    return server.data_dir, server.data_dir / "sensor_data.db"


def corrupt(db: Path, kind: str) -> None:
    rng = np.random.default_rng(abs(hash(kind)) % 2**32)
    data = bytearray(db.read_bytes())
    page = 4096
    if kind == "garbage":
        data[:] = rng.integers(0, 256, len(data), dtype=np.uint8).tobytes()
    elif kind == "header":
        data[:100] = rng.integers(0, 256, 100, dtype=np.uint8).tobytes()
    elif kind == "schema-page":
        data[100:page] = rng.integers(0, 256, page - 100, dtype=np.uint8).tobytes()
    elif kind == "table-pages":
        for p in range(1, min(len(data) // page, 40), 3):
            data[p * page:(p + 1) * page] = rng.integers(0, 256, page, dtype=np.uint8).tobytes()
    elif kind == "truncated":
        del data[len(data) // 2 + 1234:]
    elif kind == "text-file":
        data[:] = b"these are not the readings you are looking for\n" * 50
    else:
        raise ValueError(kind)
    db.write_bytes(bytes(data))
    for suffix in ("-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)


class Trickle:
    """Slowloris: connections that send a POST's headers, then their body a byte at a time."""

    def __init__(self, port: int, n: int, length: int = 100_000, every: float = 0.2) -> None:
        self.socks = [open_socket(port) for _ in range(n)]
        head = (f"POST /send HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                f"Content-Length: {length}\r\n\r\n[").encode()
        for s in self.socks:
            s.sendall(head)
        self.every = every
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        alive = list(self.socks)
        while alive and not self.stop.wait(self.every):
            for s in list(alive):
                try:
                    s.sendall(b" ")
                except OSError:  # the server hung up on it
                    alive.remove(s)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        for s in self.socks:
            s.close()


def sse_read(port: int, want: int, last_event_id: int, timeout: float = 20) -> list[int]:
    """Ids of `want` reading events, read properly, from Last-Event-ID on."""
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    conn.request("GET", "/events", headers={"Accept": "text/event-stream", "Last-Event-ID": str(last_event_id)})
    resp = conn.getresponse()
    ids: list[int] = []
    try:
        fields: dict[str, str] = {}
        while len(ids) < want:
            line = resp.fp.readline().decode().rstrip("\r\n")
            if line:
                key, _, value = line.partition(":")
                fields[key] = value.strip()
                continue
            if fields.get("event") == "reading":
                ids.append(int(fields["id"]))
            fields = {}
    finally:
        conn.close()
    return ids


# -- full disk --------------------------------------------------------------------------------------

def test_size_capped_database_answers_503_disk_full_then_retention_makes_room(server_factory, linear_model, report):
    model = model_dir(linear_model)
    server = server_factory(model, args=["--max-db-mb", "0.5"]).start()
    db = server.data_dir / "sensor_data.db"
    acked = 0
    for i in range(200):
        r = post(server.port, batch(50, i))
        if r.status != 200:
            break
        acked += 50
    assert r.status == 503 and r.json()["reason"] == "disk_full", r.text
    # concurrent batches at the cap: every one refused, none half-stored
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda i: post(server.port, batch(40, i)), range(16)))
    assert {a.status for a in answers} == {503} and {a.json()["reason"] for a in answers} == {"disk_full"}
    assert count_rows(db) == acked
    ready = get(server.port, "/readyz")  # monitoring sees it
    assert ready.status == 503 and "size cap" in " ".join(ready.json()["problems"]), ready.text
    assert get(server.port, "/healthz").status == 200
    assert get(server.port, "/api/latest?limit=5").status == 200
    assert get(server.port, "/history?metric=temperature&limit=10").status == 200
    server.stop()

    # retention frees pages inside the capped file: ingest resumes without growing it
    server = server_factory(model, port=server.port,
                            args=["--max-db-mb", "0.5", "--retention-rows", "200", "--retention-interval", "0.2"]).start()
    wait_for(lambda: count_rows(db) <= 200, 30, "retention to prune")
    assert post(server.port, batch(50)).status == 200
    assert get(server.port, "/readyz").status == 200
    survived(report, "disk full (--max-db-mb cap)",
             f"503 `disk_full` after {acked} readings, 16 concurrent batches refused whole, /readyz 503 naming the "
             "cap, reads served; retention made room, ingest and readiness resumed")


@pytest.fixture
def small_filesystem(tmp_path):
    """A 24 MiB tmpfs (root only); unmounted afterwards."""
    mount = tmp_path / "fs"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("a real full filesystem needs root to mount a tmpfs")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m,mode=0755", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"mount -t tmpfs is not permitted here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        if subprocess.run(["umount", str(mount)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_full_filesystem_answers_503_and_recovers_when_space_returns(small_filesystem, linear_model, report):
    server = Server(small_filesystem / "data", model_dir(linear_model))
    try:
        server.start()
        db = server.data_dir / "sensor_data.db"
        assert post(server.port, batch(100)).status == 200
        stat = os.statvfs(small_filesystem)
        ballast = small_filesystem / "ballast"
        ballast.write_bytes(b"\0" * (stat.f_bavail * stat.f_frsize - 300_000))  # leave ~300 kB
        acked = 100
        for i in range(100):
            r = post(server.port, batch(100, i))
            if r.status != 200:
                break
            acked += 100
        assert r.status == 503 and r.json()["reason"] == "disk_full", r.text
        assert count_rows(db) == acked  # the refused batch left nothing behind
        ready = get(server.port, "/readyz")
        assert ready.status == 503 and "free" in " ".join(ready.json()["problems"])
        assert get(server.port, "/healthz").status == 200
        assert get(server.port, "/api/latest?limit=3").status == 200
        ballast.unlink()
        assert post(server.port, batch(100)).status == 200
        assert get(server.port, "/readyz").status == 200
        assert count_rows(db) == acked + 100
    finally:
        server.stop()
    survived(report, "disk full (real 24 MiB filesystem)",
             "503 `disk_full`, /readyz 503 naming the free space, reads served; ingest and readiness back "
             "once space returned")


# -- locked, deleted, emptied, corrupted --------------------------------------------------------------

def test_database_locked_by_another_process_answers_503_then_recovers(server_factory, linear_model, report):
    server = server_factory(model_dir(linear_model)).start()
    db = server.data_dir / "sensor_data.db"
    assert post(server.port, batch(5)).status == 200
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sqlite3, sys\n"
         "c = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
         "c.execute('BEGIN EXCLUSIVE'); print('locked', flush=True); sys.stdin.readline(); c.execute('ROLLBACK')",
         str(db)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        answers: list = []
        writer = threading.Thread(target=lambda: answers.append(post(server.port, batch(10, 100))))
        writer.start()
        # while the ingest waits for the lock, reads are served (WAL readers are not blocked)
        assert get(server.port, "/api/latest?limit=2").status == 200
        assert get(server.port, "/healthz").status == 200
        assert writer.is_alive(), "the locked write was answered before the reads: no lock contention happened"
        writer.join(30)
        assert answers[0].status == 503 and answers[0].json()["reason"] == "database_locked", answers[0].text
    finally:
        holder.stdin.write("\n")
        holder.stdin.close()
        holder.wait(10)
    assert post(server.port, batch(10, 200)).status == 200
    assert count_rows(db) == 15
    survived(report, "database locked by another process",
             "503 `database_locked` after the busy timeout, reads served meanwhile, 200 once released")


@pytest.mark.parametrize("how", ["deleted", "emptied"])
def test_database_lost_while_stopped_refuses_to_start_unless_init_db(server_factory, linear_model, report, how):
    model = model_dir(linear_model)
    data, db = populated_database(server_factory, model, rows=100)
    if how == "deleted":
        for suffix in ("", "-wal", "-shm"):
            Path(str(db) + suffix).unlink(missing_ok=True)
    else:
        db.write_bytes(b"")
    code, out = failed_start(data, model)
    assert_clear_refusal(code, out, "--init-db", "missing" if how == "deleted" else "empty")
    assert not db.exists() or db.stat().st_size == 0  # nothing was created in its place
    server = server_factory(model, args=["--init-db"]).start()
    assert get(server.port, "/api/count?start=1970-01-01&end=9999-12-31").json() == {"count": 0}
    assert post(server.port, batch(3)).status == 200
    survived(report, f"database {how} while stopped",
             "refuses to start (exit 2, names --init-db); --init-db starts an empty one")


CORRUPTIONS = ["garbage", "header", "schema-page", "table-pages", "truncated", "text-file"]


def test_corrupt_database_refuses_to_start_with_exit_2_and_is_left_untouched(server_factory, linear_model, report, tmp_path):
    model = model_dir(linear_model)
    data, db = populated_database(server_factory, model)
    cases = {}
    for kind in CORRUPTIONS:
        case_dir = tmp_path / f"corrupt-{kind}"
        shutil.copytree(data, case_dir)
        corrupt(case_dir / "sensor_data.db", kind)
        cases[kind] = (case_dir, sha256(case_dir / "sensor_data.db"))
    with ThreadPoolExecutor(3) as pool:
        results = dict(zip(cases, pool.map(lambda kind: failed_start(cases[kind][0], model), cases)))
    for kind, (code, out) in results.items():
        line = assert_clear_refusal(code, out, "database")
        assert "corrupt" in line or "cannot be opened" in line, f"{kind}: {line}"
        assert sha256(cases[kind][0] / "sensor_data.db") == cases[kind][1], f"{kind}: the start changed the file"
    survived(report, "corrupt database",
             f"{len(CORRUPTIONS)} corruptions ({', '.join(CORRUPTIONS)}): exit 2, one clear line, no traceback, "
             "file left as it was")


def _break_model(directory: Path, how: str) -> None:
    manifest = json.loads((directory / "manifest.json").read_text())
    onnx = directory / manifest.get("onnx", "model.onnx")
    scalers = directory / manifest.get("scalers", "scalers.npz")
    if how == "onnx missing":
        onnx.unlink()
    elif how == "onnx garbage":
        onnx.write_bytes(os.urandom(5000))
    elif how == "onnx truncated":
        onnx.write_bytes(onnx.read_bytes()[: onnx.stat().st_size // 2])
    elif how == "onnx not matching manifest":
        manifest["onnx_sha256"] = "0" * 64
        (directory / "manifest.json").write_text(json.dumps(manifest))
    elif how == "manifest missing":
        (directory / "manifest.json").unlink()
    elif how == "manifest not json":
        (directory / "manifest.json").write_text("{ this is not json")
    elif how == "manifest not an object":
        (directory / "manifest.json").write_text("[]")
    elif how == "manifest features not names":
        manifest["features"] = list(range(35))
        (directory / "manifest.json").write_text(json.dumps(manifest))
    elif how == "manifest wrong features":
        manifest["features"] = manifest["features"][:-1] + ["Humidity"]
        (directory / "manifest.json").write_text(json.dumps(manifest))
    elif how == "scalers missing":
        scalers.unlink()
    elif how == "scalers garbage":
        scalers.write_bytes(b"PK\x03\x04 not really a zip")
    elif how == "scalers wrong shape":
        np.savez(scalers, x_scale=np.ones(3), x_offset=np.zeros(35), y_scale=np.ones(8), y_offset=np.zeros(8))
    elif how == "directory missing":
        shutil.rmtree(directory)
    else:
        raise ValueError(how)


MODEL_BREAKAGES = ["onnx missing", "onnx garbage", "onnx truncated", "onnx not matching manifest", "manifest missing",
                   "manifest not json", "manifest not an object", "manifest features not names", "manifest wrong features", "scalers missing", "scalers garbage",
                   "scalers wrong shape", "directory missing"]


def test_missing_or_corrupt_model_refuses_to_start_with_a_clear_message(linear_model, report, tmp_path):
    cases = {}
    for how in MODEL_BREAKAGES:
        directory = tmp_path / "models" / how.replace(" ", "-")
        shutil.copytree(linear_model[0], directory)
        (directory / "manifest.json").write_text(json.dumps(
            {**json.loads((directory / "manifest.json").read_text()),
             "onnx_sha256": sha256(directory / "model.onnx")}))
        _break_model(directory, how)
        cases[how] = directory
    with ThreadPoolExecutor(3) as pool:
        results = dict(zip(cases, pool.map(lambda how: failed_start(tmp_path / f"data-{how}", cases[how]), cases)))
    for how, (code, out) in results.items():
        line = assert_clear_refusal(code, out)
        assert any(word in line for word in ("model", "manifest", "scaler", "ONNX", ".onnx")), f"{how}: {line}"
        assert not (tmp_path / f"data-{how}" / "sensor_data.db").exists(), f"{how}: a database was created"
    survived(report, "missing or corrupt model",
             f"{len(MODEL_BREAKAGES)} breakages ({', '.join(MODEL_BREAKAGES)}): exit 2, one line naming the file, "
             "no traceback, no database created")


# -- clocks -----------------------------------------------------------------------------------------

CLOCK_TIMES = [  # arrival order: far past, far future, out of order, time zones, leap day, 2038
    ("2024-06-01 12:00:00", "2024-06-01 12:00:00"),
    ("1970-01-01 00:00:00", "1970-01-01 00:00:00"),
    ("9999-12-31 23:59:59", "9999-12-31 23:59:59"),
    ("2024-06-01 11:59:59", "2024-06-01 11:59:59"),
    ("2038-01-19T03:14:08Z", "2038-01-19 03:14:08"),
    ("2000-02-29T23:30:00-01:00", "2000-03-01 00:30:00"),
    ("2099-01-01T00:00:00.25+05:00", "2098-12-31 19:00:00.25"),
    ("2024-06-01 12:00:00", "2024-06-01 12:00:00"),  # the same second twice
]


def test_readings_far_in_the_past_future_and_out_of_order_are_stored_and_exported(client, report):
    for i, (sent, _) in enumerate(CLOCK_TIMES):
        assert client.post("/send", json=reading(i, Time=sent, Level=float(i))).status_code == 200, sent
    stored = [t for _, t in CLOCK_TIMES]
    history = client.get(f"/history?metric=level&limit={len(stored)}").json()
    assert history == {"timestamps": stored, "values": [float(i) for i in range(len(stored))]}  # arrival order

    r = client.get("/generate_csv?start=1970-01-01&end=9999-12-31")
    assert r.status_code == 200, r.text
    rows = list(csv.DictReader(io.StringIO(r.text)))
    by_time = sorted(range(len(stored)), key=lambda i: (stored[i], i))
    assert [row["time"] for row in rows] == [stored[i] for i in by_time]
    assert [float(row["level"]) for row in rows] == [float(i) for i in by_time]
    assert client.get("/api/count?start=1970-01-01&end=9999-12-31").json() == {"count": len(stored)}
    assert client.get("/api/count?start=9999-12-31&end=9999-12-31").json() == {"count": 1}
    assert client.get("/api/count?start=1970-01-01&end=1970-01-01").json() == {"count": 1}
    assert client.get("/api/count?start=2024-06-01&end=2024-06-01").json() == {"count": 3}

    latest = client.get("/api/latest?limit=20").json()["readings"]
    assert [x["time"] for x in reversed(latest)] == [t.replace(" ", "T") + "Z" for t in stored]
    far = client.get("/api/series?start=9999-12-31T00:00:00Z&end=9999-12-31T23:59:59Z&metrics=level&points=10").json()
    assert far["series"]["level"] == [2.0]
    past = client.get("/api/series?start=1969-12-31T23:00:00Z&end=1970-01-01T01:00:00Z&metrics=level&points=10").json()
    assert past["series"]["level"] == [1.0]
    survived(report, "clock far off",
             f"{len(stored)} readings from 1970 to 9999, out of order and in 4 time zones: stored in UTC, "
             "/history in arrival order, export and count by time, series in range")


class FrozenClock(datetime):
    now_value = datetime(2024, 6, 1, 12, 0, 30, tzinfo=UTC)

    @classmethod
    def now(cls, tz=None):
        return cls.now_value if tz is not None else cls.now_value.replace(tzinfo=None)


PAST, Y2020, NOON, ELEVEN, FUTURE = ("1970-01-01 00:00:00", "2020-01-01 00:00:00", "2024-06-01 12:00:00",
                                    "2024-06-01 11:00:00", "9999-12-31 23:59:59")


@pytest.mark.parametrize("clock,times,kept", [
    # the clock is right; a reading stamped 9999 must not make everything look a day old
    (datetime(2024, 6, 1, 12, 0, 30, tzinfo=UTC), [PAST, Y2020, NOON, ELEVEN, FUTURE], [NOON, ELEVEN, FUTURE]),
    # the clock jumped 10 years ahead: age counts from the newest reading, the last day stays
    (datetime(2034, 6, 1, tzinfo=UTC), [PAST, Y2020, NOON, ELEVEN], [NOON, ELEVEN]),
    # the clock fell back to 1971 (dead RTC battery): nothing later than 1970-12-31 is deleted
    (datetime(1971, 1, 1, tzinfo=UTC), [PAST, Y2020, NOON, ELEVEN, FUTURE], [Y2020, NOON, ELEVEN, FUTURE]),
], ids=["reading-stamped-9999", "clock-10-years-ahead", "clock-back-in-1971"])
def test_retention_age_is_measured_from_min_of_clock_and_newest_reading(make_client, monkeypatch, report,
                                                                       clock, times, kept):
    from edge.store import retention
    # frozen before the app starts: its own first retention pass may run after the post below
    FrozenClock.now_value = clock
    monkeypatch.setattr(retention, "datetime", FrozenClock)
    with make_client(retention_days=1) as client:
        assert client.post("/send", json=[reading(i, Time=t) for i, t in enumerate(times)]).status_code == 200
        app = client.app.state.appliance
        asyncio.run_coroutine_threadsafe(retention.prune_once(app.writer, app.settings, app.metrics), app.loop).result(10)
        left = client.get("/history?metric=temperature&limit=100").json()["timestamps"]
    assert left == kept
    survived(report, "clock jumps vs retention",
             "age measured from min(clock, newest reading): a reading stamped 9999, a clock 10 years ahead or "
             "fallen back to 1971 delete nothing from the last day")


# -- slow clients ------------------------------------------------------------------------------------

def test_slowloris_body_is_cut_off_at_the_deadline_and_the_connection_closed(settings, report):
    with Server(settings=settings) as server:
        server.appliance.deadlines.seconds = 1.0  # BODY_TIMEOUT (30 s) shortened for the test
        slow = Trickle(server.port, 20, every=0.1)
        try:
            # others are served meanwhile
            for i in range(30):
                assert post(server.port, reading(i), timeout=10).status == 200
            for s in slow.socks:
                status, body = read_response(s, timeout=15)
                assert status == 400 and json.loads(body)["reason"] == "body_timeout", (status, body)
            # ... and hung up on, so the trickle cannot hold the connection
            for s in slow.socks:
                s.settimeout(10)
                try:
                    assert s.recv(1) == b""
                except ConnectionResetError:
                    pass
        finally:
            slow.close()
        assert count_rows(settings.db_path) == 30
    survived(report, "slowloris (body a byte at a time)",
             "400 `body_timeout` at the body deadline and the connection closed; 20 slow senders did not delay "
             "30 other posts")


def test_slow_bodies_do_not_hold_up_the_real_server(server_factory, linear_model, report):
    server = server_factory(model_dir(linear_model)).start()
    slow = Trickle(server.port, 50, every=0.2)
    try:
        for i in range(50):
            assert post(server.port, reading(i), timeout=10).status == 200
        assert get(server.port, "/api/latest?limit=1").status == 200
    finally:
        slow.close()
    assert count_rows(server.data_dir / "sensor_data.db") == 50
    survived(report, "50 slow senders on the real server", "other clients served while they trickle")


@pytest.mark.soak
def test_real_server_cuts_a_slow_body_off_after_thirty_seconds(server_factory, linear_model, report):
    from edge.http.body_deadlines import BODY_TIMEOUT
    server = server_factory(model_dir(linear_model)).start()
    slow = Trickle(server.port, 5, every=1.0)
    try:
        for s in slow.socks:
            status, body = read_response(s, timeout=BODY_TIMEOUT + 15)
            assert status == 400 and json.loads(body)["reason"] == "body_timeout"
    finally:
        slow.close()
    survived(report, "slowloris against the real server", f"cut off with 400 after the {BODY_TIMEOUT:.0f} s deadline",
             "faults_soak")


def test_sse_clients_that_never_read_do_not_stall_ingest_and_are_disconnected(settings, report):
    settings = dataclasses.replace(settings, send_timeout=1.0)
    with Server(settings=settings) as server:
        stuck = stuck_sse_clients(server.port, 10)
        try:
            wait_for(lambda: len(server.appliance.hub) == 10, 10, "10 SSE subscribers")
            for i in range(30):
                r = post(server.port, batch(500, i), timeout=30)
                assert r.status == 200, r.text
            wait_for(lambda: len(server.appliance.hub) == 0, 30, "the stuck clients to be disconnected")
            for q in range(3):  # a client that reads still gets every reading
                assert sse_read(server.port, 5, 15000 - 5) == list(range(15000 - 4, 15001))
        finally:
            for s in stuck:
                s.close()
    assert count_rows(settings.db_path) == 15000
    survived(report, "SSE clients that never read",
             "ingest of 15,000 readings unaffected; disconnected after send_timeout; readers still get everything")


def test_sse_clients_stuck_or_reading_keep_the_real_server_memory_flat(server_factory, linear_model, report):
    """Memory must not grow with the data: 100 batches of 1,000 readings with one dashboard reading
    everything and 10 clients that never read (each also asked for the whole history)."""
    server = server_factory(model_dir(linear_model)).start()
    for i in range(4):  # warm-up: model, pages, thread pool
        assert post(server.port, batch(500, i)).status == 200
    before = rss_mb(server.proc.pid)
    reader = socket.create_connection(("127.0.0.1", server.port))
    reader.sendall(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
    drain(reader)
    stuck = stuck_sse_clients(server.port, 10, last_event_id=0)
    body = json.dumps(batch(1000)).encode()
    try:
        wait_for(lambda: metric_value(get(server.port, "/metrics").text, "fdedge_sse_clients") == 11, 10,
                 "11 SSE subscribers")
        samples = []
        for i in range(100):
            r = post(server.port, body, timeout=30)
            assert r.status == 200, r.text
            if i % 25 == 24:
                samples.append(rss_mb(server.proc.pid))
        warm, end = samples[0], samples[-1]
        assert end < warm + 30, f"RSS kept growing with the data: {[round(x) for x in samples]} MB every 25,000 readings"
        assert sse_read(server.port, 3, 102000 - 3) == [101998, 101999, 102000]
    finally:
        for s in [*stuck, reader]:
            s.close()
    report.put("faults", "sse_memory_rss_mb", {"before": round(before, 1), "samples": [round(x, 1) for x in samples]})
    survived(report, "SSE: 1 reading and 10 stuck clients on the real server",
             f"100,000 readings in batches of 1,000: server RSS {before:.0f} MB before, "
             f"{' / '.join(f'{x:.0f}' for x in samples)} MB every 25,000 readings (flat)")


@pytest.mark.soak
def test_real_server_disconnects_a_client_that_stops_reading(server_factory, linear_model, report):
    server = server_factory(model_dir(linear_model)).start()
    stuck = stuck_sse_clients(server.port, 5, last_event_id=0)
    try:
        for i in range(40):
            assert post(server.port, batch(500, i)).status == 200
        wait_for(lambda: metric_value(get(server.port, "/metrics").text, "fdedge_sse_clients") == 0, 60,
                 "the real server to drop clients that stopped reading", every=1)
    finally:
        for s in stuck:
            s.close()
    survived(report, "SSE clients that stop reading, real server", "disconnected after the 30 s send timeout",
             "faults_soak")


def test_a_server_started_on_a_full_disk_serves_reads_and_refuses_ingest_until_space_returns(
        small_filesystem, linear_model, report):
    server = Server(small_filesystem / "data", model_dir(linear_model))
    try:
        server.start()
        assert post(server.port, batch(100)).status == 200
        server.stop()
        ballast = small_filesystem / "ballast"
        with open(ballast, "wb", buffering=0) as f:  # every last block
            for size in (1 << 20, 4096, 1):
                with contextlib.suppress(OSError):
                    while True:
                        f.write(b"\0" * size)
        server.start(probe="/healthz")
        ready = get(server.port, "/readyz")
        assert ready.status == 503 and "free" in " ".join(ready.json()["problems"]), ready.text
        assert get(server.port, "/api/latest?limit=3").json()["readings"]
        assert get(server.port, "/").status == 200 and get(server.port, "/history?metric=temperature").status == 200
        refused = post(server.port, batch(10, 1))
        assert refused.status == 503 and refused.json()["reason"] == "disk_full", refused.text
        ballast.unlink()
        wait_for(lambda: post(server.port, batch(10, 2)).status == 200, 10, "ingest once space returned")
        assert get(server.port, "/readyz").status == 200
        assert count_rows(server.data_dir / "sensor_data.db") == 110
    finally:
        server.stop()
    survived(report, "started on a full disk",
             "reads, pages and /readyz (503 naming the free space) served; ingest 503 `disk_full`; "
             "ingest back once space returned, without a restart")
