"""Explanations with the bundled model and real onnxruntime: the feature pushed far from its
baseline is the one named first."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge.fdrest import FEATURES
from edge.scoring.explain import Baseline, explain
from edge.scoring.model import load

MODEL_DIR = Path(__file__).resolve().parents[2] / "models" / "default"


@pytest.fixture(scope="module")
def model():
    return load(MODEL_DIR)


@pytest.mark.parametrize("name", ["PEAK_Axial", "KURTOSIS_Horizontal", "Temperature"])
def test_the_feature_pushed_to_6_sigma_is_named_first(model, name):
    base = Baseline.from_scaler(model)
    x = base.mean.copy()
    j = FEATURES.index(name)
    x[j] += 6.0 * base.std[j]
    y = model.predict(x[None, :])[0]
    fault = int(np.argmax(y - model.predict(base.mean[None, :])[0]))  # the fault the push raised most
    out = explain(model, base, x, fault)
    assert out["features"][0]["feature"] == name
    assert out["features"][0]["sigma"] == pytest.approx(6.0, abs=0.05)
    assert out["value"] == pytest.approx(float(y[fault]), abs=0.01)
    assert out["text"].startswith(f"fault{fault} ") and f"{name} +6.0 σ" in out["text"]


def test_a_reading_at_the_baseline_names_no_feature(model):
    base = Baseline.from_scaler(model)
    out = explain(model, base, base.mean)
    assert out["features"] == []  # putting a feature back to its mean changes nothing
