"""The scoring pipeline: numpy affine scaling around one onnxruntime session.

Loads only the converted artifacts (docs/ARTIFACTS.md); the build step's libraries are
never imported here, which is what keeps the runtime small enough for a Raspberry Pi.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# onnxruntime (1.32 on Linux) otherwise writes a device id and an event database under
# ~/.cache/Microsoft and tries to reach Microsoft's telemetry host on first use; an appliance on
# a factory network must do neither. It reads the variable when it initialises, so before the
# import: everything in FD-Edge (the build step and the benchmarks too) imports onnxruntime from
# here.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

import onnxruntime as ort

from edge import fdrest
from edge.errors import StartupError
from edge.scoring.training_stats import TrainingStats, parse

INFER_CHUNK = 256


@dataclass(frozen=True)
class Model:
    manifest: dict[str, Any]
    features: tuple[str, ...]  # model input order
    faults: tuple[str, ...]
    # the model's own fault catalogue (category, observed, root_causes per fault, in `faults` order);
    # FD-REST's when the manifest has none, so models converted before `--catalogue` keep working
    catalogue: tuple[dict[str, str], ...]
    session: ort.InferenceSession
    input_name: str
    x_scale: np.ndarray
    x_offset: np.ndarray
    y_scale: np.ndarray
    y_offset: np.ndarray
    # permutation from FD-REST order (edge.fdrest.FEATURES) to model input order
    order: np.ndarray
    # what the model was trained on (scoring/training_stats.py); None for an older manifest
    training_stats: TrainingStats | None = None

    @property
    def name(self) -> str:
        return str(self.manifest.get("name", "model"))

    @property
    def version(self) -> str:
        return str(self.manifest.get("version", ""))

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Score readings given in FD-REST feature order; returns fault intensities (n, 8) float64.

        Large batches run in chunks: per-reading cost is flat beyond a few hundred rows, and
        onnxruntime's activation buffers (and so the appliance's memory) stay bounded."""
        with np.errstate(over="ignore", invalid="ignore"):  # absurd inputs: the writer refuses non-finite outputs
            scaled = (x[:, self.order] * self.x_scale + self.x_offset).astype(np.float32)
            if len(scaled) <= INFER_CHUNK:
                raw = self.session.run(None, {self.input_name: scaled})[0]
            else:
                raw = np.concatenate([self.session.run(None, {self.input_name: scaled[i:i + INFER_CHUNK]})[0]
                                      for i in range(0, len(scaled), INFER_CHUNK)])
            return raw.astype(np.float64) * self.y_scale + self.y_offset


def session_options(threads: int = 1) -> ort.SessionOptions:
    """The appliance's onnxruntime settings; the build step benchmarks with the same ones."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # Spinning threads would burn a Pi's cores between readings.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    # Plain malloc instead of onnxruntime's growing arena: memory goes back after a big batch.
    options.enable_cpu_mem_arena = False
    return options


def load(model_dir: Path, threads: int = 1) -> Model:
    """Load and warm the model; every problem becomes a StartupError naming the file."""
    manifest_path = model_dir / "manifest.json"
    if not manifest_path.is_file():
        raise StartupError(f"model manifest not found: {manifest_path} (run `fdedge convert --model-dir {model_dir}`)")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError) as exc:
        raise StartupError(f"model manifest {manifest_path} is unreadable: {exc}") from None
    if not isinstance(manifest, dict):
        raise StartupError(f"model manifest {manifest_path} must be a JSON object, got {type(manifest).__name__}")

    features = manifest.get("features") or ()
    faults = manifest.get("faults") or ()
    if not all(isinstance(v, (list, tuple)) and all(isinstance(n, str) for n in v) for v in (features, faults)):
        raise StartupError(f"{manifest_path}: features and faults must be lists of names")
    features, faults = tuple(features), tuple(faults)
    if sorted(features) != sorted(fdrest.FEATURES):
        missing = sorted(set(fdrest.FEATURES) - set(features))
        extra = sorted(set(features) - set(fdrest.FEATURES))
        raise StartupError(f"{manifest_path}: features must be FD-REST's 35 names; missing {missing}, unknown {extra}")
    if faults != fdrest.FAULTS:
        raise StartupError(f"{manifest_path}: faults must be {list(fdrest.FAULTS)}, got {list(faults)}")
    try:
        given = manifest.get("catalogue")
        catalogue = fdrest.CATALOGUE if given is None else fdrest.parse_catalogue(given, strict=False)
    except ValueError as exc:
        raise StartupError(f"{manifest_path}: catalogue {exc}") from None

    try:
        stats = parse(manifest)
    except StartupError as exc:
        raise StartupError(f"{manifest_path}: {exc}") from None

    scalers_path = model_dir / manifest.get("scalers", "scalers.npz")
    try:
        with np.load(scalers_path) as npz:
            params = {k: np.asarray(npz[k], dtype=np.float64) for k in ("x_scale", "x_offset", "y_scale", "y_offset")}
    except Exception as exc:  # numpy/zipfile raise BadZipFile, EOFError, zlib.error, ... for damaged files
        raise StartupError(f"scaler file {scalers_path} is missing or corrupt: {exc}") from None
    for key, size in (("x_scale", 35), ("x_offset", 35), ("y_scale", 8), ("y_offset", 8)):
        if params[key].shape != (size,) or not np.isfinite(params[key]).all():
            raise StartupError(f"{scalers_path}: {key} must be {size} finite numbers, got shape {params[key].shape}")

    onnx_path = model_dir / manifest.get("onnx", "model.onnx")
    options = session_options(threads)
    try:
        data = onnx_path.read_bytes()
        # From the file, not `data`: onnxruntime's session keeps the bytes it was given (the whole
        # model again, for the life of the model)
        session = ort.InferenceSession(str(onnx_path), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own untyped errors for corrupt files
        raise StartupError(f"ONNX model {onnx_path} is missing or corrupt: {str(exc).splitlines()[0][:300]}") from None
    inputs = session.get_inputs()
    if len(inputs) != 1 or inputs[0].shape[-1] != 35:
        raise StartupError(f"{onnx_path}: expected one input of 35 features, got {[(i.name, i.shape) for i in inputs]}")

    expected = manifest.get("onnx_sha256")
    if expected and hashlib.sha256(data).hexdigest() != expected:
        raise StartupError(f"{onnx_path} does not match its manifest (sha256 differs); re-run `fdedge convert`")

    model = Model(
        manifest=manifest,
        features=features,
        faults=faults,
        catalogue=catalogue,
        session=session,
        input_name=inputs[0].name,
        order=np.array([fdrest.FEATURES.index(name) for name in features]),
        training_stats=stats,
        **params,
    )
    try:
        out = model.predict(np.zeros((1, 35)))  # warm-up: first run allocates
    except Exception as exc:
        raise StartupError(f"{onnx_path}: test inference failed: {str(exc).splitlines()[0][:300]}") from None
    if out.shape != (1, 8):
        raise StartupError(f"{onnx_path}: output shape {out.shape}, expected (n, 8)")
    return model
