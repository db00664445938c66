"""`fdedge simulate` against the real server: complete, in order, no duplicates, whatever fails.

Readings are compared by (time, 35 feature values) as stored in the appliance's SQLite file,
so "arrived once and in order" means exactly the generated sequence, nothing more.
"""

from __future__ import annotations

import http.client
import json
import signal
import sqlite3
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from edge.fdrest import FEATURES, format_time
from simulator import sensor
from simulator.delivery import request_body
from simulator.outbox import BufferLocked, Outbox
from simulator.sources import machine_readings
from tests.harness import BUNDLED, Server, free_port
from tests.sensor_helpers import FAST, finish, make_csv, run_sensor, start_sensor, stored, stored_count, when

# -- helpers --------------------------------------------------------------------------------

@pytest.fixture
def model(linear_model) -> Path:
    return BUNDLED if (BUNDLED / "manifest.json").exists() else linear_model[0]


def ingest_keys(server: Server) -> list[tuple[str, int, int]]:
    with sqlite3.connect(server.data_dir / "sensor_data.db") as conn:
        return conn.execute("SELECT key, first_id, last_id FROM fdedge_ingest_keys ORDER BY first_id").fetchall()


def wait_for(predicate, timeout: float = 20, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


# -- units ----------------------------------------------------------------------------------

@pytest.mark.parametrize("text, value", [("2", 2.0), ("0.2", 0.2), (".5", 0.5), ("1/5", 0.2), ("30/min", 0.5),
                                         ("120/h", 1 / 30), ("3 / s", 3.0), ("0", 0.0)])
def test_rate_accepts_fractions(text, value):
    assert sensor.parse_rate(text) == pytest.approx(value)
    assert sensor.build_parser().parse_args(["--rate", text]).rate == pytest.approx(value)


@pytest.mark.parametrize("text", ["-1", "fast", "1/0", "inf", "nan", "2/week"])
def test_rate_refuses_nonsense(text, capsys):
    with pytest.raises(SystemExit):
        sensor.build_parser().parse_args(["--rate", text])
    assert "rate" in capsys.readouterr().err


def test_durations_and_times():
    assert [sensor.parse_seconds(t) for t in ("90", "90s", "1.5min", "2h")] == [90, 90, 90, 7200]
    assert format_time(sensor.parse_start("2024-01-01 00:00:00"), ms=True) == "2024-01-01 00:00:00"
    assert format_time(sensor.parse_start("2024-01-01T01:00:00.25+01:00"), ms=True) == "2024-01-01 00:00:00.250"


def test_help_is_a_manual(capsys):
    with pytest.raises(SystemExit) as exit_:
        sensor.main(["--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    for needle in ("--csv", "--restamp", "--loop", "--scenario", "--batch", "--buffer", "--max-buffer", "--flush",
                   "Idempotency-Key", "dead_letter", "FDEDGE_TOKEN", "exit status", "examples"):
        assert needle in text


def test_body_is_fdrest_object_at_batch_1_and_an_array_otherwise():
    one = json.dumps({"Time": "2024-01-01 00:00:00"})
    assert json.loads(request_body([one], 1)) == {"Time": "2024-01-01 00:00:00"}
    assert json.loads(request_body([one], 5)) == [{"Time": "2024-01-01 00:00:00"}]
    assert len(json.loads(request_body([one, one], 1))) == 2  # a claim from a run with a larger --batch


def test_outbox_claims_are_stable_and_ids_never_reused(tmp_path):
    box = Outbox(tmp_path / "b.db")
    sensor_id = box.sensor_id
    box.put(["a", "b", "c"])
    claim = box.claim(2)
    assert claim.key == f"{sensor_id}:1-2" and claim.bodies == ["a", "b"]
    box.put(["d"])
    assert box.claim(10) == claim  # the same request again until it is settled
    box.close()

    box = Outbox(tmp_path / "b.db")  # a restart of the sensor
    assert box.sensor_id == sensor_id and len(box) == 4
    assert box.claim(10) == claim
    box.ack(claim)
    rest = box.claim(10)
    assert rest.key == f"{sensor_id}:3-4" and rest.bodies == ["c", "d"]
    box.ack(rest)
    assert len(box) == 0 and box.claim(10) is None
    box.put(["e"])
    assert box.claim(10).key == f"{sensor_id}:5-5"  # AUTOINCREMENT: an old key never comes back
    box.close()


def test_outbox_batches_wait_to_fill_then_linger(tmp_path):
    box = Outbox(tmp_path / "b.db")
    box.put(["a", "b"])
    assert box.claim(5, min_rows=5, max_wait=60) is None
    assert box.claim(5, min_rows=5, max_wait=0).bodies == ["a", "b"]
    box.close()


def test_outbox_dead_letter_and_max_buffer(tmp_path):
    box = Outbox(tmp_path / "b.db", max_rows=4)
    box.put(["a", "b"])
    claim = box.claim(2)
    assert box.put(["c", "d", "e", "f"]) == 2  # c and d dropped: the oldest not in flight
    assert len(box) == 4
    box.reject(claim, [claim.ids[1]], 422, "row 1 is bad")
    assert box.dead_count() == 1 and len(box) == 3
    assert box.claim(10).bodies == ["a", "e", "f"]
    with pytest.raises(BufferLocked):
        Outbox(tmp_path / "b.db")  # one sensor per buffer
    box.close()
    with sqlite3.connect(tmp_path / "b.db") as conn:
        assert conn.execute("SELECT body, status, message FROM dead_letter").fetchall() == [("b", 422, "row 1 is bad")]


# -- against the real server ----------------------------------------------------------------

def test_live_machine_streams_completely_and_in_order(server_factory, model, tmp_path):
    server = server_factory(model).start()
    args = ["--scenario", "developing", "--fault", "3", "--minutes", "0.5", "--seed", "7", "--machine", "pump-3000",
            "--rate", "200", "--count", "300", "--start", "2024-05-01 12:00:00"]
    result = run_sensor(server.url, tmp_path / "b.db", *args)
    assert result.returncode == 0, result.stderr

    # the same flags reproduce the same readings: 5 ms apart from --start, pump-3000's profile
    ns = sensor.build_parser().parse_args(args)
    source = machine_readings(sensor.make_machine(ns, ns.start, 1 / ns.rate), 1 / ns.rate, with_machine=True)
    expected = []
    for _ in range(300):
        body = next(source)
        expected.append((when(body["Time"]), *(body[k] for k in FEATURES)))
    got = stored(server, "pump-3000")
    assert got == expected
    assert (got[1][0] - got[0][0]).total_seconds() == pytest.approx(0.005)
    assert "acked 300" in result.stderr and "max fault" in result.stderr


def test_csv_replay_single_and_batched(server_factory, model, tmp_path):
    server = server_factory(model).start()
    rows = make_csv(tmp_path / "data.csv", 20)
    one = run_sensor(server.url, tmp_path / "one.db", "--csv", str(tmp_path / "data.csv"), "--rate", "0")
    assert one.returncode == 0, one.stderr
    assert stored(server, "default") == rows  # no --machine: FD-REST's body, filed under 'default'
    keys = ingest_keys(server)
    assert [last - first for _, first, last in keys] == [0] * 20  # one reading per request

    batched = run_sensor(server.url, tmp_path / "batch.db", "--csv", str(tmp_path / "data.csv"), "--rate", "0",
                         "--batch", "7", "--machine", "batched")
    assert batched.returncode == 0, batched.stderr
    assert stored(server, "batched") == rows
    sizes = [last - first + 1 for _, first, last in ingest_keys(server)[20:]]
    assert sizes == [7, 7, 6]


def test_restamp_and_loop(server_factory, model, tmp_path):
    server = server_factory(model).start()
    rows = make_csv(tmp_path / "data.csv", 3)
    result = run_sensor(server.url, tmp_path / "b.db", "--csv", str(tmp_path / "data.csv"), "--loop", "--restamp",
                        "--rate", "10", "--count", "7", "--start", "2025-02-03 04:05:06")
    assert result.returncode == 0, result.stderr
    got = stored(server)
    assert [r[1:] for r in got] == [r[1:] for r in (rows * 3)[:7]]
    assert [str(r[0]) for r in got[:2]] == ["2025-02-03 04:05:06", "2025-02-03 04:05:06.100000"]


def test_appliance_down_at_start_gets_everything_once(server_factory, model, tmp_path):
    rows = make_csv(tmp_path / "data.csv", 60)
    server = server_factory(model)  # not started yet: the sensor finds nobody on its port
    log = tmp_path / "sensor.log"
    proc = start_sensor(server.url, tmp_path / "b.db", "--csv", str(tmp_path / "data.csv"), "--rate", "100",
                        "--batch", "8", log=log)
    wait_for(lambda: "retrying" in log.read_text() and "generated 60" in log.read_text(), what="a full buffer")
    server.start()
    text = finish(proc, log)
    assert stored(server) == rows
    assert "ConnectionRefusedError" in text and "acked 60" in text and "sent 0 " in text


def test_server_killed_mid_stream_loses_and_duplicates_nothing(server_factory, model, tmp_path):
    rows = make_csv(tmp_path / "data.csv", 400)
    server = server_factory(model).start()
    log = tmp_path / "sensor.log"
    proc = start_sensor(server.url, tmp_path / "b.db", "--csv", str(tmp_path / "data.csv"), "--rate", "250",
                        "--batch", "3", log=log)
    wait_for(lambda: stored_count(server) >= 60, what="the first readings")
    server.kill()
    time.sleep(0.3)
    server.start()  # same port, same database
    text = finish(proc, log)
    assert stored(server) == rows
    assert "retrying" in text


class DropFirstAnswers(BaseHTTPRequestHandler):
    """A proxy that forwards each request but hangs up instead of answering every third one:
    the appliance stored the readings, the sensor never heard so."""

    protocol_version = "HTTP/1.1"
    upstream = ("127.0.0.1", 0)
    count = 0
    lock = threading.Lock()

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers["Content-Length"]))
        conn = http.client.HTTPConnection(*self.upstream, timeout=10)
        headers = {k: v for k, v in self.headers.items() if k.lower() in {"content-type", "idempotency-key"}}
        conn.request("POST", self.path, body=body, headers=headers)
        resp = conn.getresponse()
        data, status, replayed = resp.read(), resp.status, resp.getheader("X-FDEdge-Replayed")
        conn.close()
        with self.lock:
            type(self).count += 1
            drop = self.count % 3 == 1
        if drop:
            self.close_connection = True
            return
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if replayed:
            self.send_header("X-FDEdge-Replayed", replayed)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:
        pass


def test_lost_answers_are_not_stored_twice(server_factory, model, tmp_path):
    rows = make_csv(tmp_path / "data.csv", 30)
    server = server_factory(model).start()
    DropFirstAnswers.upstream = ("127.0.0.1", server.port)
    proxy = ThreadingHTTPServer(("127.0.0.1", 0), DropFirstAnswers)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        result = run_sensor(f"http://127.0.0.1:{proxy.server_address[1]}", tmp_path / "b.db",
                            "--csv", str(tmp_path / "data.csv"), "--rate", "0", "--batch", "4")
    finally:
        proxy.shutdown()
        proxy.server_close()
    assert result.returncode == 0, result.stderr
    assert stored(server) == rows
    assert "replayed" in result.stderr  # the lost answers came back from the stored results


def test_sensor_killed_resumes_its_buffer_first(server_factory, model, tmp_path):
    first = make_csv(tmp_path / "first.csv", 600)
    second = make_csv(tmp_path / "second.csv", 20, seed=1, start="2024-02-01 00:00:00")
    server = server_factory(model).start()
    buffer, log = tmp_path / "b.db", tmp_path / "sensor.log"
    # unpaced: all 600 are buffered at once and drain one per request, so the kill leaves a backlog
    proc = start_sensor(server.url, buffer, "--csv", str(tmp_path / "first.csv"), "--rate", "0", log=log)
    wait_for(lambda: stored_count(server) >= 30, what="the first readings")
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    with sqlite3.connect(buffer) as conn:
        generated = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'").fetchone()[0]
        left = conn.execute("SELECT count(*) FROM outbox").fetchone()[0]
    assert left > 0, "the kill came too late to leave a backlog"

    result = run_sensor(server.url, buffer, "--csv", str(tmp_path / "second.csv"), "--rate", "0", "--batch", "50")
    assert result.returncode == 0, result.stderr
    assert "resuming" in result.stderr
    assert stored(server) == first[:generated] + second


def test_wrong_token_goes_to_dead_letter_not_retried(server_factory, model, tmp_path):
    server = server_factory(model, env={"FDEDGE_TOKEN": "right"}).start()
    make_csv(tmp_path / "data.csv", 5)
    buffer = tmp_path / "b.db"
    started = time.monotonic()
    wrong = run_sensor(server.url, buffer, "--csv", str(tmp_path / "data.csv"), "--token", "wrong", "--rate", "0",
                       "--quiet")
    assert time.monotonic() - started < 15
    assert wrong.returncode == 1
    assert "HTTP 401" in wrong.stderr and "bearer token" in wrong.stderr and "dead_letter" in wrong.stderr
    assert stored_count(server) == 0
    with sqlite3.connect(buffer) as conn:
        assert conn.execute("SELECT status, count(*) FROM dead_letter GROUP BY status").fetchall() == [(401, 5)]
        assert conn.execute("SELECT count(*) FROM outbox").fetchone()[0] == 0

    right = run_sensor(server.url, buffer, "--csv", str(tmp_path / "data.csv"), "--token", "right", "--rate", "0")
    assert right.returncode == 0, right.stderr
    assert stored_count(server) == 5


def test_appliance_away_bounded_buffer_and_sigterm_keeps_it(tmp_path):
    buffer, log = tmp_path / "b.db", tmp_path / "sensor.log"
    proc = start_sensor(f"http://127.0.0.1:{free_port()}", buffer, "--rate", "100", "--max-buffer", "20", log=log)
    wait_for(lambda: "buffer full" in log.read_text(), what="the --max-buffer warning")
    proc.send_signal(signal.SIGTERM)
    text = finish(proc, log, timeout=10)
    assert "SIGTERM" in text and "20 reading(s) stay in" in text
    with sqlite3.connect(buffer) as conn:
        ids = [r[0] for r in conn.execute("SELECT id FROM outbox ORDER BY id")]
        generated = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'").fetchone()[0]
    assert len(ids) == 20 and generated > 20
    # the oldest were dropped, except the request that was being retried (it may be stored already)
    assert ids == [1, *range(generated - 18, generated + 1)]


def test_invalid_reading_in_a_batch_is_set_aside_alone(server_factory, model, tmp_path):
    rows = make_csv(tmp_path / "data.csv", 6)
    lines = (tmp_path / "data.csv").read_text().splitlines()
    cells = lines[3].split(",")
    cells[5] = "nan"  # row 2's KURTOSIS_Vertical: the sensor replays it, the appliance answers 422
    lines[3] = ",".join(cells)
    (tmp_path / "data.csv").write_text("\n".join(lines) + "\n")
    server = server_factory(model).start()
    result = run_sensor(server.url, tmp_path / "b.db", "--csv", str(tmp_path / "data.csv"), "--rate", "0",
                        "--batch", "4")
    assert result.returncode == 1
    assert "HTTP 422" in result.stderr and "KURTOSIS_Vertical" in result.stderr
    assert stored(server) == rows[:2] + rows[3:]
    with sqlite3.connect(tmp_path / "b.db") as conn:
        assert conn.execute("SELECT id, status FROM dead_letter").fetchall() == [(3, 422)]


class Flaky(BaseHTTPRequestHandler):
    """A stub appliance: answers `script` statuses first, then 200; records every request.
    It also hangs up after each answer without saying so, as a keep-alive timeout does."""

    protocol_version = "HTTP/1.1"
    script: list[int] = []
    seen: list[tuple[str, object]] = []

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.seen.append((self.headers["Idempotency-Key"], body))
        status = self.script.pop(0) if self.script else 200
        data = json.dumps([{"fault0": 1.0}] if status == 200 else {"error": "x", "message": f"status {status}"})
        self.send_response(status)
        if status in (429, 503):
            self.send_header("Retry-After", "0")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data.encode())
        self.close_connection = True  # no "Connection: close": the sensor finds out on reuse

    def log_message(self, *args) -> None:
        pass


def test_transient_answers_repeat_the_same_request_and_stale_connections_are_quietly_replaced(tmp_path, capsys):
    Flaky.script, Flaky.seen = [503, 429, 502, 302, 408], []
    stub = ThreadingHTTPServer(("127.0.0.1", 0), Flaky)
    threading.Thread(target=stub.serve_forever, daemon=True).start()
    make_csv(tmp_path / "data.csv", 5)
    try:
        code = sensor.main(["--url", f"http://127.0.0.1:{stub.server_address[1]}", "--buffer", str(tmp_path / "b.db"),
                            "--csv", str(tmp_path / "data.csv"), "--rate", "0", "--batch", "2", *FAST])
    finally:
        stub.shutdown()
        stub.server_close()
    err = capsys.readouterr().err
    assert code == 0, err
    keys = [key for key, _ in Flaky.seen]
    assert keys[:6] == [keys[0]] * 6 and len(set(keys)) == 3  # five repeats of the first request, same key
    assert all(body == Flaky.seen[0][1] for _, body in Flaky.seen[:6])
    times = [r["Time"] for _, body in Flaky.seen[5:] for r in body]
    assert times == [f"2024-01-01 00:00:0{i}" for i in range(5)]
    assert "attempt 5" not in err and "delivered again after 5 failed attempt(s)" in err
    assert err.count("retrying in") == 2  # attempts 1 and 3 are logged; stale connections not at all
