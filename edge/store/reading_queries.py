"""Read queries for the API and the live stream's catch-up.

Column names only ever come from edge.fdrest's constants, never from input; every value is a
bound parameter."""

from __future__ import annotations

import sqlite3
from datetime import datetime
from typing import Any

import numpy as np

from edge.errors import BadRequest
from edge.fdrest import COLUMNS, FAULTS, FEATURES, format_time, iso
from edge.scoring.quality import as_json
from edge.store import machine_state, rollups
from edge.store.schema import QUALITY_AT, SELECT_LIST, TABLE

METRICS: tuple[str, ...] = COLUMNS + FAULTS


def reading(row: tuple) -> dict[str, Any]:
    """A row in SELECT_LIST order as the API's reading object."""
    return {
        "id": row[0],
        "time": iso(row[1]),
        "machine": row[2],
        "features": dict(zip(FEATURES, row[3:38], strict=True)),
        "faults": dict(zip(FAULTS, row[38:46], strict=True)),
        "model_version": row[46],
        "quality": as_json(*row[QUALITY_AT:QUALITY_AT + 3]),
    }


def metric(name: str | None) -> str:
    """Map a user-supplied metric to our own column constant (the injection guard)."""
    for column in METRICS:
        if name == column:
            return column
    raise BadRequest(f"unknown metric {name!r}", valid=list(METRICS))


def machine_clause(machine: str | None) -> tuple[str, tuple]:
    return ("AND machine = ?", (machine,)) if machine else ("", ())


def max_id(conn: sqlite3.Connection) -> int:
    return conn.execute(f"SELECT coalesce(max(id), 0) FROM {TABLE}").fetchone()[0]


def rows_after(conn: sqlite3.Connection, last_id: int, machine: str | None, limit: int) -> list[tuple]:
    clause, args = machine_clause(machine)
    return conn.execute(f"SELECT {SELECT_LIST} FROM {TABLE} WHERE id > ? {clause} ORDER BY id LIMIT ?",
                        (last_id, *args, limit)).fetchall()


def latest(conn: sqlite3.Connection, machine: str | None, limit: int) -> list[dict[str, Any]]:
    clause, args = machine_clause(machine)
    rows = conn.execute(f"SELECT {SELECT_LIST} FROM {TABLE} WHERE 1 {clause} ORDER BY id DESC LIMIT ?",
                        (*args, limit)).fetchall()
    return [reading(r) for r in rows]


def reading_by_id(conn: sqlite3.Connection, reading_id: int) -> list[dict[str, Any]]:
    rows = conn.execute(f"SELECT {SELECT_LIST} FROM {TABLE} WHERE id = ?", (reading_id,)).fetchall()
    return [reading(r) for r in rows]


def history(conn: sqlite3.Connection, column: str, limit: int, machine: str | None) -> dict[str, list]:
    clause, args = machine_clause(machine)
    rows = conn.execute(f"SELECT time, {column} FROM {TABLE} WHERE 1 {clause} ORDER BY id DESC LIMIT ?",
                        (*args, limit)).fetchall()
    rows.reverse()
    return {"timestamps": [r[0] for r in rows], "values": [r[1] for r in rows]}


_FEATURE_LIST = ", ".join(COLUMNS)


def recent_features(conn: sqlite3.Connection, machine: str, limit: int) -> np.ndarray:
    """The machine's newest `limit` readings' 35 features (FD-REST order), newest first; by the
    (machine, id) index, so it costs the window whatever the history. NULLs (FD-REST rows) are NaN."""
    rows = conn.execute(f"SELECT {_FEATURE_LIST} FROM {TABLE} WHERE machine = ? ORDER BY id DESC LIMIT ?",
                        (machine, limit)).fetchall()
    return np.array(rows, dtype=np.float64).reshape(-1, len(COLUMNS))


def last_ids(conn: sqlite3.Connection) -> dict[str, int]:
    """Each machine's newest row id, from the kept per-machine table (no scan of the readings)."""
    return dict(conn.execute(f"SELECT name, last_id FROM {machine_state.MACHINES}").fetchall())


def machines(conn: sqlite3.Connection, stale_after: float = 0.0) -> list[dict[str, Any]]:
    return machine_state.listing(conn, stale_after)


def series(conn: sqlite3.Connection, start: datetime, end: datetime, columns: list[str],
           machine: str | None, points: int) -> dict[str, Any]:
    """At most `points` buckets over the range: features averaged, faults at their bucket maximum
    (a short alarm spike survives downsampling), and each column's min and max for an envelope.

    Read from raw rows while a bucket is under a minute, else from the coarsest rollup that
    fits (edge.store.rollups): 90 days cost 2,160 hour rows, not millions of readings."""
    if end <= start:
        raise BadRequest("end must be after start", field="end")
    span = (end - start).total_seconds()
    bucket = max(span / points, 0.001)
    level = rollups.level_for(bucket)
    if level is not None and not rollups.ready(conn):
        level = None  # the backfill of an older database is still running: raw rows are right
    t0 = start.timestamp()
    if level is None:
        times, mean, low, high = _raw_series(conn, start, end, columns, machine, bucket)
    else:
        times, mean, low, high = _rollup_series(conn, level, t0, end.timestamp(), columns, machine, bucket)
    return {
        "start": start.isoformat().replace("+00:00", "Z"),
        "end": end.isoformat().replace("+00:00", "Z"),
        "bucket_seconds": bucket,
        "resolution": level or "raw",
        "time": [round(t0 + (k + 0.5) * bucket, 3) for k in times],
        "series": dict(zip(columns, mean, strict=True)),
        "min": dict(zip(columns, low, strict=True)),
        "max": dict(zip(columns, high, strict=True)),
    }


def _raw_series(conn: sqlite3.Connection, start: datetime, end: datetime, columns: list[str],
                machine: str | None, bucket: float) -> tuple[list[int], list[list], list[list], list[list]]:
    aggregates = ", ".join(f"{'max' if c in FAULTS else 'avg'}({c}), min({c}), max({c})" for c in columns)
    clause, args = machine_clause(machine)
    start_text, end_text = format_time(start), format_time(end)
    rows = conn.execute(
        f"SELECT CAST((julianday(time) - julianday(?)) * 86400.0 / ? AS INTEGER) AS b, {aggregates} "
        f"FROM {TABLE} WHERE time >= ? AND time <= ? {clause} GROUP BY b ORDER BY b",
        (start_text, bucket, start_text, end_text, *args)).fetchall()
    k = len(columns)
    return ([r[0] for r in rows], [[r[1 + 3 * i] for r in rows] for i in range(k)],
            [[r[2 + 3 * i] for r in rows] for i in range(k)], [[r[3 + 3 * i] for r in rows] for i in range(k)])


def _rollup_series(conn: sqlite3.Connection, level: str, t0: float, t1: float, columns: list[str],
                   machine: str | None, bucket: float) -> tuple[list[int], list[list], list[list], list[list]]:
    starts, counts, stats = rollups.read(conn, TABLE, level, machine, t0, t1)
    if not len(starts):
        return [], [[] for _ in columns], [[] for _ in columns], [[] for _ in columns]
    keys = np.maximum(np.floor((starts - t0) / bucket), 0).astype(np.int64)
    edges = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    n = rollups.N
    idx = [rollups.DATA_COLUMNS.index(c) for c in columns]
    low = np.minimum.reduceat(stats[:, idx], edges, axis=0)
    high = np.maximum.reduceat(stats[:, [n + i for i in idx]], edges, axis=0)
    weighted = np.add.reduceat(stats[:, [2 * n + i for i in idx]] * counts[:, None], edges, axis=0)
    mean = weighted / np.add.reduceat(counts, edges)[:, None]
    shown = np.where([c in FAULTS for c in columns], high, mean)
    return (keys[edges].tolist(), _columns(shown), _columns(low), _columns(high))


def _columns(values: np.ndarray) -> list[list]:
    """Columns as JSON lists, NaN (a legacy NULL) as null."""
    return [[None if v != v else v for v in col] for col in values.T.tolist()]


def storage(conn: sqlite3.Connection) -> dict[str, Any]:
    """The database's side of /api/storage: its pages, what retention freed, the rollups' state."""
    page = conn.execute("PRAGMA page_size").fetchone()[0]
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    free = conn.execute("PRAGMA freelist_count").fetchone()[0]
    vacuum = {0: "none", 1: "full", 2: "incremental"}.get(conn.execute("PRAGMA auto_vacuum").fetchone()[0], "?")
    following, end = rollups.backfill_state(conn)
    return {"page_bytes": page, "pages": pages, "free_pages": free, "auto_vacuum": vacuum,
            "rollups": {"ready": following > end, "backfill_next_id": following, "backfill_end_id": end},
            "readings": machine_state.total_readings(conn)}


def newest_rows(conn: sqlite3.Connection) -> dict[str, dict[str, Any]]:
    """Each machine's newest reading, by the row id fdedge_machines keeps (one primary-key read
    per machine): the fleet overview's one request instead of one per machine."""
    rows = conn.execute(f"SELECT {SELECT_LIST} FROM {TABLE} WHERE id IN "
                        f"(SELECT last_id FROM {machine_state.MACHINES})").fetchall()
    return {r[2]: reading(r) for r in rows}
