"""`fdedge serve` stops cleanly on Ctrl-C and SIGTERM, with dashboards connected: every open
event stream ends as a complete response, so the log holds no ERROR line. (uvicorn re-raises the
signal once it has shut down: SIGTERM is the exit status a process manager expects, Ctrl-C exits
130 as a shell's programs do.)"""

from __future__ import annotations

import signal
import socket

import pytest

from tests.harness import BUNDLED, reading


def open_stream(port: int, path: str) -> socket.socket:
    """An SSE client that has had its first event (the stream is open on the server)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    got = b""
    while b"event: hello" not in got:
        chunk = sock.recv(65536)
        assert chunk, f"the stream closed before its hello: {got!r}"
        got += chunk
    return sock


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_shutdown_with_open_streams_logs_no_error(server_factory, sig):
    server = server_factory(BUNDLED).start()
    streams = [open_stream(server.port, path) for path in ("/events", "/events?shape=arrays", "/events?machine=m1")]
    try:
        assert len(server.send(reading(1))) == 8  # a commit the streams have sent on
        server.proc.send_signal(sig)
        assert server.proc.wait(15) == (130 if sig == signal.SIGINT else -sig)
        for sock in streams:  # each stream ended as a complete chunked response
            tail = b""
            while chunk := sock.recv(65536):
                tail += chunk
            assert tail.endswith(b"0\r\n\r\n"), tail[-200:]
    finally:
        for sock in streams:
            sock.close()
    log = server.read_log()
    assert "Shutting down" in log and "Finished server process" in log
    assert "ERROR" not in log and "Traceback" not in log, log
