"""Section 1: µs per reading, onnxruntime (the appliance) vs Keras (FD-REST).

Runs in its own process (`python -m bench.inference`) so TensorFlow's threads and memory never
touch the HTTP measurements that follow. Rounds alternate onnxruntime and Keras, and each
figure is the median over rounds. The timing functions are convert/benchmark.py's (the model
card's figures).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import REPO, BenchError, median, ratio
from bench.servers import child_env


def measure(model_dir: Path, keras_path: Path | None, rounds: int, quick: bool) -> dict[str, Any]:
    """The child process's work; returns the section's JSON."""
    from convert import benchmark as cb  # runtime-only: it imports TensorFlow only when asked
    source = "convert/benchmark.py"

    keras_model = None
    keras_skip = None
    tf_version = None
    if keras_path is None:
        keras_skip = "no Keras source given"
    elif not keras_path.is_file():
        keras_skip = f"no Keras source at {keras_path}"
    else:
        try:
            # TensorFlow is imported here and only here.
            from convert.keras_model import load as load_keras
            keras_model = load_keras(keras_path)
            import tensorflow as tf
            tf_version = tf.__version__
        except ImportError as exc:
            keras_skip = f"build extra not importable ({exc.name or exc})"
        except Exception as exc:  # e.g. BuildExtraMissing, a corrupt file
            keras_skip = f"{type(exc).__name__}: {exc}"

    def keras_round(x: np.ndarray) -> dict[str, float]:
        out = cb.keras_figures(keras_model, x, quick=quick)
        out.pop("tensorflow", None)
        return out

    quality_rows, quality_skip = _quality_readings(model_dir)
    onnx_rounds: list[dict[str, Any]] = []
    keras_rounds: list[dict[str, float]] = []
    for _ in range(rounds):  # A/B interleaved
        figures = cb.onnx_figures(model_dir, threads=1, quick=quick)
        if quality_rows is not None:
            figures.update(_quality_figures(model_dir, quality_rows, quick))
        x = figures.pop("readings")
        for key in ("versions", "threads", "onnx_bytes"):
            figures.pop(key, None)
        onnx_rounds.append(figures)
        if keras_model is not None:
            keras_rounds.append(keras_round(x))

    def med(rows: list[dict[str, Any]], key: str) -> float | None:
        return median(r.get(key) for r in rows)

    from edge.scoring.model import ort as onnxruntime

    out: dict[str, Any] = {
        "source": source,
        "threads": 1,
        "rounds": rounds,
        "model_dir": str(model_dir),
        "onnx_bytes": (model_dir / "model.onnx").stat().st_size if (model_dir / "model.onnx").exists() else None,
        "onnxruntime": onnxruntime.__version__,
        "onnx_batch1_us": med(onnx_rounds, "onnx_batch1_us"),
        "onnx_batch256_us": med(onnx_rounds, "onnx_batch256_us"),
        "pipeline_batch1_us": med(onnx_rounds, "pipeline_batch1_us"),
        "quality_batch1_us": med(onnx_rounds, "quality_batch1_us"),
        "quality_batch256_us": med(onnx_rounds, "quality_batch256_us"),
        "quality_skipped": quality_skip,
        "keras_predict_batch1_us": med(keras_rounds, "keras_predict_batch1_us"),
        "keras_call_batch1_us": med(keras_rounds, "keras_call_batch1_us"),
        "keras_skipped": keras_skip,
        "tensorflow": tf_version,
        "rounds_detail": {"onnx": onnx_rounds, "keras": keras_rounds},
    }
    out["speedup_vs_keras_predict"] = ratio(out["keras_predict_batch1_us"], out["onnx_batch1_us"])
    out["speedup_vs_keras_call"] = ratio(out["keras_call_batch1_us"], out["onnx_batch1_us"])
    out["quality_share_of_pipeline"] = ratio(out["quality_batch1_us"], out["pipeline_batch1_us"])
    return out


def _quality_readings(model_dir: Path) -> tuple[np.ndarray | None, str | None]:
    """Simulated readings (FD-REST order) of one healthy and one developing machine, for the
    quality verdict; None with the reason when the model has no training statistics."""
    from edge.fdrest import FEATURES
    from edge.scoring.model import load
    from simulator.machine import VirtualMachine

    if load(model_dir).training_stats is None:
        return None, "the model's manifest has no training_stats"
    rows = [[r.features[f] for f in FEATURES]
            for scenario in ("healthy", "developing") for r in VirtualMachine(3, scenario=scenario).run(256, 2.0)]
    return np.array(rows), None


def _quality_figures(model_dir: Path, rows: np.ndarray, quick: bool) -> dict[str, float]:
    """µs per reading of edge/scoring/quality.py's verdict: one reading per call (each call the next
    reading of one machine, as the writer's single-reading groups), and groups of 256."""
    from convert.benchmark import _median_us
    from edge.scoring.model import load
    from edge.scoring.quality import Quality

    quality = Quality(load(model_dir).training_stats)
    singles = [rows[i:i + 1] for i in range(len(rows))]
    machine = ["bench"]
    at = [0]

    def one() -> None:
        quality.evaluate(singles[at[0] % len(singles)], machine)
        at[0] += 1

    batch, names = rows[:256], ["bench-batch"] * 256
    rounds, calls1, calls256 = (3, 512, 10) if quick else (7, 5120, 100)
    return {"quality_batch1_us": _median_us(one, calls1, rounds, warmup=512),
            "quality_batch256_us": _median_us(lambda: quality.evaluate(batch, names), calls256, rounds, per=256)}


def run(model_dir: Path, keras_path: Path | None, rounds: int, quick: bool, timeout: float = 240) -> dict[str, Any]:
    """Run the section in a child process and return its JSON."""
    cmd = [sys.executable, "-m", "bench.inference", "--model-dir", str(model_dir), "--rounds", str(rounds)]
    if keras_path is not None:
        cmd += ["--keras", str(keras_path)]
    if quick:
        cmd.append("--quick")
    env = child_env()
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise BenchError(f"inference benchmark failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.inference")
    p.add_argument("--model-dir", type=Path, required=True)
    p.add_argument("--keras", type=Path)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--quick", action="store_true")
    args = p.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    print(json.dumps(measure(args.model_dir, args.keras, args.rounds, args.quick)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
