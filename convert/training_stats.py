"""What the model was trained on, summarised for the runtime's quality checks and drift.

The manifest's `training_stats` (docs/ARTIFACTS.md): per feature in FD-REST order the mean,
standard deviation, min, max and quantiles (the deciles let drift bin by them), the covariance
for a Mahalanobis distance, and that distance's threshold calibrated on readings held out of
the statistics. From the training data when `fdedge train` saw it, else the sample data given
to `fdedge convert`, else draws from the feature scaler's statistics, said so in `source`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from convert import manifest
from convert.errors import SampleError
from convert.scalers import Affine
from edge import fdrest

QUANTILES = (0.001, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 0.999)
OOD_QUANTILE = 0.999
HELD_OUT_FRACTION = 0.1
SCALER_DRAWS = 20000
# Written by `fdedge train` next to the sources; used only with the dnn_model.keras it hashes.
FILE = "training_stats.json"


def compute(x: np.ndarray, source: str, seed: int = 0) -> dict[str, Any]:
    """Statistics of readings `x` (n, 35) in FD-REST order; the OOD threshold from a held-out tenth."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != len(fdrest.FEATURES) or not np.isfinite(x).all():
        raise SampleError(f"training statistics need finite readings of {len(fdrest.FEATURES)} features, "
                          f"got shape {x.shape}")
    n = len(x)
    held = int(n * HELD_OUT_FRACTION) if n >= 200 else 0
    order = np.random.default_rng(seed).permutation(n)
    fit, check = x[order[held:]], x[order[:held]]
    if len(fit) < 2:
        raise SampleError(f"training statistics need at least 2 readings, got {n}")
    mean = fit.mean(axis=0)
    std = fit.std(axis=0, ddof=1)
    quantiles = np.quantile(fit, QUANTILES, axis=0)
    covariance: np.ndarray | None = np.cov(fit, rowvar=False)
    ood: dict[str, Any] | None = None
    if covariance is not None and len(fit) > 2 * fit.shape[1]:
        precision = np.linalg.pinv(covariance)
        against = check if held else fit  # too few rows to hold out: calibrate on the fit itself
        centred = against - mean
        distance = np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", centred, precision, centred), 0.0))
        ood = {"kind": "mahalanobis", "threshold": float(np.quantile(distance, OOD_QUANTILE)),
               "quantile": OOD_QUANTILE, "held_out": int(held)}
    else:
        covariance = None
    features = {
        name: {"mean": float(mean[i]), "std": float(std[i]), "min": float(fit[:, i].min()),
               "max": float(fit[:, i].max()),
               "quantiles": {str(q): float(quantiles[k, i]) for k, q in enumerate(QUANTILES)}}
        for i, name in enumerate(fdrest.FEATURES)
    }
    return {"source": source, "n": int(n), "features": features,
            "covariance": covariance.tolist() if covariance is not None else None, "ood": ood}


def from_scaler(affine: Affine, model_features: tuple[str, ...], seed: int = 0) -> dict[str, Any]:
    """No data: draws whose scaled value is standard normal, in FD-REST order (min/max are the draws')."""
    z = np.random.default_rng(seed).standard_normal((SCALER_DRAWS, affine.n))
    x = affine.inverse(z)[:, [model_features.index(name) for name in fdrest.FEATURES]]
    return compute(x, "scaler", seed)


def save(model_dir: Path, stats: dict[str, Any], keras_sha256: str) -> None:
    """`fdedge train`'s record, tied to the model it trained."""
    manifest.write_json_atomic(model_dir / FILE, {"dnn_model.keras": keras_sha256, "training_stats": stats})


def saved(model_dir: Path, keras_sha256: str | None) -> dict[str, Any] | None:
    """The statistics `fdedge train` wrote for this very model, or None."""
    try:
        data = json.loads((model_dir / FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or keras_sha256 is None or data.get("dnn_model.keras") != keras_sha256:
        return None
    stats = data.get("training_stats")
    return stats if isinstance(stats, dict) else None


def choose(model_dir: Path, keras_sha256: str | None, sample: Path | None,
           affine: Affine, model_features: tuple[str, ...], seed: int = 0) -> dict[str, Any]:
    """Training data over sample data over the scaler, in that order."""
    from convert import readings

    stats = saved(model_dir, keras_sha256)
    if stats is not None:
        return stats
    if sample is not None:
        data = readings.read_csv(sample, fdrest.FEATURES)
        return compute(data.x, "samples", seed)
    return from_scaler(affine, model_features, seed)


def add_to_manifest(out_dir: Path, stats: dict[str, Any]) -> dict[str, Any]:
    """Put statistics into an existing manifest; the model, its hashes and parity are untouched."""
    document = manifest.read(out_dir)
    if document is None:
        raise SampleError(f"no readable {manifest.MANIFEST} in {out_dir}: convert the model first")
    document["training_stats"] = stats
    manifest.write_json_atomic(out_dir / manifest.MANIFEST, document)
    return document
