"""Does the converted pipeline reproduce FD-REST's? Checked on the files as written.

FD-REST's path: scikit-learn transform -> Keras -> scikit-learn inverse_transform.
The appliance's path: numpy affine from scalers.npz -> onnxruntime -> numpy affine.
Both are compared on the un-scaled fault values, which is what operators see, and the
error is judged relative to the output range so the tolerance means the same for any
model.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from convert.errors import ParityError
from convert.onnx_export import INPUT_NAME, session
from convert.scalers import LoadedScaler

# numpy's multiply-add and scikit-learn's subtract-divide may differ in the last bits only.
SCALING_TOLERANCE = 1e-9
KERAS_BATCH = 1024
# Parity readings kept in the manifest (`parity.replay`) with the faults FD-REST's path computed for
# them: the appliance re-runs them before it keeps or activates the model (edge/scoring/model_store.py).
REPLAY_SAMPLES = 16


def _sklearn(scaler: LoadedScaler | None, method: str, data: np.ndarray) -> np.ndarray:
    if scaler is None:
        return data
    with warnings.catch_warnings():
        # fitted with names, called with an array: expected, the order is the model's
        warnings.simplefilter("ignore", UserWarning)
        return np.asarray(getattr(scaler.estimator, method)(data), dtype=np.float64)


def keras_pipeline(model: Any, feature: LoadedScaler | None, target: LoadedScaler | None,
                   x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(faults, model inputs, raw model outputs) the way FD-REST computes them."""
    scaled = _sklearn(feature, "transform", x)
    raw = np.concatenate([
        np.asarray(model(scaled[i:i + KERAS_BATCH].astype(np.float32), training=False), dtype=np.float64)
        for i in range(0, len(scaled), KERAS_BATCH)
    ])
    return _sklearn(target, "inverse_transform", raw), scaled, raw


def runtime_pipeline(onnx_path: Path, scalers_path: Path, x: np.ndarray) -> np.ndarray:
    """Faults exactly as the appliance computes them from the converted files."""
    with np.load(scalers_path) as npz:
        x_scale, x_offset, y_scale, y_offset = (npz[k] for k in ("x_scale", "x_offset", "y_scale", "y_offset"))
    raw = session(onnx_path).run(None, {INPUT_NAME: (x * x_scale + x_offset).astype(np.float32)})[0]
    return raw.astype(np.float64) * y_scale + y_offset


def _relative(error: float, reference: np.ndarray) -> tuple[float, float]:
    spread = float(np.ptp(reference))
    return spread, error / (spread if spread > 0 else max(float(np.max(np.abs(reference))), 1.0))


def _worst(diff: np.ndarray) -> str:
    row, col = np.unravel_index(int(np.argmax(diff)), diff.shape)
    return f"fault{col}, reading {row}"


def check(model: Any, feature: LoadedScaler | None, target: LoadedScaler | None, x: np.ndarray,
          onnx_path: Path, scalers_path: Path, *, tolerance: float, source: str,
          expected: np.ndarray | None = None) -> dict[str, Any]:
    """Parity figures for the manifest; raises ParityError when a check fails."""
    with np.load(scalers_path) as npz:
        x_scale, x_offset, y_scale, y_offset = (npz[k] for k in ("x_scale", "x_offset", "y_scale", "y_offset"))
    keras_faults, sk_scaled, raw = keras_pipeline(model, feature, target, x)
    scaling = float(np.max(np.abs(sk_scaled - (x * x_scale + x_offset)) / np.maximum(np.abs(sk_scaled), 1.0)))
    inverse = float(np.max(np.abs(keras_faults - (raw * y_scale + y_offset)) / np.maximum(np.abs(keras_faults), 1.0)))
    if scaling > SCALING_TOLERANCE or inverse > SCALING_TOLERANCE:
        raise ParityError(
            f"numpy scaling disagrees with scikit-learn's transform/inverse_transform "
            f"(relative error {scaling:.2g} / {inverse:.2g} > {SCALING_TOLERANCE:g})"
        )
    onnx_faults = runtime_pipeline(onnx_path, scalers_path, x)
    diff = np.abs(onnx_faults - keras_faults)
    max_abs = float(diff.max())
    spread, relative = _relative(max_abs, keras_faults)
    figures: dict[str, Any] = {
        "samples": int(len(x)), "source": source,
        "max_abs_error": max_abs, "output_range": spread, "relative_error": relative, "tolerance": tolerance,
        "max_abs_error_per_fault": [float(v) for v in diff.max(axis=0)],
        "scaling_relative_error": scaling, "inverse_scaling_relative_error": inverse,
        # x in the model's input order (the manifest's `features`), y FD-REST's faults
        "replay": {"x": x[:REPLAY_SAMPLES].tolist(), "y": keras_faults[:REPLAY_SAMPLES].tolist()},
    }
    if relative > tolerance:
        raise ParityError(
            f"parity failed: the ONNX pipeline differs from Keras by {max_abs:.3g} "
            f"({relative:.2g} of the output range {spread:.3g}, tolerance {tolerance:g}) "
            f"on {len(x)} {source} readings; worst at {_worst(diff)}"
        )
    if expected is not None:
        ref_diff = np.abs(onnx_faults - expected)
        ref_abs = float(ref_diff.max())
        _, ref_relative = _relative(ref_abs, expected)
        figures.update(reference_max_abs_error=ref_abs, reference_relative_error=ref_relative)
        if ref_relative > tolerance:
            raise ParityError(
                f"parity failed: the ONNX pipeline differs from the reference predictions by {ref_abs:.3g} "
                f"({ref_relative:.2g} of their range, tolerance {tolerance:g}); worst at {_worst(ref_diff)}"
            )
    return figures
