"""Read queries for the API and the live stream's catch-up.

Column names only ever come from edge.fdrest's constants, never from input; every value is a
bound parameter."""

from __future__ import annotations

import sqlite3
from datetime import datetime
from typing import Any

from edge.errors import BadRequest
from edge.fdrest import COLUMNS, FAULTS, FEATURES, format_time, iso
from edge.store.schema import SELECT_LIST, TABLE

METRICS: tuple[str, ...] = COLUMNS + FAULTS


def reading(row: tuple) -> dict[str, Any]:
    """A row in SELECT_LIST order as the API's reading object."""
    return {
        "id": row[0],
        "time": iso(row[1]),
        "machine": row[2],
        "features": dict(zip(FEATURES, row[3:38], strict=True)),
        "faults": dict(zip(FAULTS, row[38:46], strict=True)),
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


def history(conn: sqlite3.Connection, column: str, limit: int, machine: str | None) -> dict[str, list]:
    clause, args = machine_clause(machine)
    rows = conn.execute(f"SELECT time, {column} FROM {TABLE} WHERE 1 {clause} ORDER BY id DESC LIMIT ?",
                        (*args, limit)).fetchall()
    rows.reverse()
    return {"timestamps": [r[0] for r in rows], "values": [r[1] for r in rows]}


def machines(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    rows = conn.execute(f"SELECT machine, count(*), max(time) FROM {TABLE} GROUP BY machine ORDER BY machine"
                        ).fetchall()
    return [{"machine": m, "readings": n, "last_time": iso(t)} for m, n, t in rows]


def series(conn: sqlite3.Connection, start: datetime, end: datetime, columns: list[str],
           machine: str | None, points: int) -> dict[str, Any]:
    """Bucket the range in SQL (features averaged, faults at their bucket maximum, so a short
    alarm spike survives downsampling); a week at 1 Hz returns `points` rows, not 600,000."""
    if end <= start:
        raise BadRequest("end must be after start", field="end")
    span = (end - start).total_seconds()
    bucket = max(span / points, 0.001)
    aggregates = ", ".join(f"{'max' if c in FAULTS else 'avg'}({c})" for c in columns)
    clause, args = machine_clause(machine)
    start_text, end_text = format_time(start), format_time(end)
    rows = conn.execute(
        f"SELECT CAST((julianday(time) - julianday(?)) * 86400.0 / ? AS INTEGER) AS b, {aggregates} "
        f"FROM {TABLE} WHERE time >= ? AND time <= ? {clause} GROUP BY b ORDER BY b",
        (start_text, bucket, start_text, end_text, *args)).fetchall()
    t0 = start.timestamp()
    return {
        "start": start.isoformat().replace("+00:00", "Z"),
        "end": end.isoformat().replace("+00:00", "Z"),
        "bucket_seconds": bucket,
        "time": [round(t0 + (r[0] + 0.5) * bucket, 3) for r in rows],
        "series": {c: [r[i + 1] for r in rows] for i, c in enumerate(columns)},
    }
