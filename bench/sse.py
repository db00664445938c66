"""Section 4: does a room full of dashboards slow ingest down?

Single-reading ingest (wrk, as in section 2) with and without `clients` connected GET /events
readers, interleaved. The readers live in a separate process (`python -m bench.sse`): real
HTTP clients on their own sockets that read and count every event, so the server pays the
full price of serialising and writing the stream.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

from bench.common import REPO, BenchError, Plan, median, ratio, run_async, single_body
from bench.loadgen import Wrk
from bench.http import _with_cpu
from bench.resources import _stored
from bench.servers import Server, child_env

PATTERN = b"event: reading"


# --------------------------------------------------------------------------- reader process

async def _readers(port: int, clients: int) -> dict[str, Any]:
    counts = [0] * clients
    received = [0] * clients
    ready = 0
    failures: list[str] = []
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    all_ready = asyncio.Event()

    async def client(i: int) -> None:
        nonlocal ready
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError as exc:
            failures.append(f"connect: {exc}")
            return
        writer.write(f"GET /events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: text/event-stream\r\n\r\n".encode())
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            if head[9:12] != b"200":
                failures.append(head[:60].decode(errors="replace"))
                return
            first = True
            tail = b""
            while True:
                chunk = await reader.read(65536)
                if not chunk:
                    break
                received[i] += len(chunk)
                data = tail + chunk
                counts[i] += data.count(PATTERN)
                tail = data[-(len(PATTERN) - 1):]
                if first:  # the `hello` event: this client is subscribed
                    first = False
                    ready += 1
                    if ready == clients:
                        all_ready.set()
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            failures.append(f"read: {exc!r}")
        finally:
            writer.close()

    tasks = [asyncio.create_task(client(i)) for i in range(clients)]
    waiter = asyncio.create_task(all_ready.wait())
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait({waiter, stopper}, timeout=60, return_when=asyncio.FIRST_COMPLETED)
    print(json.dumps({"ready": ready}), flush=True)
    cpu0, t0 = time.process_time(), time.perf_counter()
    await stop.wait()
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - t0
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return {"clients": clients, "ready": ready, "events": counts, "bytes": sum(received),
            "failures": failures[:5], "failed": len(failures),
            "cpu_fraction": cpu / wall if wall else None}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.sse", description="SSE readers for the benchmark")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--clients", type=int, default=100)
    args = p.parse_args(argv)
    result = run_async(_readers(args.port, args.clients))
    print(json.dumps(result), flush=True)
    return 0


class Readers:
    """The reader process: started, waited for until every client is subscribed, stopped."""

    def __init__(self, port: int, clients: int) -> None:
        self.port, self.clients = port, clients
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> "Readers":
        self.proc = subprocess.Popen([sys.executable, "-m", "bench.sse", "--port", str(self.port),
                                      "--clients", str(self.clients)], cwd=REPO, env=child_env(),
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], 90)
        line = self.proc.stdout.readline() if ready else ""
        if not line.startswith("{"):
            self.stop()
            raise BenchError(f"SSE readers did not start: {line!r} {self.proc.stderr.read()[-2000:] if self.proc.stderr else ''}")
        if json.loads(line)["ready"] != self.clients:
            self.stop()
            raise BenchError(f"only {json.loads(line)['ready']} of {self.clients} SSE clients subscribed")
        return self

    def stop(self) -> dict[str, Any]:
        if self.proc is None:
            return {}
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            out, err = self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
        lines = [line for line in out.splitlines() if line.startswith("{")]
        self.proc = None
        return json.loads(lines[-1]) if len(lines) >= 1 else {"error": err[-1000:]}

    def __exit__(self, *exc: Any) -> None:
        if self.proc is not None:
            self.stop()


# --------------------------------------------------------------------------- section

def run(plan: Plan, root: Path, model_dir: Path, readings: list[dict[str, Any]],
        log: Callable[[str], None] = print) -> dict[str, Any]:
    body = single_body(readings)
    server = Server("edge", root, model_dir=model_dir, name="edge-sse").start()
    without: list[dict[str, Any]] = []
    with_: list[dict[str, Any]] = []
    try:
        wrk = Wrk(root, "sse-single", body)
        wrk.warm(server.port, plan.warmup, plan.connections)
        for r in range(plan.rounds):
            order = ("without", "with") if r % 2 == 0 else ("with", "without")
            for mode in order:
                if mode == "without":
                    without.append(_with_cpu(server, lambda: wrk.run(server.port, plan.duration, plan.connections)))
                    continue
                with Readers(server.port, plan.sse_clients) as readers:
                    before = _stored(server)
                    result = _with_cpu(server, lambda: wrk.run(server.port, plan.duration, plan.connections))
                    time.sleep(0.5)  # the last events are still on their way
                    stored = _stored(server) - before
                    seen = readers.stop()
                events = seen.get("events") or [0]
                result["clients"] = seen.get("clients")
                result["clients_failed"] = seen.get("failed")
                result["events_min"] = min(events)
                result["events_max"] = max(events)
                result["stored"] = stored
                # every client must have seen every reading stored while it was connected
                result["delivered_fraction"] = min(events) / stored if stored else None
                result["reader_cpu_fraction"] = seen.get("cpu_fraction")
                with_.append(result)
                log(f"  round {r + 1}/{plan.rounds}: {result['rps']:,.0f} req/s with {plan.sse_clients} SSE clients, "
                    f"{without[-1]['rps'] if without else 0:,.0f} without")
    finally:
        server.stop()
    rps_without, rps_with = median(x["rps"] for x in without), median(x["rps"] for x in with_)
    slowdown = None if not rps_without or rps_with is None else 1 - rps_with / rps_without
    return {
        "clients": plan.sse_clients,
        "without": {"rps": rps_without, "p99_ms": median(x["p99_ms"] for x in without),
                    "server_cpu_us_per_request": median(x["server_cpu_us_per_request"] for x in without),
                    "rounds": without},
        "with": {"rps": rps_with, "p99_ms": median(x["p99_ms"] for x in with_),
                 "server_cpu_us_per_request": median(x["server_cpu_us_per_request"] for x in with_),
                 "reader_cpu_fraction": median(x["reader_cpu_fraction"] for x in with_),
                 "delivered_fraction": min((x["delivered_fraction"] or 0) for x in with_) if with_ else None,
                 "rounds": with_},
        "ratio": ratio(rps_with, rps_without),
        "slowdown": slowdown,
    }


if __name__ == "__main__":
    sys.exit(main())
