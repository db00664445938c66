"""The log on an SD card: one line for a client that stopped reading, each error's traceback once,
and a repeated error at most a few times a minute (edge/http/quiet_logs.py)."""

from __future__ import annotations

import json
import logging
import sys

from edge.http.quiet_logs import BURST, RateLimit, is_disconnect
from tests.harness import BUNDLED, reading
from tests.reliability_helpers import get, metric_value, post, stuck_sse_clients, wait_for

REPORT_SECTION = "hostile"
# `python -c` with the readers' machine list broken, so GET /api/machines fails inside the app
BROKEN_MACHINES = ("import sys, edge.store.reading_queries as q\n"
                   "def broken(conn, *args): raise RuntimeError('a bug in a read query')\n"
                   "q.machines = broken\n"
                   "from edge.cli import main\n"
                   "sys.exit(main())")


def test_sse_clients_that_stop_reading_cost_one_log_line_each(server_factory, report):
    server = server_factory(BUNDLED, args=["--send-timeout", "1"]).start()
    stuck = stuck_sse_clients(server.port, 20)
    try:
        wait_for(lambda: metric_value(get(server.port, "/metrics").text, "fdedge_sse_clients") == 20, 10,
                 "20 SSE subscribers")
        body = json.dumps([reading(i) for i in range(500)]).encode()
        for _ in range(20):  # fill their socket buffers
            assert post(server.port, body).status == 200
        wait_for(lambda: metric_value(get(server.port, "/metrics").text, "fdedge_sse_clients") == 0, 30,
                 "the stuck clients to be disconnected")
    finally:
        for s in stuck:
            s.close()
    server.stop()
    log = server.log_path.read_text(errors="replace")
    assert "Traceback" not in log and "Exception in ASGI application" not in log, log[-3000:]
    lines = [line for line in log.splitlines() if "stopped reading" in line]
    assert 1 <= len(lines) <= 20, log[-3000:]
    assert "SendTimeoutError" in lines[0]
    report.put("hostile", "log_disconnects", f"20 SSE clients that stopped reading: {len(lines)} log lines "
                                             f"({len(log):,} bytes of log in all), no traceback")


def test_a_repeated_internal_error_logs_its_traceback_a_few_times_a_minute(server_factory, report):
    server = server_factory(BUNDLED, command=[sys.executable, "-c", BROKEN_MACHINES]).start()
    for _ in range(100):
        r = get(server.port, "/api/machines")
        assert r.status == 500 and "a bug" not in r.text and r.json()["error"] == "internal"
    server.stop()
    log = server.log_path.read_text(errors="replace")
    assert log.count("Traceback") == BURST, log[-3000:]  # ours only: uvicorn's copy of each is dropped
    assert "Exception in ASGI application" not in log
    assert log.count("unexpected error on GET /api/machines") == BURST
    report.put("hostile", "log_errors", f"100 identical internal errors in a burst: {BURST} tracebacks logged "
                                        f"({len(log):,} bytes of log), uvicorn's duplicate of each dropped")


def _record(msg: str = "boom %s", level: int = logging.ERROR) -> logging.LogRecord:
    return logging.LogRecord("edge.x", level, __file__, 1, msg, ("x",), None)


def test_the_rate_limit_says_how_many_it_dropped_when_the_error_comes_back():
    now = [0.0]
    limit = RateLimit(window_s=60, burst=5, clock=lambda: now[0])
    passed = [limit.filter(r) for r in (_record() for _ in range(100))]
    assert passed.count(True) == 5 and passed[:5] == [True] * 5
    assert limit.filter(_record("another message")) and limit.filter(_record(level=logging.INFO))
    now[0] = 61.0
    back = _record()
    assert limit.filter(back) and "95 more like this were not logged in the last 60 s" in back.getMessage()
    again = _record()
    assert limit.filter(again) and "more like this" not in again.getMessage()


def test_what_counts_as_a_client_going_away():
    from sse_starlette.sse import SendTimeoutError
    assert is_disconnect(SendTimeoutError()) and is_disconnect(BrokenPipeError())
    assert is_disconnect(ExceptionGroup("g", [SendTimeoutError(), ExceptionGroup("h", [ConnectionResetError()])]))
    assert not is_disconnect(ExceptionGroup("g", [SendTimeoutError(), RuntimeError()]))
    assert not is_disconnect(RuntimeError()) and not is_disconnect(None)
