"""Operators' labels: what really happened on an alarm or in a time range of a machine.

Stored in `fdedge_labels` (created in place by edge.store.schema.migrate), written through the
writer thread, read by /api/labels and turned into training targets by edge.store.labelled_export.
A label either names an alarm (a verdict on it; its span is the alarm's, resolved when read, so a
label on an active alarm grows with it) or a machine's time range with a fault class and intensity.
"""

from __future__ import annotations

import math
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from edge.errors import BadRequest, NotFound
from edge.fdrest import FAULTS, MAX_MACHINE_LEN, format_time, iso, now_text
from edge.store.database import transaction

LABELS = "fdedge_labels"
VERDICTS = ("confirmed", "false_alarm", "maintenance_done")
HEALTHY = "healthy"
CLASSES = (*FAULTS, HEALTHY)
MAX_NOTE = 1000
MAX_BY = 100
MAX_ID = 2**63 - 1
ALARM_FIELDS = frozenset({"alarm", "verdict", "intensity", "note", "by"})
RANGE_FIELDS = frozenset({"machine", "start", "end", "fault", "intensity", "note", "by"})

DDL = (
    """CREATE TABLE IF NOT EXISTS fdedge_labels (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        created TEXT NOT NULL,
        labelled_by TEXT NOT NULL,
        note TEXT NOT NULL DEFAULT '',
        machine TEXT NOT NULL,
        fault TEXT NOT NULL,
        intensity REAL,
        start_time TEXT NOT NULL,
        end_time TEXT,
        alarm_id INTEGER,
        verdict TEXT,
        CHECK ((alarm_id IS NULL) = (verdict IS NULL)),
        CHECK (alarm_id IS NOT NULL OR end_time IS NOT NULL))""",
    "CREATE INDEX IF NOT EXISTS fdedge_labels_machine ON fdedge_labels(machine, start_time)",
    "CREATE UNIQUE INDEX IF NOT EXISTS fdedge_labels_alarm ON fdedge_labels(alarm_id) WHERE alarm_id IS NOT NULL",
)
KEYS = ("id", "created", "by", "note", "machine", "fault", "intensity", "start", "end", "alarm", "verdict")
# The alarm's span for alarm labels: its start, then its clear or, while active, the machine's newest reading.
SELECT = ('SELECT l.id, l.created, l.labelled_by, l.note, l.machine, l.fault, l.intensity, l.start_time, '
          'coalesce(l.end_time, a.cleared_at, m.last_time, l.start_time) AS end_time, l.alarm_id, l.verdict '
          'FROM fdedge_labels l '
          'LEFT JOIN fdedge_alarms a ON a.id = l.alarm_id LEFT JOIN fdedge_machines m ON m.name = l.machine')

LABEL_BY_ID = SELECT + " WHERE l.id = ?"
LABELS_OVERLAPPING = ("SELECT * FROM (" + SELECT + ") WHERE (? IS NULL OR machine = ?) AND (? IS NULL OR alarm_id = ?) "
                      "AND (? IS NULL OR end_time >= ?) AND (? IS NULL OR start_time <= ?) ORDER BY id DESC LIMIT ?")


def migrate(conn: sqlite3.Connection) -> None:
    """Inside edge.store.schema.migrate's transaction: an older file gets the table on first start."""
    for ddl in DDL:
        conn.execute(ddl)


@dataclass(frozen=True)
class Label:
    """A checked label, ready to store."""

    by: str
    note: str
    machine: str
    fault: str
    intensity: float | None
    start: str
    end: str | None
    alarm_id: int | None = None
    verdict: str | None = None


def _text(body: dict[str, Any], field: str, limit: int, required: bool) -> str:
    value = body.get(field)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value.strip()) or len(value) > limit:
        raise BadRequest(f"'{field}' must be a {'non-empty ' if required else ''}string of at most {limit} "
                         "characters", field=field)
    return value.strip()


def _intensity(body: dict[str, Any], required: bool) -> float | None:
    value = body.get("intensity")
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
            or not 0 <= value <= 100:
        raise BadRequest("'intensity' must be a number from 0 to 100", field="intensity")
    return float(value)


def _instant(body: dict[str, Any], field: str) -> str:
    """ISO 8601 (UTC without an offset) or epoch seconds, as the API's other times."""
    value = body.get(field)
    if isinstance(value, bool) or not isinstance(value, str | int | float) or value == "":
        raise BadRequest(f"'{field}' must be a time (ISO 8601 or epoch seconds)", field=field)
    text = str(value).strip()
    try:
        if text.replace(".", "", 1).isdigit():
            when = datetime.fromtimestamp(float(text), UTC)
        else:
            when = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text)
            when = when.astimezone(UTC) if when.tzinfo else when.replace(tzinfo=UTC)
    except (ValueError, OverflowError, OSError):
        raise BadRequest(f"'{field}' must be a time (ISO 8601 or epoch seconds), got {text[:40]!r}",
                         field=field) from None
    return format_time(when)


def parse(body: Any, named_by: str | None) -> Label:
    """The POST body checked field by field (the first wrong field named); `named_by` (a named
    token's name) wins over the body's "by"."""
    if not isinstance(body, dict):
        raise BadRequest('the body must be a JSON object: {"alarm", "verdict", ...} or {"machine", "start", '
                         '"end", "fault", "intensity", ...}')
    kind_fields = ALARM_FIELDS if "alarm" in body else RANGE_FIELDS
    unknown = sorted(set(body) - kind_fields)
    if unknown:
        raise BadRequest(f"unknown field {unknown[0][:40]!r} for a label on "
                         f"{'an alarm' if 'alarm' in body else 'a time range'}; valid fields: "
                         f"{', '.join(sorted(kind_fields))}", field=unknown[0][:40])
    note = _text(body, "note", MAX_NOTE, required=False)
    by = named_by or _text(body, "by", MAX_BY, required=True)
    if "alarm" in body:
        alarm = body["alarm"]
        if isinstance(alarm, bool) or not isinstance(alarm, int) or not 0 < alarm <= MAX_ID:
            raise BadRequest("'alarm' must be an alarm id (a positive integer)", field="alarm")
        verdict = body.get("verdict")
        if verdict not in VERDICTS:
            raise BadRequest(f"'verdict' must be one of {', '.join(VERDICTS)}", field="verdict", valid=list(VERDICTS))
        intensity = _intensity(body, required=False)
        if intensity is not None and verdict != "confirmed":
            raise BadRequest("'intensity' goes only with the verdict 'confirmed'", field="intensity")
        return Label(by, note, "", "", intensity, "", None, alarm, verdict)
    machine = body.get("machine")
    if not isinstance(machine, str) or not 0 < len(machine) <= MAX_MACHINE_LEN or not machine.isprintable():
        raise BadRequest(f"'machine' must be printable text of 1-{MAX_MACHINE_LEN} characters", field="machine")
    start, end = _instant(body, "start"), _instant(body, "end")
    if end < start:
        raise BadRequest("'end' is before 'start'", field="end")
    fault = body.get("fault")
    if fault not in CLASSES:
        raise BadRequest(f"'fault' must be one of {', '.join(CLASSES)}", field="fault", valid=list(CLASSES))
    intensity = _intensity(body, required=fault != HEALTHY)
    if fault == HEALTHY and intensity not in (None, 0.0):
        raise BadRequest("a 'healthy' label has no intensity (or 0)", field="intensity")
    return Label(by, note, machine, fault, 0.0 if fault == HEALTHY else intensity, start, end)


def add(conn: sqlite3.Connection, label: Label) -> dict[str, Any]:
    """Store one label in its own transaction (the writer's connection); an alarm label takes the
    alarm's machine, fault and start. One label per alarm: a second is a Conflict."""
    from edge.alarms.tables import stored_alarm
    from edge.errors import Conflict

    with transaction(conn):
        if label.alarm_id is not None:
            rec = stored_alarm(conn, label.alarm_id)
            if rec is None:
                raise NotFound(f"no alarm with id {label.alarm_id}", field="alarm")
            if rec["kind"] != "fault":
                raise BadRequest(f"alarm {label.alarm_id} is a {rec['kind']} alarm, not a fault: label the "
                                 "machine's time range instead", field="alarm")
            had = conn.execute("SELECT id FROM fdedge_labels WHERE alarm_id = ?", (label.alarm_id,)).fetchall()
            if had:
                raise Conflict(f"alarm {label.alarm_id} has a label already (id {had[0][0]}); delete it first",
                               label=had[0][0])
            machine, fault, start = rec["machine"], rec["fault"], rec["since"]
        else:
            machine, fault, start = label.machine, label.fault, label.start
        cur = conn.execute(
            'INSERT INTO fdedge_labels (created, labelled_by, note, machine, fault, intensity, start_time, end_time, '
            'alarm_id, '
            "verdict) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (now_text(), label.by, label.note, machine, fault, label.intensity, start, label.end,
             label.alarm_id, label.verdict))
        label_id = cur.lastrowid
        assert label_id is not None
        return get(conn, label_id)


def delete(conn: sqlite3.Connection, label_id: int) -> dict[str, Any]:
    with transaction(conn):
        found = get(conn, label_id)
        conn.execute("DELETE FROM fdedge_labels WHERE id = ?", (label_id,))
    return found


def _json(row: tuple) -> dict[str, Any]:
    out = dict(zip(KEYS, row, strict=True))
    for key in ("created", "start", "end"):
        out[key] = iso(out[key])
    out["kind"] = "alarm" if out["alarm"] is not None else "range"
    return out


def get(conn: sqlite3.Connection, label_id: int) -> dict[str, Any]:
    rows = conn.execute(LABEL_BY_ID, (label_id,)).fetchall()
    if not rows:
        raise NotFound(f"no label with id {label_id}", field="id")
    return _json(rows[0])


def stored(conn: sqlite3.Connection, machine: str | None = None, start: str | None = None,
           end: str | None = None, alarm: int | None = None, limit: int = 1000) -> list[dict[str, Any]]:
    """Labels whose span overlaps [start, end] (stored time text), newest first. The span is
    compared after resolving an alarm label's end, so the filter runs on the joined rows."""
    rows = conn.execute(
        LABELS_OVERLAPPING, (machine, machine, alarm, alarm, start, start, end, end, limit)).fetchall()
    return [_json(r) for r in rows]
