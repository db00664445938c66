"""Counting readings over days, optionally at or above a threshold, from the rollups.

Why: /api/count and the report's "is there anything to export" read every row of the range (30
days, 2.5M rows). A threshold on the largest fault that is a multiple of 0.5 is answered from the
hours' peak histograms alone. Otherwise an hour bucket whose largest value is below the threshold holds no
match, one whose smallest is at or above it holds `n`; only buckets the threshold cuts through are
looked at closer, minute buckets first, raw rows of single minutes last."""

from __future__ import annotations

import sqlite3

import numpy as np

from edge.fdrest import FAULTS
from edge.store import rollups
from edge.store.rollups import DATA_COLUMNS, DTYPE, FLEET, HIST_DTYPE, N, epoch_text, table

MAX_FAULT_SQL = f"max({', '.join(FAULTS)})"
FLOAT32_MARGIN = 1e-6  # stats are float32: a bound this close to the threshold is looked at closer


def count(conn: sqlite3.Connection, raw_table: str, t0: int, t1: int, machine: str | None,
          threshold: float | None, fault: str | None, first_only: bool = False) -> int:
    """Readings with time in [t0, t1) (epoch seconds, whole hours) of `machine` (None: all), with
    `fault` (None: the largest fault) >= `threshold` (None: every reading). `first_only`: stop
    at the first match (answers 0 or more).

    Buckets the threshold cuts through are counted from raw rows, adjacent ones in one range: a
    threshold inside every bucket costs one indexed range scan, as without rollups."""
    conn.execute("BEGIN")  # one snapshot: the stored buckets and the row id they cover agree
    try:
        return _count(conn, raw_table, t0, t1, machine, threshold, fault, first_only)
    finally:
        conn.execute("COMMIT")


def _count(conn: sqlite3.Connection, raw_table: str, t0: int, t1: int, machine: str | None,
           threshold: float | None, fault: str | None, first_only: bool) -> int:
    after = rollups.covered(conn)
    where, args = rollups.tail_where(after, epoch_text(t0), epoch_text(t1), machine, end_inclusive=False)
    if threshold is not None:
        where += f" AND {fault or MAX_FAULT_SQL} >= ?"
        args.append(threshold)
    # the newest readings, not in the stored buckets yet
    found = conn.execute(f"SELECT count(*) FROM {raw_table} NOT INDEXED WHERE {where}", args).fetchall()[0][0]
    if first_only and found:
        return found
    straddled: list[tuple[int, int]] = []  # [start, end) ranges left for raw rows
    for bucket, n, lo, hi, hist in _buckets(conn, "hour", machine, t0, t1, fault, threshold):
        verdict = None if hist is None or threshold is None else rollups.at_or_above(hist, threshold)
        if verdict is None:
            verdict = _verdict(n, lo, hi, threshold, fault)
        if verdict is None:
            for b, k, low, high, _ in _buckets(conn, "minute", machine, bucket, bucket + 3600, fault, None):
                minute = _verdict(k, low, high, threshold, fault)
                if minute is None:
                    _extend(straddled, b, b + 60)
                else:
                    found += minute
        else:
            found += verdict
        if first_only and found:
            return found
    for start, end in straddled:
        found += _raw(conn, raw_table, start, end, machine, threshold, fault, after)
        if first_only and found:
            break
    return found


def _verdict(n: int, lo: float, hi: float, threshold: float | None, fault: str | None) -> int | None:
    """Matches in a bucket from its bounds, or None when the threshold lies between them."""
    if threshold is None:
        return n
    margin = abs(threshold) * FLOAT32_MARGIN if fault else 0.0
    if hi < threshold - margin:
        return 0
    if lo >= threshold + margin:
        return n
    return None


def _extend(ranges: list[tuple[int, int]], start: int, end: int) -> None:
    if ranges and ranges[-1][1] == start:
        ranges[-1] = (ranges[-1][0], end)
    else:
        ranges.append((start, end))


def _raw(conn: sqlite3.Connection, raw_table: str, start: int, end: int, machine: str | None,
         threshold: float | None, fault: str | None, covered: int) -> int:
    """Matches among the stored buckets' rows (the tail is counted apart)."""
    where = f"time >= ? AND time < ? AND {fault or MAX_FAULT_SQL} >= ? AND id <= ?"
    args: list = [epoch_text(start), epoch_text(end), threshold, covered]
    if machine:
        where += " AND machine = ?"
        args.append(machine)
    return conn.execute(f"SELECT count(*) FROM {raw_table} WHERE {where}", args).fetchall()[0][0]


def _buckets(conn: sqlite3.Connection, level: str, machine: str | None, t0: int, t1: int,
             fault: str | None, threshold: float | None
             ) -> list[tuple[int, int, float, float, np.ndarray | None]]:
    """(bucket, n, lower bound, upper bound, peak histogram or None) of the value the threshold
    applies to; the histogram only where it can answer (hours, the largest fault)."""
    if fault is None:
        wanted = level == "hour" and threshold is not None
        rows = conn.execute(f"SELECT bucket, n, peak_min, peak_max, {'peaks' if wanted else 'NULL'} "
                            f"FROM {table(level)} WHERE machine = ? AND bucket >= ? AND bucket < ? ORDER BY bucket",
                            (machine or FLEET, t0, t1)).fetchall()
        return [(b, n, lo, hi, None if h is None else np.frombuffer(h, HIST_DTYPE)) for b, n, lo, hi, h in rows]
    rows = conn.execute(f"SELECT bucket, n, stats FROM {table(level)} "
                        "WHERE machine = ? AND bucket >= ? AND bucket < ? ORDER BY bucket",
                        (machine or FLEET, t0, t1)).fetchall()
    i = DATA_COLUMNS.index(fault)
    out: list[tuple[int, int, float, float, np.ndarray | None]] = []
    for bucket, n, blob in rows:
        stats = np.frombuffer(blob, DTYPE)
        out.append((bucket, n, float(stats[i]), float(stats[N + i]), None))
    return out

