"""`GET /generate_csv?labelled=1`: the labelled readings as training data, in FD-REST's data.csv
format (Time, the 35 features, fault0..fault7), the file `fdedge train --csv` takes.

The fault columns are the targets the labels say, not what the model predicted, except where a
label keeps the prediction (docs/API.md, "Labels"):
- a time-range label of fault F at intensity I: F = I, every other fault 0 ("healthy": all 0);
- an alarm labelled false_alarm: the alarm's fault 0, the other faults as stored;
- confirmed or maintenance_done: the stored intensities, the alarm's fault replaced by the
  label's intensity when a confirmed label gives one.
A reading under several labels takes the newest (highest id). Unlabelled readings are left out.
Streamed in chunks, each its own query (as edge.store.export), so memory stays flat.
"""

from __future__ import annotations

import csv
import io
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass

from edge.fdrest import COLUMNS, FAULTS, FEATURES
from edge.store.labels import LABELS_OVERLAPPING
from edge.store.schema import TABLE

HEADER = ("Time", *FEATURES, *FAULTS)
EVERY = 2**62
_N = len(COLUMNS)


@dataclass(frozen=True)
class Span:
    id: int
    start: str
    end: str
    fault: str
    intensity: float | None
    verdict: str | None  # None: a time-range label

    def targets(self, stored: tuple[float, ...]) -> list[float]:
        i = FAULTS.index(self.fault) if self.fault in FAULTS else None
        if self.verdict is None:
            out = [0.0] * len(FAULTS)
            if i is not None:
                out[i] = float(self.intensity or 0.0)
            return out
        out = [float(v) for v in stored]
        if self.verdict == "false_alarm":
            out[i] = 0.0  # type: ignore[index]
        elif self.intensity is not None:
            out[i] = self.intensity  # type: ignore[index]
        return out


def spans(conn: sqlite3.Connection, machine: str | None, start: str | None, end: str | None) -> dict[str, list[Span]]:
    """Each machine's label spans overlapping [start, end], clipped to it."""
    rows = conn.execute(LABELS_OVERLAPPING, (machine, machine, None, None, start, start, end, end, EVERY)).fetchall()
    out: dict[str, list[Span]] = {}
    for label_id, _, _, _, name, fault, intensity, s, e, _, verdict in rows:
        s, e = max(s, start) if start else s, min(e, end) if end else e
        out.setdefault(name, []).append(Span(label_id, s, e, fault, intensity, verdict))
    return out


def _merged(found: list[Span]) -> list[tuple[str, str]]:
    out: list[list[str]] = []
    for s in sorted(found, key=lambda x: x.start):
        if out and s.start <= out[-1][1]:
            out[-1][1] = max(out[-1][1], s.end)
        else:
            out.append([s.start, s.end])
    return [(a, b) for a, b in out]


READINGS_IN_SPAN = (f"SELECT id, time, {', '.join(COLUMNS)}, {', '.join(FAULTS)} FROM {TABLE} "
          "WHERE machine = ? AND time >= ? AND time <= ? AND (time, id) > (?, ?) ORDER BY time, id LIMIT ?")


def bounds(params: dict[str, str]) -> tuple[str | None, str | None, str | None]:
    """machine, and the optional start/end dates (inclusive) as stored-time bounds."""
    from edge.errors import BadRequest
    from edge.store.export import _date

    for key in ("threshold", "fault"):
        if params.get(key):
            raise BadRequest(f"{key} does not apply to the labelled export (labelled=1)", field=key)
    start = _date(params, "start").isoformat() if params.get("start") else None
    end = _date(params, "end").isoformat() + "~" if params.get("end") else None  # '~' sorts after any time
    if start and end and end < start:
        raise BadRequest("end date is before start date", field="end")
    return params.get("machine") or None, start, end


def first_match(conn: sqlite3.Connection, machine: str | None, start: str | None, end: str | None) -> bool:
    return any(True for _ in export_csv(conn, machine, start, end, chunk_rows=1, header=False))


def export_csv(conn: sqlite3.Connection, machine: str | None, start: str | None, end: str | None,
               chunk_rows: int = 2000, header: bool = True) -> Iterator[str]:
    """The CSV text in chunks: machine by machine, in time order within each."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    if header:
        writer.writerow(HEADER)
    for name, found in sorted(spans(conn, machine, start, end).items()):
        newest_first = sorted(found, key=lambda x: -x.id)
        for low, high in _merged(found):
            last_time, last_id = "", -1
            while True:
                rows = conn.execute(READINGS_IN_SPAN, (name, low, high, last_time, last_id, chunk_rows)).fetchall()
                for row in rows:
                    when = row[1]
                    span = next((s for s in newest_first if s.start <= when <= s.end), None)
                    features, stored = row[2:2 + _N], row[2 + _N:]
                    # a row another program stored with a missing value it would train on: left out
                    if span is None or None in features or (span.verdict is not None and None in stored):
                        continue
                    writer.writerow((when, *features, *span.targets(stored)))
                if buffer.tell():
                    yield buffer.getvalue()
                    buffer.seek(0)
                    buffer.truncate()
                if len(rows) < chunk_rows:
                    break
                last_time, last_id = rows[-1][1], rows[-1][0]
    if buffer.tell():
        yield buffer.getvalue()
