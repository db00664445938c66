"""Helpers for the tests that run `fdedge simulate` (the virtual sensor) against the real server:
tests/simulator/test_sensor.py and tests/reliability/test_reliability_sensor.py."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from datetime import datetime
from pathlib import Path

from edge.fdrest import COLUMNS
from simulator.dataset import read_csv, write_csv
from tests.harness import REPO, Server

FAST = ["--max-backoff", "0.3", "--progress", "0.5", "--timeout", "5"]
ENV = {k: v for k, v in os.environ.items() if k not in {"FDEDGE_URL", "FDEDGE_TOKEN"}}


def sensor_cmd(url: str, buffer: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "edge", "simulate", "--url", url, "--buffer", str(buffer), *FAST, *args]


def run_sensor(url: str, buffer: Path, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(sensor_cmd(url, buffer, *args), capture_output=True, text=True, timeout=timeout,
                          cwd=REPO, env=ENV)


def start_sensor(url: str, buffer: Path, *args: str, log: Path) -> subprocess.Popen:
    return subprocess.Popen(sensor_cmd(url, buffer, *args), stdout=subprocess.DEVNULL,
                            stderr=log.open("w"), cwd=REPO, env=ENV)


def when(text: str) -> datetime:
    return datetime.fromisoformat(text)


def stored(server: Server, machine: str | None = None) -> list[tuple]:
    """(time, *features) of every stored reading, in id order."""
    query = f"SELECT time, {', '.join(COLUMNS)} FROM sensor_data"
    params: tuple = ()
    if machine is not None:
        query, params = query + " WHERE machine = ?", (machine,)
    with sqlite3.connect(server.data_dir / "sensor_data.db") as conn:
        rows = conn.execute(query + " ORDER BY id", params).fetchall()
    return [(when(r[0]), *r[1:]) for r in rows]


def stored_count(server: Server) -> int:
    try:
        with sqlite3.connect(server.data_dir / "sensor_data.db", timeout=5) as conn:
            return conn.execute("SELECT count(*) FROM sensor_data").fetchone()[0]
    except sqlite3.Error:
        return 0


def csv_rows(path: Path) -> list[tuple]:
    times, x, _ = read_csv(path)
    return [(when(t), *row) for t, row in zip(times, x.tolist(), strict=True)]


def make_csv(path: Path, rows: int, seed: int = 0, start: str = "2024-01-01 00:00:00") -> list[tuple]:
    write_csv(path, rows, seed=seed, start=datetime.fromisoformat(start + "+00:00"), interval_s=1.0)
    return csv_rows(path)


def finish(proc: subprocess.Popen, log: Path, timeout: float = 30) -> str:
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError(f"the sensor did not finish: {log.read_text()[-2000:]}") from None
    text = log.read_text()
    assert proc.returncode == 0, text[-2000:]
    return text
