"""Clients that ask for a lot and then stop reading: an export must not pin the WAL, a stalled
response is cut off after --send-timeout, and /history's limit is bounded."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

from tests.harness import reading
from tests.reliability_helpers import get, post, wait_for

REPORT_SECTION = "hostile"
MB = 1024 * 1024


def _stalled_get(port: int, path: str) -> socket.socket:
    """Ask, read the first few KiB, then never read again (a tiny receive buffer)."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", port))
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    s.settimeout(10)
    assert s.recv(4096).startswith(b"HTTP/1.1 200"), path
    return s


def _sockets(pid: int) -> int:
    """Open sockets of `pid`; a descriptor closed between listing and reading it is not one."""
    count = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            count += os.readlink(fd).startswith("socket:")
        except FileNotFoundError:
            continue
    return count


def _batch(n: int, seed: int, day: int) -> bytes:
    return json.dumps([reading(seed * n + i, Time=f"2024-01-{day:02d} {i // 3600 % 24:02d}:{i // 60 % 60:02d}:"
                                                  f"{i % 60:02d}") for i in range(n)]).encode()


def test_an_export_that_stops_being_read_does_not_pin_the_wal(server_factory, linear_model, report):
    server = server_factory(linear_model[0], args=["--send-timeout", "120"]).start()
    for k in range(20):  # 20,000 readings to export, far more than the socket buffers hold
        assert post(server.port, _batch(1000, k, 1)).status == 200
    wal = server.data_dir / "sensor_data.db-wal"
    stalled = _stalled_get(server.port, "/generate_csv?start=2024-01-01&end=2024-01-01")
    try:
        time.sleep(0.5)
        for k in range(40):  # 40,000 more while the export is stalled
            assert post(server.port, _batch(1000, 100 + k, 2)).status == 200
        size = wal.stat().st_size
    finally:
        stalled.close()
    assert size < 12 * MB, f"the WAL grew to {size / MB:.1f} MB behind a stalled export"
    report.put("hostile", "export_snapshot", f"an export stalled by its client while 40,000 readings came in: "
                                             f"WAL {size / MB:.1f} MB (checkpoints not pinned)")


def test_a_response_nobody_reads_is_cut_off_after_the_send_timeout(server_factory, linear_model, report):
    server = server_factory(linear_model[0], args=["--send-timeout", "1"]).start()
    for k in range(20):
        assert post(server.port, _batch(1000, k, 1)).status == 200
    sockets = _sockets(server.proc.pid)
    stalled = [_stalled_get(server.port, "/generate_csv?start=2024-01-01&end=2024-01-01") for _ in range(3)]
    try:
        # dropped without the client reading a byte more: a close would wait for it to drain
        wait_for(lambda: _sockets(server.proc.pid) <= sockets, 20, "the server to drop the stalled connections")
        def closed(s: socket.socket) -> bool:
            s.settimeout(0.2)
            try:
                while data := s.recv(1 << 20):
                    del data
                return True  # EOF: the server closed it
            except TimeoutError:
                return False
            except ConnectionResetError:
                return True
        time.sleep(2.5)
        wait_for(lambda: all(closed(s) for s in stalled), 20, "the stalled responses to be cut off")
    finally:
        for s in stalled:
            s.close()
    log = server.read_log()
    assert "Traceback" not in log
    assert log.count("stopped reading during GET /generate_csv (TimeoutError)") == 3, log
    report.put("hostile", "send_timeout", "3 exports of 20,000 rows whose clients stopped reading: connections "
                                          "dropped after --send-timeout, one log line each")


def test_history_limit_is_bounded(server_factory, linear_model):
    server = server_factory(linear_model[0]).start()
    r = get(server.port, "/history?limit=1000000&metric=temperature")
    assert r.status == 400 and r.json()["field"] == "limit", r.text
    assert get(server.port, "/history?limit=100000&metric=temperature").status == 200


def test_the_wal_counts_toward_the_size_cap(server_factory, linear_model, report):
    """Another process holding a read transaction (a backup tool, a second reader) keeps the WAL from
    being checkpointed: database plus WAL stay within --max-db-mb, and ingest says why it stops."""
    import sqlite3
    server = server_factory(linear_model[0], args=["--max-db-mb", "8"]).start()
    assert post(server.port, _batch(1000, 0, 1)).status == 200
    reader = sqlite3.connect(server.data_dir / "sensor_data.db", isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM sensor_data").fetchone()  # holds its snapshot from now on
    try:
        refused = None
        for k in range(1, 60):
            r = post(server.port, _batch(500, k, 2))
            if r.status != 200:
                refused = r
                break
        assert refused is not None and refused.status == 503, "the WAL grew past the cap"
        assert refused.json()["reason"] == "disk_full" and "WAL" in refused.json()["message"]
        db, wal = (server.data_dir / name for name in ("sensor_data.db", "sensor_data.db-wal"))
        size = db.stat().st_size + wal.stat().st_size
        assert size <= 9 * MB, size  # the cap, plus at most the group being checked
        ready = get(server.port, "/readyz")
        assert ready.status == 503 and "WAL" in " ".join(ready.json()["problems"])
    finally:
        reader.execute("COMMIT")
        reader.close()
    wait_for(lambda: post(server.port, _batch(10, 999, 3)).status == 200, 10, "ingest to resume")
    report.put("hostile", "wal_cap", f"a reader pinning the WAL under --max-db-mb 8: ingest refused 503 `disk_full` "
                                     f"at {size / MB:.1f} MB (database + WAL), resumed once it let go")
