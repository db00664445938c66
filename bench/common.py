"""Shared helpers: machine description, statistics, request bodies, the run's settings."""

from __future__ import annotations

import csv
import json
import math
import os
import platform
import socket
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DEFAULT_MODEL_DIR = REPO / "models" / "default"
RESULTS_DIR = REPO / "bench" / "results"
DURABLE_LOG = "BENCH_DURABLE_LOG"  # env: the file bench/bare_app.py's `durable` appends to (servers.py sets it)


class BenchError(RuntimeError):
    """A problem that stops the run, with a message meant for the person running it."""


@dataclass(frozen=True)
class Plan:
    """How long and how often each measurement runs (full run vs --quick)."""

    quick: bool
    rounds: int  # A/B rounds, interleaved
    duration: float  # seconds per closed-loop wrk measurement
    warmup: float  # seconds of wrk warm-up before each measurement
    rate_duration: float  # seconds per fixed-rate measurement
    rate: int  # requests/s for the fixed-rate latency
    connections: int  # wrk connections
    batch_rows: int  # readings per batch request
    stored_readings: int  # readings stored before measuring RSS and disk
    startups: int  # cold starts timed
    sse_clients: int

    @classmethod
    def make(cls, quick: bool, rounds: int | None = None, duration: float | None = None) -> Plan:
        if quick:
            plan = cls(quick=True, rounds=1, duration=1.0, warmup=0.3, rate_duration=1.5, rate=1000,
                       connections=16, batch_rows=1000, stored_readings=20_000, startups=1, sse_clients=100)
        else:
            plan = cls(quick=False, rounds=3, duration=4.0, warmup=1.0, rate_duration=4.0, rate=1000,
                       connections=16, batch_rows=1000, stored_readings=100_000, startups=3, sse_clients=100)
        changes: dict[str, Any] = {}
        if rounds:
            changes["rounds"] = rounds
        if duration:
            changes["duration"] = duration
            changes["rate_duration"] = duration
        return cls(**{**plan.__dict__, **changes})


# --------------------------------------------------------------------------- statistics

def median(values: Iterable[float | None]) -> float | None:
    clean = [v for v in values if v is not None]
    return statistics.median(clean) if clean else None


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def percentile(sorted_values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile of an already sorted sequence."""
    if not sorted_values:
        return None
    k = max(0, min(len(sorted_values) - 1, math.ceil(p / 100 * len(sorted_values)) - 1))
    return sorted_values[k]


# --------------------------------------------------------------------------- machine

def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _filesystem(path: Path) -> str | None:
    """The filesystem type holding `path` (fsync costs nothing on tmpfs, which would flatter --sync full)."""
    try:
        best, fstype = "", None
        target = str(path.resolve())
        for line in Path("/proc/mounts").read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3 and target.startswith(parts[1]) and len(parts[1]) >= len(best):
                best, fstype = parts[1], parts[2]
        return fstype
    except OSError:
        return None


def loadavg() -> list[float] | None:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return None


def cpu_times() -> list[int] | None:
    """The aggregate `cpu` line of /proc/stat (user nice system idle iowait irq softirq steal ...)."""
    try:
        return [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return None


def cpu_share(before: list[int] | None, after: list[int] | None) -> dict[str, float] | None:
    """Where the machine's CPU time went between two cpu_times() snapshots, as fractions.

    `steal` is time the hypervisor gave to other guests: on a shared VM it is the noise."""
    if not before or not after:
        return None
    delta = [b - a for a, b in zip(before, after, strict=True)]
    total = sum(delta[:8]) or 1
    names = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
    return {name: round(delta[i] / total, 4) for i, name in enumerate(names) if i < len(delta)}


def machine(data_root: Path) -> dict[str, Any]:
    info: dict[str, Any] = {
        "cpu": _cpu_model(),
        "arch": platform.machine(),
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "system": f"{platform.system()} {platform.release()}",
        "data_filesystem": _filesystem(data_root),
        "loadavg_start": loadavg(),
    }
    versions: dict[str, str] = {}
    for name in ("onnxruntime", "numpy", "starlette", "uvicorn", "uvloop", "httptools", "sse_starlette"):
        try:
            from importlib.metadata import version
            versions[name] = version(name.replace("_", "-"))
        except Exception:  # a missing package is just not listed
            continue
    info["versions"] = versions
    return info


# --------------------------------------------------------------------------- ports

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------- bodies

def fdrest_dir() -> Path | None:
    candidates = [os.environ.get("FDREST_DIR"), REPO.parent.parent / "shared" / "fdrest",
                  REPO.parent / "shared" / "fdrest"]
    for c in candidates:
        if c and (Path(c) / "data.csv").is_file():
            return Path(c)
    return None


def sample_readings() -> tuple[list[dict[str, Any]], str]:
    """FD-REST readings as a sensor sends them: data.csv rows (Time + 35 features), else simulated."""
    from edge.fdrest import FEATURES

    directory = fdrest_dir()
    if directory is not None:
        with open(directory / "data.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        readings = []
        for row in rows:
            body: dict[str, Any] = {"Time": row["Time"]}
            body.update({name: float(row[name]) for name in FEATURES})
            readings.append(body)
        if readings:
            return readings, str(directory / "data.csv")
    import random

    rng = random.Random(0)
    start = datetime(2023, 11, 6, 15, tzinfo=UTC)
    readings = []
    for i in range(8):
        body = {"Time": (start + timedelta(hours=3 * i)).strftime("%Y-%m-%d %H:%M:%S")}
        body.update({name: round(rng.gauss(0, 1), 4) for name in FEATURES})
        readings.append(body)
    return readings, "simulated (FD-REST's data.csv not found; set FDREST_DIR)"


def single_body(readings: list[dict[str, Any]]) -> bytes:
    return json.dumps(readings[0]).encode()


BATCH_START = datetime(2024, 1, 1, tzinfo=UTC)
TIME_PLACEHOLDER = "@TIME@"


def batch_body(readings: list[dict[str, Any]], rows: int, first: int = 0, *, placeholder: bool = False) -> bytes:
    """`rows` readings cycling through the samples, one second apart, the first at BATCH_START +
    `first` seconds: consecutive batches continue each other's clock, as a sensor's uploads do.
    With `placeholder`, every time is TIME_PLACEHOLDER for the load generator to fill in."""
    out = []
    for i in range(rows):
        body = dict(readings[i % len(readings)])
        body["Time"] = (TIME_PLACEHOLDER if placeholder
                        else (BATCH_START + timedelta(seconds=first + i)).strftime("%Y-%m-%d %H:%M:%S"))
        out.append(body)
    return json.dumps(out).encode()


def run_async(coro: Any) -> Any:
    """asyncio.run on uvloop when installed (asyncio.Runner's loop_factory is 3.11+)."""
    import asyncio
    try:
        import uvloop
        loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    except ImportError:
        loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
