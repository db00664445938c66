"""Simulated training sets in FD-REST's data.csv format (`fdedge dataset`)."""

from __future__ import annotations

import argparse
import csv
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from edge.fdrest import FAULTS, FEATURES, TIME_FORMAT
from simulator.physics import N_FAULTS, quantize, simulate

HEADER: tuple[str, ...] = ("Time", *FEATURES, *FAULTS)
DEFAULT_START = datetime(2024, 1, 1, tzinfo=UTC)

# Share of rows per kind. Faults are drawn independently of each other so a model has to
# learn each signature rather than the co-occurrence of faults.
MIX = {"healthy": 0.12, "single": 0.38, "multi": 0.35, "severe": 0.15}


def sample_faults(rows: int, rng: np.random.Generator) -> np.ndarray:
    """Fault intensities (rows, 8): healthy, one fault, 2-4 faults, or 1-3 severe faults."""
    kind = rng.choice(len(MIX), size=rows, p=list(MIX.values()))
    count = np.select(
        [kind == 0, kind == 1, kind == 2],
        [0, 1, rng.choice([2, 3, 4], size=rows, p=[0.5, 0.3, 0.2])],
        rng.integers(1, 4, size=rows),
    )
    # A random permutation per row; its first `count` faults are active.
    order = np.argsort(rng.random((rows, N_FAULTS)), axis=1)
    active = np.zeros((rows, N_FAULTS), dtype=bool)
    np.put_along_axis(active, order, np.arange(N_FAULTS) < count[:, None], axis=1)
    low = np.where(kind == 3, 70.0, 0.0)[:, None]
    level = rng.uniform(low, 100.0, size=(rows, N_FAULTS))
    return np.where(active, level, 0.0)


def generate(rows: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """X (rows, 35) as the sensor reports it (quantised) and Y (rows, 8), both float64."""
    rng = np.random.default_rng(seed)
    y = np.round(sample_faults(rows, rng), 3)
    x = quantize(simulate(y, rng))
    return x, y


def write_csv(path: str | Path, rows: int, seed: int = 0, start: datetime = DEFAULT_START,
              interval_s: float = 60.0) -> Path:
    """Write `generate(rows, seed)` with data.csv's exact header and number formatting."""
    x, y = generate(rows, seed)
    path = Path(path)
    step = timedelta(seconds=interval_s)
    with path.open("w", newline="") as fh:
        out = csv.writer(fh, lineterminator="\n")
        out.writerow(HEADER)
        for i in range(rows):
            t = (start + i * step).strftime(TIME_FORMAT)
            out.writerow([t, *map(repr, x[i].tolist()), *map(repr, y[i].tolist())])
    return path


def read_csv(path: str | Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Times, X and Y of a file in data.csv's format (header checked by name)."""
    with Path(path).open(newline="") as fh:
        reader = csv.DictReader(fh)
        missing = set(HEADER) - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path}: missing columns {sorted(missing)}")
        rows = list(reader)
    x = np.array([[float(r[k]) for k in FEATURES] for r in rows]).reshape(-1, len(FEATURES))
    y = np.array([[float(r[k]) for k in FAULTS] for r in rows]).reshape(-1, len(FAULTS))
    return [r["Time"] for r in rows], x, y


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="fdedge dataset",
        description="Write a simulated training set in FD-REST's data.csv format.")
    parser.add_argument("--rows", type=int, default=60000, help="number of readings (default 60000)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--out", default="simulated.csv", help="output CSV path (default simulated.csv)")
    parser.add_argument("--start", default=DEFAULT_START.strftime(TIME_FORMAT),
                        help="time of the first row, UTC 'YYYY-MM-DD HH:MM:SS'")
    parser.add_argument("--interval", type=float, default=60.0, help="seconds between rows (default 60)")
    args = parser.parse_args(argv)
    if args.rows < 1:
        parser.error("--rows must be positive")
    try:
        start = datetime.strptime(args.start, TIME_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        parser.error(f"--start must look like {DEFAULT_START.strftime(TIME_FORMAT)!r}")
    path = write_csv(args.out, args.rows, args.seed, start, args.interval)
    print(f"wrote {args.rows} rows to {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
