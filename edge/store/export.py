"""FD-REST's report: the export filter, the matching row count, and the streamed CSV.

Cells a spreadsheet would run as formulas are neutralised here (OWASP CSV injection)."""

from __future__ import annotations

import csv
import io
import math
import re
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson

from edge.alarms.tables import alarm_columns_sql
from edge.errors import BadRequest
from edge.fdrest import COLUMNS, FAULTS, format_time
from edge.store import counts, rollups
from edge.store.counts import MAX_FAULT_SQL
from edge.store.schema import TABLE

# FD-REST's columns first and unchanged (then FD-Edge's machine and alarms); model_version: the store
# version that scored the row (empty for rows stored before FD-Edge kept it); the data-quality verdict
# (edge.scoring.quality) after them, so a client reading columns by position keeps working.
QUALITY_HEADER: tuple[str, ...] = ("quality", "quality_score", "quality_reasons")
EXPORT_HEADER: tuple[str, ...] = ("id", "time", *COLUMNS, *FAULTS, "max_fault", "machine", "alarms", "model_version",
                                  *QUALITY_HEADER)
QUALITY_SQL = ("CASE quality_status WHEN 0 THEN 'ok' WHEN 1 THEN 'suspect' WHEN 2 THEN 'invalid' "
               "ELSE 'unknown' END, quality_score, quality_reasons")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\n")
_MACHINE = EXPORT_HEADER.index("machine")
_REASONS = EXPORT_HEADER.index("quality_reasons")
_TEXT_CELLS = (1, _MACHINE, EXPORT_HEADER.index("alarms"), EXPORT_HEADER.index("model_version"), _REASONS)


# Text the csv module would quote, or that needs neutralising: such a row takes the slow path.
_NEEDS_CARE = re.compile(r'[,"\r\n]|^[=+\-@\t]')
# orjson writes what repr() writes for every float except below 1e-04: positional down to 1e-09
# (0.00001 for 1e-05), then one exponent digit (1e-7 for 1e-07); non-finite ones are null.
# Strings and NULLs (FD-REST files) show as quotes and null.
_NOT_AS_REPR = (b"0.0000", b"e-", b"null", b'"')


def _unsafe(value: Any) -> bool:
    return isinstance(value, str) and (value.startswith(_FORMULA_START) or "\r" in value)


def format_rows(rows: list[tuple], writer: Any, buffer: io.StringIO) -> str:
    """The CSV text of `rows`, byte for byte what `csv.writer` writes after `safe_cell`.

    Python's float repr is most of an export's cost (44 numbers a row, 40k rows/s); orjson writes
    the same digits for nearly every value 4x faster, so a row whose numbers and texts need no
    care goes out that way and only the others through the csv module."""
    dumps, care, lines = orjson.dumps, _NEEDS_CARE.search, []
    for row in rows:
        numbers = dumps(row[2:_MACHINE])
        when, machine, alarms, version = row[1], row[_MACHINE], row[_MACHINE + 1], row[_MACHINE + 2]
        status, score, reasons = row[_MACHINE + 3:_MACHINE + 6]
        if (type(when) is str and type(machine) is str and type(alarms) is str and type(version) is str
                and reasons is None and (score is None or type(score) is float)
                and not any(bad in numbers for bad in _NOT_AS_REPR)
                and not (care(when) or care(machine) or care(alarms) or care(version))):
            lines.append(f"{row[0]},{when},{numbers[1:-1].decode()},{machine},{alarms},{version},{status},"
                         f"{'' if score is None else repr(score)},\n")
            continue
        if str in map(type, row[2:_MACHINE]) or any(_unsafe(row[i]) for i in _TEXT_CELLS):
            row = tuple(safe_cell(v) for v in row)
        writer.writerow(row)
        lines.append(buffer.getvalue())
        buffer.seek(0)
        buffer.truncate()
    return "".join(lines)


@dataclass(frozen=True)
class ReportFilter:
    """FD-REST's export filter: dates inclusive at both ends, optional threshold on the largest
    fault (or on one fault), optional machine. `zone`: the days are that zone's (None: UTC, as
    FD-REST's); `offset`: times written as ISO 8601 with their offset in it (else FD-REST's text)."""

    start: date
    end: date
    threshold: float | None = None
    fault: str | None = None
    machine: str | None = None
    zone: ZoneInfo | None = None
    offset: bool = False

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
        offset = params.get("offset") or "0"
        if offset not in ("0", "1"):
            raise BadRequest(f"offset must be 1 (ISO 8601 times with their offset) or 0, got {offset[:40]!r}",
                             field="offset")
        return cls(start, end, value, fault, params.get("machine") or None, _zone(params.get("tz")), offset == "1")

    def bounds(self) -> tuple[str, str]:
        """[start, end) as stored text: the first day's midnight and the one after the last day's."""
        if self.zone is None:
            return self.start.isoformat(), _day_after(self.end)
        end = _zoned_bound(self.end + timedelta(days=1), self.zone) if self.end < date.max else _day_after(self.end)
        return _zoned_bound(self.start, self.zone), end

    def where(self) -> tuple[str, tuple]:
        sql = "time >= ? AND time < ?"
        args: list[Any] = list(self.bounds())
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


def _zone(name: str | None) -> ZoneInfo | None:
    """The `tz` parameter: an IANA zone (None for none, or for UTC itself: FD-REST's days)."""
    if not name or name in ("UTC", "Etc/UTC"):
        return None
    try:
        if len(name) > 64:
            raise ValueError(name)
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise BadRequest(f"tz must be an IANA time zone like Europe/Berlin or America/New_York, got {name[:40]!r}",
                         field="tz") from None


def _zoned_bound(day: date, zone: ZoneInfo) -> str:
    """Midnight starting `day` in `zone`, as stored text (UTC); a day too far out to convert keeps
    its date as the bound, as without a zone."""
    try:
        return format_time(datetime.combine(day, time(), zone).astimezone(UTC))
    except (OverflowError, ValueError):
        return day.isoformat()


def _hours(flt: ReportFilter) -> tuple[int, int] | None:
    """The filter's days as epoch seconds, when the rollups can answer for them (whole hours: a
    zone such as UTC+05:30 is counted from raw rows)."""
    if flt.end >= date.max:
        return None
    zone = flt.zone or UTC
    try:
        start = int(datetime.combine(flt.start, time(), zone).timestamp())
        end = int(datetime.combine(flt.end + timedelta(days=1), time(), zone).timestamp())
    except (OverflowError, ValueError):
        return None
    if start % 3600 or end % 3600:
        return None
    return start, end


def count(conn: sqlite3.Connection, flt: ReportFilter) -> int:
    hours = _hours(flt)
    if hours is not None and rollups.ready(conn):
        return counts.count(conn, TABLE, *hours, flt.machine, flt.threshold, flt.fault)
    where, args = flt.where()
    return conn.execute(f"SELECT count(*) FROM {TABLE} WHERE {where}", args).fetchone()[0]


def first_match(conn: sqlite3.Connection, flt: ReportFilter) -> bool:
    hours = _hours(flt)
    if hours is not None and rollups.ready(conn):
        return counts.count(conn, TABLE, *hours, flt.machine, flt.threshold, flt.fault, first_only=True) > 0
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
    """Stream CSV text in chunks: memory stays constant however many rows match.

    Each chunk is its own query, continuing after the last (time, id) sent, so no read snapshot
    is held while the client takes its time: a snapshot held open keeps every later commit in the
    WAL (a stalled export grew it by 46 MB while 40,000 readings came in)."""
    where, args = flt.where()
    select = (f"SELECT id, time, {', '.join(COLUMNS)}, {', '.join(FAULTS)}, {MAX_FAULT_SQL}, machine, "
              f"{alarm_columns_sql(TABLE)}, coalesce(model_version, ''), {QUALITY_SQL} FROM {TABLE} WHERE {where}")
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(EXPORT_HEADER)
    rows = conn.execute(f"{select} ORDER BY time, id LIMIT ?", (*args, chunk_rows)).fetchall()
    header = buffer.getvalue()
    buffer.seek(0)
    buffer.truncate()
    zone = (flt.zone or UTC) if flt.offset else None
    while rows:
        # the next chunk continues after the stored (time, id), so only the text written is zoned
        yield header + format_rows(rows if zone is None else _with_offsets(rows, zone), writer, buffer)
        header = ""
        if len(rows) < chunk_rows:
            break
        last_id, last_time = rows[-1][0], rows[-1][1]
        rows = conn.execute(f"{select} AND (time, id) > (?, ?) ORDER BY time, id LIMIT ?",
                            (*args, last_time, last_id, chunk_rows)).fetchall()
    if header:
        yield header


def _with_offsets(rows: list[tuple], zone: ZoneInfo | Any) -> list[tuple]:
    """`rows` with each stored time (UTC text) as ISO 8601 with its offset in `zone`:
    2026-12-04 20:05:00 -> 2026-12-04T21:05:00+01:00. Text that is not a time is kept."""
    out = []
    for row in rows:
        when = row[1]
        try:
            when = datetime.fromisoformat(when).replace(tzinfo=UTC).astimezone(zone).isoformat()
        except (TypeError, ValueError, OverflowError):
            pass
        out.append((row[0], when, *row[2:]))
    return out
