"""`python -m bench [--quick]`: run every section, print the table, write JSON and markdown."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from bench import report
from bench.common import (
    DEFAULT_MODEL_DIR,
    RESULTS_DIR,
    BenchError,
    Plan,
    cpu_share,
    cpu_times,
    loadavg,
    machine,
    now_iso,
    sample_readings,
)

SECTIONS = ("inference", "http", "resources", "sse", "scale", "uplink")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="FD-Edge benchmarks: inference, HTTP ingest vs a bare Starlette app, resources, SSE fan-out. "
                    "Everything is measured in one run, A/B interleaved, and reported as ratios of medians.")
    p.add_argument("--quick", action="store_true", help="smoke run in under a minute (1 round, 1 s measurements)")
    p.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL_DIR,
                   help="converted model to serve (default: %(default)s)")
    p.add_argument("--keras", type=Path,
                   help="Keras source for the inference comparison (default: MODEL_DIR/dnn_model.keras)")
    p.add_argument("--no-keras", action="store_true", help="skip the Keras comparison (no TensorFlow import)")
    p.add_argument("--sections", default=",".join(SECTIONS),
                   help="comma-separated subset of: " + ", ".join(SECTIONS) + " (default: all)")
    p.add_argument("--rounds", type=int, help="A/B rounds (default: 3, quick: 1)")
    p.add_argument("--duration", type=float, help="seconds per measurement (default: 4, quick: 1)")
    p.add_argument("--out", type=Path, default=RESULTS_DIR, help="directory for the results (default: %(default)s)")
    p.add_argument("--name", help="file stem for the results (default: latest, quick: quick)")
    p.add_argument("--tmp", type=Path, help="parent directory for the servers' data dirs (default: the system's)")
    p.add_argument("--keep", action="store_true", help="keep the temporary data dirs and server logs")
    p.add_argument("--scale-sizes", help="comma-separated database sizes for the scale section "
                   "(default: 10000,1000000; quick: 2000,20000; make bench-scale: up to 10M)")
    p.add_argument("--runtime-python", type=Path,
                   help="the interpreter the appliance runs under, e.g. a runtime-only venv's python "
                        "(make bench makes .venv-runtime; default: this one)")
    p.add_argument("--vs", type=Path, help="another checkout of FD-Edge (a directory, say a git worktree of an "
                   "older commit): its server joins the HTTP measurements, interleaved, and the A/B ratios "
                   "this / that are reported")
    p.add_argument("--shadow", type=Path, help="a converted model (not the served one) that this checkout's "
                   "servers score in shadow mode (`fdedge model shadow`) during the HTTP section: with --vs a "
                   "checkout without one, the A/B says what shadow mode costs ingest")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        print(f"python -m bench: unknown section(s) {unknown}; choose from {list(SECTIONS)}", file=sys.stderr)
        return 2
    model_dir = args.model_dir.resolve()
    if not (model_dir / "manifest.json").is_file():
        print(f"python -m bench: no converted model in {model_dir} (manifest.json missing); "
              f"run `make convert` or pass --model-dir", file=sys.stderr)
        return 2
    if {"http", "sse", "uplink"} & set(sections):
        from bench.loadgen import wrk_path
        try:
            wrk_path()
        except BenchError as exc:
            print(f"python -m bench: {exc}", file=sys.stderr)
            return 2
    vs = args.vs.resolve() if args.vs else None
    if vs is not None and not (vs / "edge" / "__main__.py").is_file():
        print(f"python -m bench: --vs {args.vs} is not a checkout of FD-Edge (no edge/__main__.py)", file=sys.stderr)
        return 2
    keras_path = None if args.no_keras else (args.keras or model_dir / "dnn_model.keras")
    plan = Plan.make(args.quick, args.rounds, args.duration)
    try:
        sizes = [int(n) for n in (args.scale_sizes or ("2000,20000" if plan.quick else "10000,1000000")).split(",")]
    except ValueError:
        print(f"python -m bench: --scale-sizes must be integers, got {args.scale_sizes!r}", file=sys.stderr)
        return 2

    from bench import servers

    if args.runtime_python is not None:
        if not os.access(args.runtime_python, os.X_OK):
            print(f"python -m bench: --runtime-python {args.runtime_python} is not an executable", file=sys.stderr)
            return 2
        servers.use_runtime_python(str(args.runtime_python))

    # SIGTERM (a CI timeout, `kill`) unwinds like Ctrl-C, so every server and reader process is stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = time.perf_counter()
    cpu_start = cpu_times()
    failed = False
    readings, source = sample_readings()
    with servers.Workspace(keep=args.keep, parent=args.tmp) as root:
        results: dict[str, Any] = {
            "format": 1,
            "created": now_iso(),
            "quick": plan.quick,
            "plan": plan.__dict__,
            "machine": machine(root),
            "model": {"dir": str(model_dir)},
            "readings_source": source,
            "vs": _describe(vs) if vs is not None else None,
            "runtime_python": servers.RUNTIME_PYTHON[0],
        }
        try:
            import json
            manifest = json.loads((model_dir / "manifest.json").read_text())
            results["model"].update(name=manifest.get("name"), version=manifest.get("version"))
        except (OSError, ValueError):
            pass
        print(f"machine: {report.machine_line(results)}", flush=True)
        print(f"readings: {source}; work dir {root}{' (kept)' if args.keep else ''}", flush=True)

        def section(name: str, fn: Any) -> None:
            nonlocal failed
            if name not in sections:
                return
            print(f"[{time.perf_counter() - started:5.0f} s] {name} ...", flush=True)
            try:
                results[name] = fn()
            except BenchError as exc:
                failed = True
                results[name] = {"error": str(exc)}
                print(f"  {name} failed: {exc}", file=sys.stderr, flush=True)
            except Exception as exc:  # report, keep the other sections
                failed = True
                results[name] = {"error": f"{type(exc).__name__}: {exc}"}
                traceback.print_exc()

        from bench import http, inference, resources, scale, sse, uplink
        try:
            section("inference", lambda: inference.run(model_dir, keras_path, plan.rounds, plan.quick))
            section("http", lambda: http.run(plan, root, model_dir, readings, log, vs=vs,
                                                        shadow=args.shadow.resolve() if args.shadow else None))
            section("resources", lambda: resources.run(plan, root, model_dir, readings, log))
            section("sse", lambda: sse.run(plan, root, model_dir, readings, log))
            section("scale", lambda: scale.run(plan, root, model_dir, readings, sizes, log))
            section("uplink", lambda: uplink.run(plan, root, model_dir, readings, log))
        except KeyboardInterrupt:
            print("interrupted; servers stopped", file=sys.stderr)
            return 130
        results["machine"]["loadavg_end"] = loadavg()
        results["machine"]["cpu_share"] = cpu_share(cpu_start, cpu_times())
        results["duration_s"] = round(time.perf_counter() - started, 1)
        results["targets"] = report.evaluate(results)
        results["failed"] = failed

    try:
        text = report.table(results)
    except Exception as exc:  # a failed section must not hide the JSON
        text = f"(table unavailable: {type(exc).__name__}: {exc})"
        failed = True
    print()
    print(text)
    stem = args.name or ("quick" if plan.quick else "latest")
    for path in report.write(results, args.out, stem):
        print(f"wrote {path}")
    return 1 if failed else 0


def _describe(tree: Path) -> dict[str, str]:
    import subprocess
    commit = subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    return {"dir": str(tree), "commit": commit or "?"}


def log(text: str) -> None:
    """Progress lines go out at once: a section runs for minutes."""
    print(text, flush=True)
