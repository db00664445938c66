"""Per-reading inference cost: the converted model vs the Keras model it replaces.

All figures come from one process on one machine in one run, so they compare; they are
medians over several timed rounds because the target machines are shared and noisy.
The onnxruntime part needs only onnxruntime and numpy (importable by bench/ on a
runtime-only install); the Keras part is optional and imports TensorFlow lazily.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from convert.onnx_export import session


@dataclass(frozen=True)
class Figures:
    """Microseconds per reading unless the name says otherwise."""

    onnx_batch1_us: float
    onnx_batch256_us: float
    pipeline_batch1_us: float
    keras_predict_batch1_us: float | None
    keras_call_batch1_us: float | None
    onnx_bytes: int
    threads: int
    machine: str
    versions: dict[str, str]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _median_us(fn: Callable[[], Any], calls: int, rounds: int, per: int = 1, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        samples.append((time.perf_counter() - start) / calls / per * 1e6)
    return statistics.median(samples)


def _load(model_dir: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    document = json.loads((model_dir / "manifest.json").read_text())
    with np.load(model_dir / document.get("scalers", "scalers.npz")) as npz:
        params = {k: npz[k] for k in ("x_scale", "x_offset", "y_scale", "y_offset")}
    return document, params


def readings(params: dict[str, np.ndarray], rows: int, seed: int = 0) -> np.ndarray:
    """Plausible readings in model order: standard normal once scaled."""
    z = np.random.default_rng(seed).standard_normal((rows, params["x_scale"].shape[0]))
    return (z - params["x_offset"]) / params["x_scale"]


def onnx_figures(model_dir: Path, *, threads: int = 1, quick: bool = False) -> dict[str, Any]:
    """onnxruntime alone and the appliance's whole numpy + onnxruntime pipeline."""
    from edge.scoring.model import ort as onnxruntime

    document, params = _load(model_dir)
    onnx_path = model_dir / document.get("onnx", "model.onnx")
    sess = session(onnx_path, threads=threads)
    name = document.get("input_name", "features")
    x = readings(params, 256)
    one, batch = x[:1].astype(np.float32), x.astype(np.float32)
    rounds, calls1, calls256 = (3, 300, 10) if quick else (7, 3000, 100)

    def pipeline() -> np.ndarray:
        raw = sess.run(None, {name: (x[:1] * params["x_scale"] + params["x_offset"]).astype(np.float32)})[0]
        return raw.astype(np.float64) * params["y_scale"] + params["y_offset"]

    return {
        "onnx_batch1_us": _median_us(lambda: sess.run(None, {name: one}), calls1, rounds, warmup=200),
        "onnx_batch256_us": _median_us(lambda: sess.run(None, {name: batch}), calls256, rounds, per=256, warmup=10),
        "pipeline_batch1_us": _median_us(pipeline, calls1, rounds, warmup=200),
        "onnx_bytes": onnx_path.stat().st_size,
        "threads": threads,
        "versions": {"onnxruntime": onnxruntime.__version__, "numpy": np.__version__},
        "readings": x,
    }


def keras_figures(model: Any, x: np.ndarray, *, quick: bool = False) -> dict[str, Any]:
    """FD-REST's `model.predict` per reading, and the cheaper direct call, at batch 1."""
    import tensorflow as tf

    from convert.keras_model import quiet_stderr

    one = x[:1].astype(np.float32)
    rounds, predict_calls, direct_calls = (3, 3, 20) if quick else (5, 10, 100)
    with quiet_stderr():  # predict() builds a tf.data pipeline that logs C++ noise each call
        predict_us = _median_us(lambda: model.predict(one, verbose=0), predict_calls, rounds)
    return {
        "keras_predict_batch1_us": predict_us,
        "keras_call_batch1_us": _median_us(lambda: model(one, training=False), direct_calls, rounds, warmup=10),
        "tensorflow": tf.__version__,
    }


def machine() -> str:
    """Where and under what load: figures from a busy shared machine read differently."""
    load = f", load average {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    return f"{platform.machine()}, {os.cpu_count()} CPUs{load}, Python {platform.python_version()}, {platform.system()}"


def run(model_dir: Path, keras_model: Any = None, *, quick: bool = False) -> Figures:
    """Benchmark the converted model in `model_dir`; Keras too when a model object is given."""
    onnx = onnx_figures(model_dir, quick=quick)
    x = onnx.pop("readings")
    versions = onnx.pop("versions")
    keras: dict[str, Any] = {"keras_predict_batch1_us": None, "keras_call_batch1_us": None}
    if keras_model is not None:
        keras = keras_figures(keras_model, x, quick=quick)
        versions["tensorflow"] = keras.pop("tensorflow")
    return Figures(machine=machine(), versions=versions, **onnx, **keras)


def markdown(figures: Figures) -> str:
    """The MODEL_CARD.md benchmark section."""
    def cell(value: float | None) -> str:
        return "not measured" if value is None else f"{value:,.1f}"

    rows = [
        ("onnxruntime, batch 1", figures.onnx_batch1_us),
        ("onnxruntime, batch 256 (per reading)", figures.onnx_batch256_us),
        ("appliance pipeline (numpy scaling + onnxruntime), batch 1", figures.pipeline_batch1_us),
        ("Keras `model.predict`, batch 1 (FD-REST's path)", figures.keras_predict_batch1_us),
        ("Keras direct call `model(x, training=False)`, batch 1", figures.keras_call_batch1_us),
    ]
    lines = [
        "## Benchmark",
        "",
        f"Measured by `convert/benchmark.py` in one run on {figures.machine}; "
        f"onnxruntime with {figures.threads} intra-op thread and the appliance's session options, "
        "TensorFlow with its default thread pools. Medians of several timed rounds.",
        "",
        "| path | µs per reading |",
        "| --- | ---: |",
        *[f"| {label} | {cell(value)} |" for label, value in rows],
        "",
    ]
    if figures.keras_predict_batch1_us and figures.onnx_batch1_us:
        lines.append(
            f"onnxruntime is {figures.keras_predict_batch1_us / figures.onnx_batch1_us:,.0f}x faster than "
            f"`model.predict` per single reading."
        )
        lines.append("")
    lines.append(f"ONNX file: {figures.onnx_bytes:,} bytes. Versions: "
                 + ", ".join(f"{k} {v}" for k, v in sorted(figures.versions.items())) + ".")
    return "\n".join(lines) + "\n"
