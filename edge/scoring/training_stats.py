"""The manifest's `training_stats` as numpy arrays: what quality checks and drift compare against.

Checked once at start-up; a manifest without the key (converted before it existed) gives None,
and every reading's quality is then `unknown`. Arrays are in FD-REST feature order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edge import fdrest
from edge.errors import StartupError

QUANTILES = (0.001, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 0.999)
SOURCES = ("training data", "samples", "scaler")


@dataclass(frozen=True)
class TrainingStats:
    source: str
    n: int
    mean: np.ndarray  # (35,)
    std: np.ndarray  # (35,)
    min: np.ndarray  # (35,)
    max: np.ndarray  # (35,)
    quantile_levels: np.ndarray  # (9,) QUANTILES
    quantiles: np.ndarray  # (9, 35): row k is the QUANTILES[k] quantile of each feature
    covariance: np.ndarray | None  # (35, 35)
    precision: np.ndarray | None  # its pseudo-inverse, for the Mahalanobis distance
    ood_threshold: float | None  # the distance's calibrated threshold
    ood_quantile: float | None

    def quantile(self, level: float) -> np.ndarray:
        return self.quantiles[QUANTILES.index(level)]


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
        raise ValueError(f"{where} must be a finite number, got {value!r}")
    return float(value)


def parse(manifest: dict[str, Any]) -> TrainingStats | None:
    """The statistics, None when absent; a StartupError naming the field when malformed."""
    raw = manifest.get("training_stats")
    if raw is None:
        return None
    try:
        return _parse(raw)
    except (ValueError, TypeError, KeyError) as exc:
        raise StartupError(f"manifest training_stats: {exc}") from None


def _parse(raw: Any) -> TrainingStats:
    if not isinstance(raw, dict):
        raise ValueError("must be an object")
    source = raw.get("source")
    if source not in SOURCES:
        raise ValueError(f"source must be one of {list(SOURCES)}, got {source!r}")
    n = raw.get("n")
    if not isinstance(n, int) or isinstance(n, bool) or n < 2:
        raise ValueError(f"n must be an integer of at least 2, got {n!r}")
    features = raw.get("features")
    if not isinstance(features, dict) or set(features) != set(fdrest.FEATURES):
        raise ValueError(f"features must hold FD-REST's {len(fdrest.FEATURES)} feature names")
    cols: dict[str, list[float]] = {k: [] for k in ("mean", "std", "min", "max")}
    quantiles: list[list[float]] = []
    for name in fdrest.FEATURES:
        entry = features[name]
        if not isinstance(entry, dict):
            raise ValueError(f"features.{name} must be an object")
        for key in cols:
            cols[key].append(_number(entry.get(key), f"features.{name}.{key}"))
        q = entry.get("quantiles")
        if not isinstance(q, dict):
            raise ValueError(f"features.{name}.quantiles must be an object")
        quantiles.append([_number(q.get(str(level)), f"features.{name}.quantiles.{level}") for level in QUANTILES])
    covariance = precision = None
    if raw.get("covariance") is not None:
        covariance = np.asarray(raw["covariance"], dtype=np.float64)
        size = len(fdrest.FEATURES)
        if covariance.shape != (size, size) or not np.isfinite(covariance).all():
            raise ValueError(f"covariance must be {size}x{size} finite numbers, got shape {covariance.shape}")
        precision = np.linalg.pinv(covariance)
    threshold = level = None
    ood = raw.get("ood")
    if ood is not None:
        if not isinstance(ood, dict) or ood.get("kind") != "mahalanobis":
            raise ValueError("ood must be an object of kind 'mahalanobis'")
        if covariance is None:
            raise ValueError("ood needs the covariance")
        threshold = _number(ood.get("threshold"), "ood.threshold")
        level = _number(ood.get("quantile"), "ood.quantile")
    return TrainingStats(
        source=str(source), n=n,
        mean=np.array(cols["mean"]), std=np.array(cols["std"]), min=np.array(cols["min"]), max=np.array(cols["max"]),
        quantile_levels=np.array(QUANTILES), quantiles=np.array(quantiles).T,
        covariance=covariance, precision=precision, ood_threshold=threshold, ood_quantile=level,
    )
