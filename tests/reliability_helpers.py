"""Helpers shared by the reliability, security, fuzz and soak tests: raw HTTP on http.client (no
client library between the test and the socket), raw sockets, process memory, polling. The
servers they talk to come from tests/harness.py (`Server`, in a subprocess or in process)."""

from __future__ import annotations

import http.client
import json
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# -- small helpers ----------------------------------------------------------------------------------

def wait_for(predicate: Callable[[], Any], timeout: float = 20, what: str = "condition", every: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(every)


def rss_mb(pid: int) -> float:
    """Resident set size of a process, from /proc/<pid>/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def count_rows(db: Path, where: str = "", args: tuple = ()) -> int:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as conn:
        return conn.execute(f"SELECT count(*) FROM sensor_data {where}", args).fetchone()[0]


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


def request(port: int, method: str, path: str, body: bytes | str | dict | list | None = None,
            headers: dict[str, str] | None = None, timeout: float = 30, content_type: str | None = None) -> Reply:
    """One request on a fresh connection; raises OSError/HTTPException when the server is gone."""
    headers = dict(headers or {})
    if isinstance(body, (dict, list)):
        body = json.dumps(body).encode()
        headers.setdefault("Content-Type", "application/json")
    elif isinstance(body, str):
        body = body.encode()
    if content_type is not None:
        headers["Content-Type"] = content_type
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
    finally:
        conn.close()


def post(port: int, body, content_type: str = "application/json", headers: dict | None = None,
         timeout: float = 30) -> Reply:
    return request(port, "POST", "/send", body, headers, timeout, content_type)


def get(port: int, path: str, headers: dict | None = None, timeout: float = 30) -> Reply:
    return request(port, "GET", path, None, headers, timeout)


def metric_value(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


# -- raw sockets ------------------------------------------------------------------------------------

def open_socket(port: int, timeout: float = 10) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=timeout)


def read_response(sock: socket.socket, timeout: float = 10) -> tuple[int, bytes]:
    """Status and body of one response on a raw socket (reads until the server closes or the
    declared length is in)."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    if not head:
        return 0, b""
    status = int(head.split(b" ", 2)[1])
    length = None
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while length is not None and len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return status, body


def soak_seconds(default: float) -> float:
    return float(os.environ.get("FDEDGE_SOAK_SECONDS") or default)


def drain(sock: socket.socket) -> threading.Thread:
    """A client that reads (and drops) everything the server sends until the socket closes."""
    def run() -> None:
        try:
            while sock.recv(1 << 20):
                pass
        except OSError:
            pass
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def stuck_sse_clients(port: int, n: int, last_event_id: int | None = None) -> list[socket.socket]:
    """SSE clients that connect and never read: a tiny receive buffer, nothing ever recv()d."""
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(("127.0.0.1", port))
        extra = f"Last-Event-ID: {last_event_id}\r\n" if last_event_id is not None else ""
        s.sendall(f"GET /events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n{extra}\r\n".encode())
        socks.append(s)
    return socks
