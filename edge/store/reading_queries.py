"""Read queries. Column names only ever come from edge.fdrest's constants, never from input;
every value is a bound parameter."""

from __future__ import annotations

import csv
import io
import math
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import orjson

from edge.alarms.engine import alarm_columns_sql
from edge.errors import BadRequest
from edge.fdrest import COLUMNS, FAULTS, FEATURES
from edge.ingest.bodies import format_time
from edge.store.database import SELECT_LIST, TABLE

METRICS: tuple[str, ...] = COLUMNS + FAULTS
MAX_FAULT_SQL = f"max({', '.join(FAULTS)})"
EXPORT_HEADER: tuple[str, ...] = ("id", "time", *COLUMNS, *FAULTS, "max_fault", "machine", "alarms")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\n")


def iso(stored: str | None) -> str | None:
    """Stored `YYYY-MM-DD HH:MM:SS` (UTC) -> ISO 8601 with Z for JSON clients."""
    if not stored:
        return stored
    return stored.replace(" ", "T", 1) + ("" if stored.endswith("Z") or "+" in stored else "Z")


def reading(row: tuple) -> dict[str, Any]:
    """A row in SELECT_LIST order as the API's reading object."""
    return {
        "id": row[0],
        "time": iso(row[1]),
        "machine": row[2],
        "features": dict(zip(FEATURES, row[3:38])),
        "faults": dict(zip(FAULTS, row[38:46])),
    }


# The shapes of a reading in GET /events (`?shape=`): "objects" is the reading object above,
# "arrays" names nothing per reading, `{"id", "time", "machine", "x": [35 features], "y": [8 faults]}`
# in FD-REST order (edge.fdrest.FEATURES, FAULTS), which the stream's hello event lists.
SHAPES: tuple[str, ...] = ("objects", "arrays")  # the first is the default


def reading_json(shape: str, id_: int, time: str, machine: str, x, y) -> bytes:
    """A reading in `shape` as JSON bytes; `time` already ISO 8601 (see `iso`), x and y the stored
    values in FD-REST order (lists or tuples)."""
    if shape == "arrays":
        return orjson.dumps({"id": id_, "time": time, "machine": machine, "x": x, "y": y})
    return orjson.dumps({"id": id_, "time": time, "machine": machine,
                         "features": dict(zip(FEATURES, x)), "faults": dict(zip(FAULTS, y))})


def row_json(shape: str, row: tuple) -> bytes:
    """A row in SELECT_LIST order as `reading_json`: the same bytes the live stream sends."""
    return reading_json(shape, row[0], iso(row[1]), row[2], row[3:38], row[38:46])


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
    rows = conn.execute(f"SELECT machine, count(*), max(time) FROM {TABLE} GROUP BY machine ORDER BY machine").fetchall()
    return [{"machine": m, "readings": n, "last_time": iso(t)} for m, n, t in rows]


# -- report / export -----------------------------------------------------------------------------

@dataclass(frozen=True)
class ReportFilter:
    """FD-REST's export filter: dates inclusive at both ends, optional threshold on the largest
    fault (or on one fault), optional machine."""

    start: date
    end: date
    threshold: float | None = None
    fault: str | None = None
    machine: str | None = None

    @classmethod
    def parse(cls, params: dict[str, str]) -> ReportFilter:
        start, end = _date(params, "start"), _date(params, "end")
        if end < start:
            raise BadRequest("end date is before start date", field="end")
        threshold = params.get("threshold")
        value: float | None = None
        if threshold not in (None, ""):
            try:
                value = float(threshold)
            except ValueError:
                value = math.nan
            if not math.isfinite(value):
                raise BadRequest(f"threshold must be a number, got {threshold[:40]!r}", field="threshold")
        fault = params.get("fault") or None
        if fault is not None and fault not in FAULTS:
            raise BadRequest(f"unknown fault {fault[:40]!r}", field="fault", valid=list(FAULTS))
        return cls(start, end, value, fault, params.get("machine") or None)

    def where(self) -> tuple[str, tuple]:
        sql = "time >= ? AND time < ?"
        args: list[Any] = [self.start.isoformat(), _day_after(self.end)]
        if self.threshold is not None:
            sql += f" AND {self.fault or MAX_FAULT_SQL} >= ?"
            args.append(self.threshold)
        if self.machine:
            sql += " AND machine = ?"
            args.append(self.machine)
        return sql, tuple(args)


def _day_after(day: date) -> str:
    """Exclusive upper bound of a day as stored text; 9999-12-31 has no next day, so its bound is
    a text after every time of that day ('~' sorts after ' ', 'T' and digits)."""
    return (day + timedelta(days=1)).isoformat() if day < date.max else day.isoformat() + "~"


def _date(params: dict[str, str], key: str) -> date:
    text = params.get(key)
    if not text:
        raise BadRequest(f"{key} date is required (YYYY-MM-DD)", field=key)
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise BadRequest(f"{key} must be a date like 2023-11-06, got {text[:40]!r}", field=key) from None


def count(conn: sqlite3.Connection, flt: ReportFilter) -> int:
    where, args = flt.where()
    return conn.execute(f"SELECT count(*) FROM {TABLE} WHERE {where}", args).fetchone()[0]


def first_match(conn: sqlite3.Connection, flt: ReportFilter) -> bool:
    where, args = flt.where()
    return conn.execute(f"SELECT 1 FROM {TABLE} WHERE {where} LIMIT 1", args).fetchone() is not None


def safe_cell(value: Any) -> Any:
    """Text a spreadsheet would run as a formula gets a leading apostrophe (OWASP CSV injection).

    A bare CR inside a text cell would be written unquoted (the writer's line end is "\n") and a
    spreadsheet would start a new row there, whose first cell escapes this check: line breaks in
    text become "\n", which the writer quotes."""
    if isinstance(value, str):
        if "\r" in value:
            value = value.replace("\r\n", "\n").replace("\r", "\n")
        if value.startswith(_FORMULA_START):
            return "'" + value
    return value


def export_csv(conn: sqlite3.Connection, flt: ReportFilter, chunk_rows: int = 2000) -> Iterator[str]:
    """Stream CSV text in chunks: memory stays constant however many rows match."""
    where, args = flt.where()
    cursor = conn.execute(
        f"SELECT id, time, {', '.join(COLUMNS)}, {', '.join(FAULTS)}, {MAX_FAULT_SQL}, machine, "
        f"{alarm_columns_sql(TABLE)} "
        f"FROM {TABLE} WHERE {where} ORDER BY time, id", args)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(EXPORT_HEADER)
    while True:
        rows = cursor.fetchmany(chunk_rows)
        if not rows:
            break
        for row in rows:
            writer.writerow([safe_cell(v) for v in row])
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
    rest = buffer.getvalue()
    if rest:
        yield rest


# -- downsampled series for charts -------------------------------------------------------------------

def parse_instant(text: str | None, key: str, default: datetime) -> datetime:
    if not text:
        return default
    value = text.strip()
    try:
        if value.replace(".", "", 1).isdigit():
            return datetime.fromtimestamp(float(value), UTC)
        if value.endswith(("Z", "z")):
            value = value[:-1] + "+00:00"
        dt = datetime.fromisoformat(value)
        # in UTC, as every time the API returns; an offset can push year 1 or 9999 out of range
        return dt.astimezone(UTC) if dt.tzinfo else dt.replace(tzinfo=UTC)
    except (ValueError, OverflowError, OSError):
        raise BadRequest(f"{key} must be ISO 8601 or epoch seconds, got {text[:40]!r}", field=key) from None


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
