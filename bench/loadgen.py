"""Load generators: wrk (closed loop, maximum throughput) and an open-loop fixed-rate generator.

wrk keeps `connections` requests in flight and sends the next one when an answer arrives, so it
measures throughput, but its latencies hide queueing (coordinated omission). The fixed-rate
generator sends on a schedule whatever the server does and measures each latency from the
*scheduled* send time, so a stall shows up in the percentiles as it would for real sensors.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from bench.common import BATCH_START, TIME_PLACEHOLDER, BenchError, percentile, run_async

WRK_LUA = r"""
local f = assert(io.open(%(body)q, "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Connection"] = "keep-alive"

function done(summary, latency, requests)
  io.write(string.format(
    'WRKJSON {"duration_us": %%d, "requests": %%d, "bytes": %%d, "connect": %%d, "read": %%d, ' ..
    '"write": %%d, "status": %%d, "timeout": %%d, "p50_us": %%d, "p90_us": %%d, "p99_us": %%d, ' ..
    '"max_us": %%d, "mean_us": %%f}\n',
    summary.duration, summary.requests, summary.bytes, summary.errors.connect, summary.errors.read,
    summary.errors.write, summary.errors.status, summary.errors.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
"""


# Batches whose readings carry a fresh time on every request, as a sensor's uploads do. Sending one
# fixed body would store the same 1,000 times again and again: each batch would then scatter its
# index entries over the whole time index, and ingest would slow as the database grows, which no
# sensor does. The body file holds TIME_PLACEHOLDER where each time goes; times advance a second per
# reading from %(start)d (Unix seconds), continuing across requests.
ADVANCING_LUA = r"""
local pieces, n = {}, 0
local start = %(start)d
local clock = 0
local f = assert(io.open(%(body)q, "rb"))
local template = f:read("*a")
f:close()
local at = 1
while true do
  local i, j = template:find(%(mark)q, at, true)
  if not i then break end
  pieces[#pieces + 1] = template:sub(at, i - 1)
  at = j + 1
end
local tail = template:sub(at)
n = #pieces

request = function()
  local out = {}
  for k = 1, n do
    out[2 * k - 1] = pieces[k]
    out[2 * k] = os.date("!%%Y-%%m-%%d %%H:%%M:%%S", start + clock)
    clock = clock + 1
  end
  out[2 * n + 1] = tail
  return wrk.format(nil, nil, nil, table.concat(out))
end
"""


def wrk_path() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise BenchError("wrk is not installed: `sudo apt-get install wrk` (Debian/Ubuntu) or "
                         "`brew install wrk`; the HTTP and SSE sections need it as the load generator.")
    return path


def lua_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class Wrk:
    """Runs wrk against POST /send with a fixed body read from a file."""

    def __init__(self, workdir: Path, name: str, body: bytes, *, advancing_times: bool = False) -> None:
        """With `advancing_times`, `body` is a batch_body(..., placeholder=True) template."""
        self.binary = wrk_path()
        self.body_path = workdir / f"{name}.json"
        self.body_path.write_bytes(body)
        self.script = workdir / f"{name}.lua"
        script = WRK_LUA.replace("%(body)q", lua_string(str(self.body_path)))
        if advancing_times:
            if TIME_PLACEHOLDER.encode() not in body:
                raise BenchError(f"{name}: advancing times need {TIME_PLACEHOLDER} in the body")
            script += (ADVANCING_LUA.replace("%(body)q", lua_string(str(self.body_path)))
                       .replace("%(mark)q", lua_string(TIME_PLACEHOLDER))
                       .replace("%(start)d", str(int(BATCH_START.timestamp()))))
        self.script.write_text(script.replace("%%", "%"))
        self.body_bytes = len(body)

    def run(self, port: int, duration: float, connections: int = 16, threads: int = 1,
            path: str = "/send") -> dict[str, Any]:
        seconds = max(1, int(round(duration)))
        cmd = [self.binary, f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s",
               "-s", str(self.script), f"http://127.0.0.1:{port}{path}"]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
        match = re.search(r"^WRKJSON (\{.*\})$", proc.stdout, re.M)
        if proc.returncode != 0 or match is None:
            raise BenchError(f"wrk failed ({proc.returncode}): {proc.stdout[-1500:]} {proc.stderr[-1500:]}")
        raw = json.loads(match.group(1))
        seconds_run = raw["duration_us"] / 1e6
        errors = raw["connect"] + raw["read"] + raw["write"] + raw["status"] + raw["timeout"]
        return {
            "requests": raw["requests"],
            "seconds": round(seconds_run, 3),
            "rps": raw["requests"] / seconds_run if seconds_run else 0.0,
            "p50_ms": raw["p50_us"] / 1000,
            "p90_ms": raw["p90_us"] / 1000,
            "p99_ms": raw["p99_us"] / 1000,
            "max_ms": raw["max_us"] / 1000,
            "errors": errors,
            "non_2xx": raw["status"],
        }

    def warm(self, port: int, seconds: float, connections: int = 16) -> None:
        if seconds > 0:
            self.run(port, seconds, connections)


# --------------------------------------------------------------------------- open loop

def _request(port: int, body: bytes, path: str = "/send") -> bytes:
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


async def _open_loop(port: int, body: bytes, rate: float, duration: float, connections: int,
                     discard: float, stop: threading.Event | None = None) -> dict[str, Any]:
    request = _request(port, body)
    total = int(rate * duration)
    interval = 1.0 / rate
    queue: asyncio.Queue[float | None] = asyncio.Queue()
    latencies: list[float] = []
    lags: list[float] = []
    statuses: dict[int, int] = {}
    errors = 0
    start = time.perf_counter() + 0.2
    keep_after = start + discard

    async def worker() -> None:
        nonlocal errors
        connection: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        while True:
            scheduled = await queue.get()
            if scheduled is None:
                break
            try:
                if connection is None:
                    connection = await asyncio.open_connection("127.0.0.1", port)
                reader, writer = connection
                sent = time.perf_counter()
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                status = int(head[9:12])
                match = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
                if match is None:
                    raise ValueError("response without Content-Length")
                await reader.readexactly(int(match.group(1)))
                done = time.perf_counter()
            except (OSError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                errors += 1
                if connection is not None:
                    connection[1].close()
                connection = None
                continue
            statuses[status] = statuses.get(status, 0) + 1
            if scheduled >= keep_after:
                latencies.append(done - scheduled)
                lags.append(sent - scheduled)
        if connection is not None:
            connection[1].close()

    workers = [asyncio.create_task(worker()) for _ in range(connections)]
    cpu0 = time.process_time()
    i = 0
    while i < total and not (stop is not None and stop.is_set()):
        now = time.perf_counter()
        while i < total and start + i * interval <= now:
            queue.put_nowait(start + i * interval)
            i += 1
        if i < total:
            await asyncio.sleep(max(0.0, start + i * interval - time.perf_counter()))
    for _ in workers:
        queue.put_nowait(None)
    await asyncio.gather(*workers)
    wall = time.perf_counter() - start
    cpu = time.process_time() - cpu0
    latencies.sort()
    lags.sort()
    return {
        "rate": rate,
        "scheduled": i,
        "completed": sum(statuses.values()),
        "achieved_rps": sum(statuses.values()) / wall if wall else 0.0,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "errors": errors,
        "p50_ms": _ms(percentile(latencies, 50)),
        "p90_ms": _ms(percentile(latencies, 90)),
        "p99_ms": _ms(percentile(latencies, 99)),
        "p999_ms": _ms(percentile(latencies, 99.9)),
        "max_ms": _ms(latencies[-1] if latencies else None),
        # how late the generator itself sent (dispatch jitter + waiting for a free connection)
        "send_lag_p50_ms": _ms(percentile(lags, 50)),
        "send_lag_p99_ms": _ms(percentile(lags, 99)),
        "generator_cpu_fraction": cpu / wall if wall else None,
        "samples": len(latencies),
    }


def open_loop(port: int, body: bytes, rate: float, duration: float, connections: int = 64,
              discard: float = 0.5, stop: threading.Event | None = None) -> dict[str, Any]:
    """Send `rate` requests/s for `duration` s (or until `stop` is set) on up to `connections`
    keep-alive connections.

    Latency is measured from each request's scheduled time, so time spent waiting for a free
    connection or for the server counts. Requests scheduled in the first `discard` seconds
    are sent but not recorded (connection set-up, warm-up).
    """
    return run_async(_open_loop(port, body, rate, duration, connections, discard, stop))


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000
