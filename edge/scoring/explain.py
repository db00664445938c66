"""Which features drive one reading's fault intensity: one batched onnxruntime call of 36 rows.

Occlusion against the training baseline: row 0 is the reading, row 1+j the reading with feature j
set to its baseline mean. A feature's contribution is how much the fault falls when it is put
back to normal. Why not gradient x deviation: at 6 sigma a saturated network has almost no
gradient left, so the feature that caused the reading would score near zero.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edge.fdrest import FAULTS, FEATURES
from edge.scoring.model import Model

TOP = 3  # features named per explanation
MIN_SHARE = 0.05  # ... each contributing at least this share of the largest contribution


@dataclass(frozen=True)
class Baseline:
    """Per-feature mean and standard deviation in FD-REST order, and where they came from."""

    mean: np.ndarray
    std: np.ndarray
    source: str

    @classmethod
    def from_scaler(cls, model: Model) -> Baseline:
        """A StandardScaler's affine is x * (1/std) - mean/std, in the model's input order."""
        mean, std = np.empty(35), np.empty(35)
        mean[model.order] = -model.x_offset / model.x_scale
        std[model.order] = np.abs(1.0 / model.x_scale)
        return cls(mean, std, "scaler")


    @classmethod
    def from_training(cls, stats: Any) -> Baseline:
        """The training data's own mean and spread (`training_stats.TrainingStats`), the better
        baseline: a scaler's may be a MinMaxScaler's, which says nothing of the spread."""
        return cls(np.asarray(stats.mean, dtype=np.float64), np.asarray(stats.std, dtype=np.float64), stats.source)

    @classmethod
    def of(cls, model: Model) -> Baseline:
        return cls.from_training(model.training_stats) if model.training_stats is not None else cls.from_scaler(model)


def explain(model: Model, baseline: Baseline, x: np.ndarray, fault: int | None = None) -> dict[str, Any]:
    """The features behind `fault` (default: the largest) for one reading `x` (35, FD-REST order)."""
    x = np.asarray(x, dtype=np.float64).reshape(35)
    rows = np.repeat(x[None, :], 36, axis=0)
    rows[np.arange(1, 36), np.arange(35)] = baseline.mean
    y = model.predict(rows)
    i = int(np.argmax(y[0])) if fault is None else fault
    value = float(y[0, i])
    contribution = value - y[1:, i]
    sigma = (x - baseline.mean) / np.where(baseline.std > 0, baseline.std, 1.0)
    order = np.argsort(-contribution)
    top = contribution[order[0]]
    picked = [int(j) for j in order[:TOP] if contribution[j] > 0 and contribution[j] >= MIN_SHARE * top]
    features = [{"feature": FEATURES[j], "sigma": round(float(sigma[j]), 1),
                 "contribution": round(float(contribution[j]), 2)} for j in picked]
    text = f"{FAULTS[i]} {value:.0f}: " + ", ".join(f"{f['feature']} {f['sigma']:+.1f} σ" for f in features)
    return {"fault": FAULTS[i], "value": round(value, 2), "features": features, "baseline": baseline.source,
            "text": text if features else f"{FAULTS[i]} {value:.0f}"}
