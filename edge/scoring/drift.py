"""Drift of one machine's recent window against the training statistics (manifest `training_stats`).

The score is the mean distance, in training standard deviations, by which the window's values lie
outside the training support [q0.1 %, q99.9 %], per feature; overall is the worst feature. Why not
PSI or Wasserstein to the whole training set: one machine occupies one corner of it (a speed
family, mostly healthy rows), so those score every healthy machine as drifted (NOTES-issue17-drift.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edge.fdrest import FEATURES

THRESHOLD = 1.0  # σ outside the support; healthy and faulty simulated machines reach 0.72 at most
MIN_READINGS = 30  # fewer in the window: drift is unknown


@dataclass(frozen=True)
class Support:
    low: np.ndarray  # (35,) FD-REST order
    high: np.ndarray
    std: np.ndarray

    @classmethod
    def from_stats(cls, stats: Any) -> Support | None:
        """None when the manifest has no usable training statistics (drift is then unknown)."""
        try:
            per = stats["features"]
            low = np.array([float(per[f]["quantiles"]["0.001"]) for f in FEATURES])
            high = np.array([float(per[f]["quantiles"]["0.999"]) for f in FEATURES])
            std = np.array([float(per[f]["std"]) for f in FEATURES])
        except (KeyError, TypeError, ValueError):
            return None
        if not (np.isfinite(low).all() and np.isfinite(high).all() and np.isfinite(std).all()):
            return None
        return cls(low, high, np.where(std > 0, std, 1.0))


    @classmethod
    def from_training(cls, stats: Any) -> Support | None:
        """From the parsed statistics (`edge.scoring.training_stats.TrainingStats`) a model carries."""
        if stats is None:
            return None
        std = np.asarray(stats.std, dtype=np.float64)
        return cls(np.asarray(stats.quantile(0.001), dtype=np.float64),
                   np.asarray(stats.quantile(0.999), dtype=np.float64), np.where(std > 0, std, 1.0))


def score(support: Support, window: np.ndarray) -> dict[str, Any] | None:
    """Per-feature and overall drift of `window` (n, 35); None below MIN_READINGS rows."""
    window = window[~np.isnan(window).any(axis=1)]  # FD-REST rows with a missing value say nothing
    if len(window) < MIN_READINGS:
        return None
    outside = np.maximum(np.maximum(window - support.high, support.low - window), 0.0)
    per = outside.mean(axis=0) / support.std
    top = np.argsort(-per)[:3]
    overall = float(per.max())
    return {"score": round(overall, 3), "drifted": overall >= THRESHOLD, "readings": len(window),
            "features": {f: round(float(v), 3) for f, v in zip(FEATURES, per, strict=True)},
            "top": [{"feature": FEATURES[j], "score": round(float(per[j]), 3)} for j in top if per[j] > 0]}
