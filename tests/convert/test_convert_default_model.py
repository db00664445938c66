"""The committed models/default: converted from the committed sources, and still fitting
the simulator. Runtime dependencies only (onnxruntime + numpy), so a runtime-only
install checks what it is about to serve."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
DEFAULT = REPO / "models" / "default"
HEAVY = ("tensorflow", "keras", "tf2onnx", "onnx", "sklearn", "joblib")


def test_committed_outputs_match_committed_sources() -> None:
    script = (
        "import sys\nfrom convert.cli import main\n"
        f"rc = main(['--model-dir', {str(DEFAULT)!r}, '--if-stale'])\n"
        f"print('LOADED', sorted(m for m in {HEAVY!r} if m in sys.modules))\nsys.exit(rc)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "up to date" in proc.stdout, f"models/default needs `make convert` and a commit: {proc.stdout}"
    assert "LOADED []" in proc.stdout


def test_committed_model_fits_the_simulator() -> None:
    """Held-out data from a seed training never saw, scored the way the appliance scores it."""
    dataset = pytest.importorskip("simulator.dataset")
    model = pytest.importorskip("edge.scoring.model").load(DEFAULT)
    x, y = dataset.generate(4000, 20261127)
    from edge.fdrest import FEATURES

    assert list(model.features) == list(json.loads((DEFAULT / "manifest.json").read_text())["features"])
    assert len(FEATURES) == x.shape[1]
    predicted = model.predict(np.asarray(x, dtype=np.float64))
    r2 = 1 - ((predicted - y) ** 2).sum(axis=0) / ((y - y.mean(axis=0)) ** 2).sum(axis=0)
    record = json.loads((DEFAULT / "training.json").read_text())
    target = record["r2_target"]
    if not (r2 >= target).all():
        from convert.train import simulator_fingerprint

        changed = sorted(k for k, v in simulator_fingerprint().items() if record["simulator_sha256"].get(k) != v)
        pytest.fail(f"R² per fault {np.round(r2, 3).tolist()} below {target}; simulator files changed since "
                    f"training: {changed or 'none'} -> retrain with `make train` and commit models/default")
