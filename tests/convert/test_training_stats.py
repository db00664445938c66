"""Training statistics: computed in convert/, carried by the manifest, parsed by the runtime."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from convert import training_stats
from edge.errors import StartupError
from edge.fdrest import FEATURES
from edge.scoring import model as scoring
from edge.scoring.training_stats import QUANTILES, parse

REPO = Path(__file__).resolve().parents[2]
DEFAULT = REPO / "models" / "default"


def test_statistics_of_simulated_readings_and_held_out_threshold() -> None:
    from simulator.dataset import generate

    x, _ = generate(3000, 1)
    stats = training_stats.compute(np.asarray(x), "samples", seed=0)
    assert stats["source"] == "samples" and stats["n"] == 3000 and list(stats["features"]) == list(FEATURES)
    first = stats["features"][FEATURES[0]]
    fit = np.asarray(x)[np.random.default_rng(0).permutation(3000)[300:], 0]
    assert first["mean"] == pytest.approx(fit.mean()) and first["max"] == pytest.approx(fit.max())
    assert list(first["quantiles"]) == [str(q) for q in QUANTILES]
    assert stats["ood"]["held_out"] == 300 and stats["ood"]["quantile"] == 0.999
    parsed = parse({"training_stats": json.loads(json.dumps(stats))})
    assert parsed is not None and parsed.precision is not None and parsed.ood_threshold is not None
    # the threshold is the 99.9th percentile of held-out distances: at most 1 of 300 held-out readings beyond it
    held = np.asarray(x)[np.random.default_rng(0).permutation(3000)[:300]] - parsed.mean
    distance = np.sqrt(np.einsum("ij,jk,ik->i", held, parsed.precision, held))
    assert (distance > parsed.ood_threshold).sum() <= 1


def test_bundled_model_carries_statistics_of_its_training_data() -> None:
    loaded = scoring.load(DEFAULT)
    stats = loaded.training_stats
    assert stats is not None and stats.source == "training data" and stats.n == 45000
    assert stats.quantiles.shape == (9, 35) and stats.covariance is not None and stats.ood_threshold is not None
    assert np.all(stats.quantile(0.001) <= stats.quantile(0.999))


def test_manifest_without_statistics_still_loads(tmp_path: Path) -> None:
    for name in ("model.onnx", "scalers.npz"):
        shutil.copy(DEFAULT / name, tmp_path / name)
    document = json.loads((DEFAULT / "manifest.json").read_text())
    del document["training_stats"]
    (tmp_path / "manifest.json").write_text(json.dumps(document))
    assert scoring.load(tmp_path).training_stats is None
    document["training_stats"] = {"source": "scaler", "n": 10, "features": {}}
    (tmp_path / "manifest.json").write_text(json.dumps(document))
    with pytest.raises(StartupError, match="training_stats: features must hold"):
        scoring.load(tmp_path)
