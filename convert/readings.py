"""Readings to check parity on: FD-REST CSV files, or draws from the feature scaler.

Reads FD-REST's data.csv and reference_predictions.csv layouts by column name with the
csv module, so no pandas is needed and column order in the file does not matter.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from convert.errors import SampleError
from convert.scalers import Affine
from edge import fdrest


@dataclass(frozen=True)
class Readings:
    """Features in model input order; faults when the file carries fault0..fault7."""

    x: np.ndarray
    faults: np.ndarray | None


def read_csv(path: Path, features: tuple[str, ...]) -> Readings:
    """Feature columns (by name, reordered to `features`) and the fault columns if all present."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.reader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise SampleError(f"cannot read {path}: {exc}") from None
    if len(rows) < 2:
        raise SampleError(f"{path} has no readings (a header and at least one row are needed)")
    header = [h.strip() for h in rows[0]]
    index = {name: i for i, name in enumerate(header)}
    missing = [name for name in features if name not in index]
    if missing:
        raise SampleError(f"{path} lacks feature columns {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    with_faults = all(f in index for f in fdrest.FAULTS)
    columns = [index[n] for n in features] + ([index[f] for f in fdrest.FAULTS] if with_faults else [])
    values = np.empty((len(rows) - 1, len(columns)))
    for r, row in enumerate(rows[1:]):
        if len(row) != len(header):
            raise SampleError(f"{path} line {r + 2}: {len(row)} fields, the header has {len(header)}")
        for c, col in enumerate(columns):
            try:
                values[r, c] = float(row[col])
            except ValueError:
                raise SampleError(f"{path} line {r + 2}, column {header[col]!r}: "
                                  f"{row[col]!r} is not a number") from None
    if not np.isfinite(values).all():
        raise SampleError(f"{path} holds non-finite values")
    n = len(features)
    return Readings(values[:, :n], values[:, n:] if with_faults else None)


def from_statistics(affine: Affine, rows: int, seed: int) -> Readings:
    """Readings whose scaled value is standard normal: the region the model was trained on.

    For a StandardScaler this is mean + scale * N(0, 1); other scalers get the analogue.
    """
    z = np.random.default_rng(seed).standard_normal((rows, affine.n))
    return Readings(affine.inverse(z), None)
