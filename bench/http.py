"""Section 2: HTTP ingest. FD-Edge's POST /send vs the bare Starlette yardstick, interleaved.

Four servers run side by side for the whole section (bench/bare_app.py's bare and durable apps,
`fdedge serve --sync full`, `fdedge serve --sync normal`); each round measures every one of them,
in a rotated order, so slow phases of the shared machine hit all of them alike. Figures are medians
over rounds and the headline is the ratio of medians FD-Edge / bare. The durable bare app (append
+ group fdatasync, nothing else) runs the closed-loop single-reading loads only: its ratio to bare
is what durability alone costs, the ceiling for `--sync full`.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from bench.common import BenchError, Plan, batch_body, median, ratio, single_body
from bench.loadgen import Wrk, open_loop
from bench.servers import RUNTIME_PYTHON, Server, child_env, http_post

BATCH_CONNECTIONS = 4
RATE_CONNECTIONS = 64
# Single readings again with more senders in flight: group commit shares one commit (and, with
# sync full, one fdatasync) among the requests waiting together, so its cost per request falls
# as senders are added. 16 connections, the headline, is the less favourable of the two.
CROWD_CONNECTIONS = 64


def _check(server: Server, body: bytes, rows: int) -> None:
    status, answer = http_post(server.port, "/send", body)
    if status != 200:
        raise BenchError(f"{server.name}: POST /send answered {status}: {answer[:300]!r}")
    if server.kind == "edge":
        faults = json.loads(answer)
        if len(faults) != rows:
            raise BenchError(f"{server.name}: {rows} readings sent, {len(faults)} fault rows returned")


def _with_cpu(server: Server, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run a measurement and add the server's CPU time per completed request."""
    cpu0 = server.cpu_seconds()
    result = fn()
    cpu = server.cpu_seconds() - cpu0
    done = result.get("requests", result.get("completed", 0))
    result["server_cpu_s"] = round(cpu, 3)
    result["server_cpu_us_per_request"] = cpu / done * 1e6 if done else None
    return result


def _summary(rounds: list[dict[str, Any]], keys: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {k: median(r.get(k) for r in rounds) for k in keys}
    out["errors"] = sum(r.get("errors", 0) for r in rounds)
    out["rounds"] = rounds
    return out


def _rotate(items: list[Any], k: int) -> list[Any]:
    k %= len(items)
    return items[k:] + items[:k]


def run(plan: Plan, root: Path, model_dir: Path, readings: list[dict[str, Any]],
        log: Callable[[str], None] = print, vs: Path | None = None, shadow: Path | None = None) -> dict[str, Any]:
    """`vs`: another checkout, whose `fdedge serve --sync full` ("edge-full@vs") joins every
    interleaved measurement edge-full takes part in, for an A/B of two versions in one run."""
    single = single_body(readings)
    batch = batch_body(readings, plan.batch_rows)
    template = batch_body(readings, plan.batch_rows, placeholder=True)
    bare = Server("bare", root).start()
    durable = Server("bare-durable", root).start()
    edges = {sync: Server("edge", root, model_dir=model_dir, sync=sync) for sync in ("full", "normal")}
    for edge in edges.values():
        if shadow is not None:
            shadow_in(edge, shadow)
        edge.start()
    if vs is not None:
        edges["full@vs"] = Server("edge", root, model_dir=model_dir, sync="full", name="edge-full@vs", tree=vs).start()
    everyone = [bare, *edges.values()]
    closed_loop = [*everyone, durable]
    try:
        for server in closed_loop:
            _check(server, single, 1)
        for server in edges.values():
            _check(server, batch, plan.batch_rows)
        single_wrk = Wrk(root, "single", single)
        batch_wrk = Wrk(root, "batch", template, advancing_times=True)
        for server in closed_loop:
            single_wrk.warm(server.port, plan.warmup, plan.connections)

        closed: dict[str, list[dict[str, Any]]] = {s.name: [] for s in closed_loop}
        crowd: dict[str, list[dict[str, Any]]] = {s.name: [] for s in closed_loop}
        fixed: dict[str, list[dict[str, Any]]] = {s.name: [] for s in everyone}
        batches: dict[str, list[dict[str, Any]]] = {s.name: [] for s in edges.values()}
        for r in range(plan.rounds):
            log(f"  round {r + 1}/{plan.rounds}: single-reading throughput")
            for server in _rotate(closed_loop, r):
                closed[server.name].append(_with_cpu(server, partial(
                    single_wrk.run, server.port, plan.duration, plan.connections)))
            log(f"  round {r + 1}/{plan.rounds}: single-reading throughput, {CROWD_CONNECTIONS} connections")
            for server in _rotate(closed_loop, r):
                crowd[server.name].append(_with_cpu(server, partial(
                    single_wrk.run, server.port, plan.duration, CROWD_CONNECTIONS)))
            log(f"  round {r + 1}/{plan.rounds}: p99 at {plan.rate:,} req/s")
            for server in _rotate(everyone, r):
                fixed[server.name].append(_with_cpu(server, partial(
                    open_loop, server.port, single, plan.rate, plan.rate_duration, RATE_CONNECTIONS,
                    discard=min(0.5, plan.rate_duration / 4))))
            log(f"  round {r + 1}/{plan.rounds}: batch ingest, {plan.batch_rows:,} readings per request")
            for server in _rotate(list(edges.values()), r):
                result = _with_cpu(server, partial(batch_wrk.run, server.port, plan.duration, BATCH_CONNECTIONS))
                result["readings_per_s"] = result["rps"] * plan.batch_rows
                batches[server.name].append(result)
        rss = {s.name: s.status().get("VmRSS") for s in everyone}
    finally:
        for server in closed_loop:
            server.stop()

    closed_keys = ("rps", "p50_ms", "p99_ms", "server_cpu_us_per_request")
    fixed_keys = ("achieved_rps", "p50_ms", "p99_ms", "p999_ms", "send_lag_p99_ms", "generator_cpu_fraction",
                  "server_cpu_us_per_request")
    out: dict[str, Any] = {
        "body_bytes": {"single": len(single), "batch": len(batch)},
        "wrk": {"threads": 1, "connections": plan.connections, "batch_connections": BATCH_CONNECTIONS,
                "crowd_connections": CROWD_CONNECTIONS, "duration_s": plan.duration},
        "single": {name: _summary(rows, closed_keys) for name, rows in closed.items()},
        "single_crowd": {name: _summary(rows, closed_keys) for name, rows in crowd.items()},
        "fixed_rate": {name: _summary(rows, fixed_keys) for name, rows in fixed.items()},
        "batch": {name: _summary(rows, ("rps", "readings_per_s", "p50_ms", "p99_ms", "server_cpu_us_per_request"))
                  for name, rows in batches.items()},
        "rss_after_bytes": rss,
    }
    for name, rows in fixed.items():
        # A stall of the whole (shared) machine lands in some rounds' p99 only: the best round is
        # the figure least disturbed by other tenants, the median the one the targets use.
        out["fixed_rate"][name]["best_p99_ms"] = min(
            (r["p99_ms"] for r in rows if r["p99_ms"] is not None), default=None)
        out["fixed_rate"][name]["best_send_lag_p99_ms"] = min(
            (r["send_lag_p99_ms"] for r in rows if r["send_lag_p99_ms"] is not None), default=None)
        out["fixed_rate"][name]["min_achieved_rps"] = min((r["achieved_rps"] for r in rows), default=None)
    out["fixed_rate"]["rate"] = plan.rate
    out["fixed_rate"]["connections"] = RATE_CONNECTIONS
    for key, rounds in (("single", closed), ("single_crowd", crowd)):
        section = out[key]
        for name in ("edge-full", "edge-normal", "bare-durable"):
            section[name]["ratio_to_bare"] = ratio(section[name]["rps"], section["bare"]["rps"])
            section[name]["ratio_per_round"] = [ratio(e["rps"], b["rps"])
                                                for e, b in zip(rounds[name], rounds["bare"], strict=True)]
            section[name]["cpu_ratio_to_bare"] = ratio(
                section["bare"]["server_cpu_us_per_request"], section[name]["server_cpu_us_per_request"])
        # how much of what durability leaves FD-Edge keeps (scoring, SQLite, validation)
        section["edge-full"]["ratio_to_durable"] = ratio(section["edge-full"]["rps"], section["bare-durable"]["rps"])
    if vs is not None:
        out["ab"] = _ab(out, closed, crowd, fixed, batches)
    if shadow is not None:  # proof the shadow ran: its rows against the readings stored
        out["shadow"] = {}
        for edge in edges.values():
            if edge.tree != vs:
                with sqlite3.connect(edge.data_dir / "sensor_data.db") as conn:
                    out["shadow"][edge.name] = {
                        "readings": conn.execute("SELECT count(*) FROM sensor_data").fetchone()[0],
                        "shadowed": conn.execute("SELECT count(*) FROM fdedge_shadow").fetchone()[0]}
    return out


def shadow_in(server: Server, model: Path) -> None:
    """`model` kept in the server's model store and recorded as its shadow before it starts (the CLI
    works on a stopped appliance): the running server then scores every reading with it too."""
    base = [RUNTIME_PYTHON[0], "-m", "edge", "model", "--data-dir", str(server.data_dir)]
    added = subprocess.run([*base, "add", str(model)], cwd=server.tree, env=child_env(), check=True,
                           capture_output=True, text=True)
    subprocess.run([*base, "shadow", added.stdout.strip()], cwd=server.tree, env=child_env(), check=True,
                   capture_output=True)


def _ab(out: dict[str, Any], *rounds_by_measurement: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """edge-full / edge-full@vs: ratio of medians, and per round (same machine phase)."""
    keys = (("single", "rps"), ("single_crowd", "rps"), ("fixed_rate", "p99_ms"), ("batch", "readings_per_s"))
    ab: dict[str, Any] = {}
    for (section, key), rounds in zip(keys, rounds_by_measurement, strict=True):
        head, other = out[section]["edge-full"].get(key), out[section]["edge-full@vs"].get(key)
        ab[f"{section}.{key}"] = {
            "head": head, "vs": other, "ratio": ratio(head, other),
            "per_round": [ratio(a.get(key), b.get(key))
                          for a, b in zip(rounds["edge-full"], rounds["edge-full@vs"], strict=True)],
        }
    ab["rss_after_bytes"] = {"head": out["rss_after_bytes"].get("edge-full"),
                             "vs": out["rss_after_bytes"].get("edge-full@vs")}
    return ab
