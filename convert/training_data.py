"""What `fdedge train` learns from: the simulator's readings (the default) or the user's own.

Both give X in FD-REST's feature order and Y as fault0..fault7, plus a description for the
model card and a provenance record for training.json: the data set is then reproducible
(simulator: its code's hashes and the seed; CSV: the file's sha256).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from convert.errors import SimulatorMissing, TrainingDataError
from edge import fdrest

# Enough for a held-out test set, a validation set for early stopping and batches for
# BatchNormalization; far too few for a good model, which the held-out scores will say.
MIN_CSV_ROWS = 40


@dataclass(frozen=True)
class Dataset:
    x: np.ndarray  # (n, 35), FD-REST's feature order
    y: np.ndarray  # (n, 8), fault0..fault7
    description: str  # the model card's "Data:" sentence, without the split
    provenance: dict[str, Any] = field(default_factory=dict)


def simulator_fingerprint() -> dict[str, str]:
    """sha256 of the simulator's sources: the data set is a function of this code and the seed."""
    import simulator

    root = Path(simulator.__file__).parent
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()[:16] for p in sorted(root.glob("*.py"))}


def simulated(rows: int, seed: int) -> Dataset:
    """simulator.dataset.generate(rows, seed) -> (X (n, 35), Y (n, 8)), checked."""
    try:
        from simulator.dataset import generate
    except ImportError as exc:
        raise SimulatorMissing(f"simulator.dataset.generate is not available ({exc})") from None
    x, y = (np.asarray(a, dtype=np.float64) for a in generate(rows, seed))
    if x.shape != (rows, 35) or y.shape != (rows, 8) or not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise SimulatorMissing(f"simulator.dataset.generate returned {x.shape} / {y.shape}, "
                               f"expected ({rows}, 35) / ({rows}, 8) finite")
    return Dataset(x, y, f"`simulator.dataset.generate({rows}, seed={seed})`",
                   {"source": "simulator", "rows": rows, "seed": seed, "simulator_sha256": simulator_fingerprint()})


def from_csv(path: Path) -> Dataset:
    """Labelled readings in FD-REST's data.csv format: Time, the 35 features, fault0..fault7."""
    from convert import readings
    from convert.errors import SampleError

    if not path.is_file():
        raise TrainingDataError(f"labelled readings not found: {path}")
    try:
        data = readings.read_csv(path, fdrest.FEATURES)
    except SampleError as exc:
        raise TrainingDataError(str(exc)) from None
    if data.faults is None:
        raise TrainingDataError(f"{path} has no fault0..fault7 columns: training needs labelled readings "
                                "(FD-REST's data.csv format: Time, the 35 features, fault0..fault7)")
    if len(data.x) < MIN_CSV_ROWS:
        raise TrainingDataError(f"{path} has {len(data.x)} readings; at least {MIN_CSV_ROWS} are needed "
                                "to hold some out for testing and validation")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return Dataset(data.x, data.faults, f"`{path.name}` ({len(data.x)} labelled readings, sha256 {digest[:12]})",
                   {"source": "csv", "file": path.name, "rows": int(len(data.x)), "sha256": digest})
