"""Section 4: does a room full of dashboards slow ingest down?

Single-reading ingest (wrk, as in section 2) without SSE readers, with `clients` readers of the
dashboard's event shape (GET /events?shape=arrays) and with `clients` readers of the default shape
(plain GET /events, reading objects, as scripts use it), and with the floor (below): the four
interleaved in every round, in a rotated order. The readers live in a separate process (`python -m
bench.sse`): real HTTP clients on their own sockets that read and count every event, so the server
pays the full price of serialising and writing the stream. The target is judged on the dashboard's
shape.

On one machine the readers, wrk and the server share the cores, and moving the stream's bytes
costs both ends CPU whoever sends them. The floor measures that part alone: the same readers read
the same frames from a minimal pusher process while FD-Edge ingests with no SSE client.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self

from bench.common import REPO, BenchError, Plan, median, ratio, run_async, single_body
from bench.http import _rotate, _with_cpu
from bench.loadgen import Wrk
from bench.resources import _stored
from bench.servers import Server, child_env, http_get

PATTERN = b"event: reading"
# The readers share the two cores with the server and wrk, so this section is the noisiest: it
# takes more rounds than the others (each costs ~14 s).
SSE_ROUNDS = 5
DASHBOARD_SHAPE = "arrays"  # what web/static/live.js asks for: the target is judged on it
SHAPES = (DASHBOARD_SHAPE, "objects")
# The floor: the same readers get the dashboard's frames for every reading FD-Edge stores, but from
# a minimal pusher process (`_push`) while FD-Edge itself has no SSE client. Its slowdown is what
# moving those bytes costs on this machine, whoever sends them; FD-Edge's own cost is the rest.
FLOOR = "floor"


# --------------------------------------------------------------------------- reader process

async def _readers(port: int, clients: int, shape: str = "objects") -> dict[str, Any]:
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
        path = "/events" if shape == "objects" else f"/events?shape={shape}"  # objects: the default, as scripts ask
        writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: text/event-stream\r\n\r\n".encode())
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
    return {"clients": clients, "shape": shape, "ready": ready, "events": counts, "bytes": sum(received),
            "failures": failures[:5], "failed": len(failures),
            "cpu_fraction": cpu / wall if wall else None}


# --------------------------------------------------------------------------- pusher process

def _newest(port: int) -> dict[str, Any] | None:
    status, body = http_get(port, "/api/latest?limit=1", timeout=30)
    if status != 200:
        raise BenchError(f"GET /api/latest answered {status}: {body[:200]!r}")
    readings = json.loads(body)["readings"]
    return readings[0] if readings else None


def _push(source_port: int, clients: int, shape: str) -> dict[str, Any]:
    """The floor: what moving the stream's bytes costs, whoever sends them.

    Listens on a free port for `clients` readers, then every coalescing tick sends each of them
    one frame per reading that FD-Edge (at `source_port`) stored since the last tick, with plain
    blocking sockets: no HTTP framework, no per-reading encoding, one sendall per reader and
    tick. The frame is FD-Edge's own, byte for byte, for its newest reading. How many readings
    were stored comes from FD-Edge's GET /api/latest, once per tick (ten small reads a second)."""
    from edge.fdrest import FAULTS, FEATURES
    from edge.scoring.quality import from_json
    from edge.stream.subscriber import COALESCE_SECONDS
    from edge.stream.wire import frame, reading_frame

    newest = _newest(source_port)
    if newest is None:
        raise BenchError("the server under test has no reading to copy a frame from")
    wire = reading_frame(shape, newest["id"], newest["time"], newest["machine"],
                         [newest["features"][k] for k in FEATURES], [newest["faults"][k] for k in FAULTS],
                         from_json(newest["quality"]))
    listener = socket.create_server(("127.0.0.1", 0), backlog=clients)
    print(json.dumps({"port": listener.getsockname()[1]}), flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    readers: list[socket.socket] = []
    listener.settimeout(60)
    while len(readers) < clients:
        conn, _ = listener.accept()
        conn.recv(65536)  # the GET; whatever it asks, it gets the stream
        conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-store\r\n\r\n"
                     + frame("hello", b"{}"))
        readers.append(conn)
    last, pushed = newest["id"], 0
    cpu0 = time.process_time()
    while not stop.wait(COALESCE_SECONDS):
        top = _newest(source_port)
        count = (top["id"] if top else last) - last
        if count <= 0:
            continue
        last += count
        chunk = wire * count
        for conn in readers:
            conn.sendall(chunk)
        pushed += count
    for conn in readers:
        conn.close()
    cpu = time.process_time() - cpu0
    return {"clients": len(readers), "shape": shape, "pushed": pushed, "frame_bytes": len(wire),
            "cpu_us_per_reading": cpu / pushed * 1e6 if pushed else None}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.sse", description="SSE readers (and the floor's pusher) "
                                "for the benchmark")
    p.add_argument("--port", type=int, help="readers: the server to read /events from")
    p.add_argument("--push-from", type=int, metavar="PORT",
                   help="be the pusher instead: send the readings FD-Edge at PORT stores to readers connecting "
                        "to a free port")
    p.add_argument("--clients", type=int, default=100)
    p.add_argument("--shape", choices=("objects", "arrays"), default="objects",
                   help="event shape: objects (plain /events, the default) or arrays (the dashboard's)")
    args = p.parse_args(argv)
    if args.push_from:
        result = _push(args.push_from, args.clients, args.shape)
    elif args.port:
        result = run_async(_readers(args.port, args.clients, args.shape))
    else:
        p.error("give --port (readers) or --push-from (pusher)")
    print(json.dumps(result), flush=True)
    return 0


class Child:
    """A `python -m bench.sse` process: started, its first JSON line awaited, stopped with SIGTERM,
    its last JSON line returned."""

    def __init__(self, args: list[str], what: str) -> None:
        self.args, self.what = args, what
        self.proc: subprocess.Popen | None = None
        self.first: dict[str, Any] = {}

    def __enter__(self) -> Self:
        self.proc = subprocess.Popen([sys.executable, "-m", "bench.sse", *self.args], cwd=REPO, env=child_env(),
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], 90)
        line = self.proc.stdout.readline() if ready else ""
        if not line.startswith("{"):
            self.stop()
            raise BenchError(f"{self.what} did not start: {line!r} "
                             f"{self.proc.stderr.read()[-2000:] if self.proc and self.proc.stderr else ''}")
        self.first = json.loads(line)
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


class Readers(Child):
    """The reader process, waited for until every client is subscribed."""

    def __init__(self, port: int, clients: int, shape: str = "objects") -> None:
        super().__init__(["--port", str(port), "--clients", str(clients), "--shape", shape], "SSE readers")
        self.clients = clients

    def __enter__(self) -> Readers:
        super().__enter__()
        if self.first["ready"] != self.clients:
            self.stop()
            raise BenchError(f"only {self.first['ready']} of {self.clients} SSE clients subscribed")
        return self


class Pusher(Child):
    """The floor's pusher process (`_push`); `port` is where its readers connect."""

    def __init__(self, source_port: int, clients: int, shape: str) -> None:
        super().__init__(["--push-from", str(source_port), "--clients", str(clients), "--shape", shape], "SSE pusher")

    @property
    def port(self) -> int:
        return int(self.first["port"])


# --------------------------------------------------------------------------- section

def _with_readers(server: Server, plan: Plan, wrk: Wrk, shape: str, floor: bool = False) -> dict[str, Any]:
    """Ingest with readers of `shape`; `floor`: they read from the pusher instead of FD-Edge."""
    with contextlib.ExitStack() as stack:
        pusher = stack.enter_context(Pusher(server.port, plan.sse_clients, shape)) if floor else None
        readers = stack.enter_context(Readers(pusher.port if pusher else server.port, plan.sse_clients, shape))
        before = _stored(server)
        result = _with_cpu(server, lambda: wrk.run(server.port, plan.duration, plan.connections))
        time.sleep(0.5)  # the last events are still on their way
        stored = _stored(server) - before
        if pusher is not None:
            pushed = pusher.stop()
            result["pushed"] = pushed.get("pushed")
            result["sender_cpu_us_per_reading"] = pushed.get("cpu_us_per_reading")
        seen = readers.stop()
    events = seen.get("events") or [0]
    result["shape"] = shape
    result["clients"] = seen.get("clients")
    result["clients_failed"] = seen.get("failed")
    result["events_min"] = min(events)
    result["events_max"] = max(events)
    result["stored"] = stored
    result["bytes_per_client_per_reading"] = (seen["bytes"] / len(events) / stored
                                              if stored and seen.get("bytes") else None)
    # every client must have seen every reading stored while it was connected
    result["delivered_fraction"] = min(events) / stored if stored else None
    result["reader_cpu_fraction"] = seen.get("cpu_fraction")
    return result


def _summary(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    return {"rps": median(x["rps"] for x in rounds), "p99_ms": median(x["p99_ms"] for x in rounds),
            "server_cpu_us_per_request": median(x["server_cpu_us_per_request"] for x in rounds),
            "reader_cpu_fraction": median(x["reader_cpu_fraction"] for x in rounds),
            "bytes_per_client_per_reading": median(x["bytes_per_client_per_reading"] for x in rounds),
            "delivered_fraction": min((x["delivered_fraction"] or 0) for x in rounds) if rounds else None,
            "rounds": rounds}


def run(plan: Plan, root: Path, model_dir: Path, readings: list[dict[str, Any]],
        log: Callable[[str], None] = print) -> dict[str, Any]:
    body = single_body(readings)
    server = Server("edge", root, model_dir=model_dir, name="edge-sse").start()
    modes = ["without", *SHAPES, FLOOR]
    without: list[dict[str, Any]] = []
    with_: dict[str, list[dict[str, Any]]] = {mode: [] for mode in (*SHAPES, FLOOR)}
    try:
        wrk = Wrk(root, "sse-single", body)
        wrk.warm(server.port, plan.warmup, plan.connections)
        rounds = plan.rounds if plan.quick else max(plan.rounds, SSE_ROUNDS)
        for r in range(rounds):
            for mode in _rotate(modes, r):  # each mode runs first, second, third and last
                if mode == "without":
                    without.append(_with_cpu(server, lambda: wrk.run(server.port, plan.duration, plan.connections)))
                elif mode == FLOOR:
                    with_[mode].append(_with_readers(server, plan, wrk, DASHBOARD_SHAPE, floor=True))
                else:
                    with_[mode].append(_with_readers(server, plan, wrk, mode))
            log(f"  round {r + 1}/{rounds}: {without[-1]['rps']:,.0f} req/s without SSE clients, "
                + ", ".join(f"{with_[s][-1]['rps']:,.0f} with {plan.sse_clients} {s} clients" for s in SHAPES)
                + f", {with_[FLOOR][-1]['rps']:,.0f} with the floor's pusher")
    finally:
        server.stop()
    rps_without = median(x["rps"] for x in without)
    out: dict[str, Any] = {
        "clients": plan.sse_clients,
        "rounds": len(without),
        "shape": DASHBOARD_SHAPE,
        "without": {"rps": rps_without, "p99_ms": median(x["p99_ms"] for x in without),
                    "server_cpu_us_per_request": median(x["server_cpu_us_per_request"] for x in without),
                    "rounds": without},
    }
    for mode in (*SHAPES, FLOOR):
        summary = _summary(with_[mode])
        if mode == FLOOR:
            summary["sender_cpu_us_per_reading"] = median(x["sender_cpu_us_per_reading"] for x in with_[mode])
        rps = summary["rps"]
        # "with", "ratio" and "slowdown" are the dashboard's shape (the target); the default
        # shape's and the floor's figures sit beside them with a suffix.
        suffix = "" if mode == DASHBOARD_SHAPE else f"_{mode}"
        out[f"with{suffix}"] = summary
        out[f"ratio{suffix}"] = ratio(rps, rps_without)
        out[f"slowdown{suffix}"] = None if not rps_without or rps is None else 1 - rps / rps_without
    return out


if __name__ == "__main__":
    sys.exit(main())
