"""Sockets that never send a request, or stop halfway through its head, cannot lock anyone out:
under systemd's 1,024 descriptors, 2,000 of them are open while /healthz and ingest are served,
and each is closed once --head-timeout has passed (edge/http/connections.py)."""

from __future__ import annotations

import json
import resource
import socket
import sys
import time

from tests.harness import reading
from tests.reliability_helpers import get, post, wait_for

REPORT_SECTION = "hostile"
# `fdedge serve` as systemd starts it: at most 1,024 open descriptors
ULIMITED = ["bash", "-c", 'ulimit -n 1024 && exec "$0" "$@"', sys.executable, "-m", "edge"]
HALF_HEAD = b"POST /send HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nX-Pad: " + b"a" * 2000


def _open(port: int, n: int) -> list[socket.socket]:
    socks = []
    for i in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        if i % 2:
            s.sendall(HALF_HEAD)  # a head that never ends
        socks.append(s)
    return socks


def _closed_by_server(s: socket.socket) -> bool:
    s.settimeout(0.01)
    try:
        while chunk := s.recv(65536):
            del chunk
        return True
    except TimeoutError:
        return False
    except OSError:
        return True


def test_two_thousand_idle_or_half_head_sockets_do_not_lock_anyone_out(server_factory, linear_model, report):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 8192)), hard))  # the attacker's side
    server = server_factory(linear_model[0], command=ULIMITED, args=["--head-timeout", "3"]).start()
    socks: list[socket.socket] = []
    try:
        socks = _open(server.port, 2000)
        started = time.monotonic()
        health = get(server.port, "/healthz", timeout=10)
        ingest = post(server.port, json.dumps(reading(1)).encode(), timeout=10)
        served_s = time.monotonic() - started
        assert health.status == 200 and ingest.status == 200, (health.status, ingest.text)
        # every one of them is closed by the server once the head deadline has passed
        wait_for(lambda: all(_closed_by_server(s) for s in socks), 30, "the server to close every idle socket")
        closed_s = time.monotonic() - started
        log = server.read_log()
        assert "Too many open files" not in log and "Traceback" not in log, log
    finally:
        for s in socks:
            s.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    report.put("hostile", "idle_sockets", f"2,000 idle or half-head sockets under `ulimit -n 1024`: /healthz and "
                                          f"a reading answered 200 in {served_s * 1000:.0f} ms meanwhile; all closed "
                                          f"{closed_s:.1f} s later (--head-timeout 3)")


def test_a_half_sent_head_gets_408_after_the_deadline(server_factory, linear_model):
    server = server_factory(linear_model[0], args=["--head-timeout", "1"]).start()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(HALF_HEAD)
        started = time.monotonic()
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
        waited = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408") and b'"head_timeout"' in answer, answer
    assert 0.9 <= waited < 5, waited
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:  # silent: closed, no answer
        assert s.recv(100) == b""


def test_a_kept_alive_connection_is_not_cut_off_between_requests(server_factory, linear_model):
    import http.client
    server = server_factory(linear_model[0], args=["--head-timeout", "1"]).start()
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    for _ in range(3):
        conn.request("GET", "/healthz")
        assert conn.getresponse().read() == b'{"status":"ok"}'
        time.sleep(1.5)  # idle between requests is the keep-alive timeout's business (30 s)
    conn.close()


def test_past_the_cap_the_longest_idle_connection_makes_room(server_factory, linear_model):
    server = server_factory(linear_model[0], args=["--max-connections", "20"]).start()
    idle = _open(server.port, 20)
    try:
        time.sleep(0.2)
        assert get(server.port, "/healthz").status == 200  # took the place of the oldest idle one
        assert _closed_by_server(idle[0]) and not _closed_by_server(idle[-1])
    finally:
        for s in idle:
            s.close()
