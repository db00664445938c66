"""The alarm tables: their layout, the stored alarm as the API shows it, and the read queries.

The engine writes these tables inside the writer's transaction; the routes and the CSV export
only read them. Column and table names are constants here, never input.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from typing import Any

from edge.errors import BadRequest, NotFound
from edge.fdrest import FAULTS, TIME_FORMAT, epoch_seconds, iso, now_text
from edge.store.database import transaction
from edge.store.schema import TABLE

ALARMS = "fdedge_alarms"
OUTBOX = "fdedge_alarm_outbox"
# The uplink's own rows in the outbox (webhook keys are 16 hex digits, so this one never collides):
# its alarm changes are durable with the change's transaction, like a webhook's, and published in order.
UPLINK_HOOK = "uplink"
SCHEMA_VERSION = "1"
STATES = ("active", "cleared", "all")
# fault: a fault episode (fault = fault0..7). stale: the machine fell silent (fault = "stale";
# since = its last arrival, raised_value = seconds silent then; edge.alarms.stale).
KINDS = ("fault", "stale")

COLUMNS: tuple[str, ...] = (
    "id", "machine", "fault", "category", "severity", "raised_severity", "since", "raised_at",
    "raised_reading", "raised_value", "peak", "peak_at", "peak_reading", "escalated_at",
    "escalated_reading", "cleared_at", "cleared_reading", "acked_at", "acked_by", "ack_note", "kind",
)
SELECT = ", ".join(COLUMNS)
_TIMES = ("since", "raised_at", "peak_at", "escalated_at", "cleared_at", "acked_at")

DDL: tuple[str, ...] = (
    f"""CREATE TABLE IF NOT EXISTS {ALARMS} (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        machine TEXT NOT NULL,
        fault TEXT NOT NULL,
        category TEXT NOT NULL DEFAULT '',
        severity TEXT NOT NULL CHECK (severity IN ('warning', 'alarm')),
        raised_severity TEXT NOT NULL CHECK (raised_severity IN ('warning', 'alarm')),
        since TEXT NOT NULL,
        raised_at TEXT NOT NULL,
        raised_reading INTEGER NOT NULL,
        raised_value REAL NOT NULL,
        peak REAL NOT NULL,
        peak_at TEXT NOT NULL,
        peak_reading INTEGER NOT NULL,
        escalated_at TEXT,
        escalated_reading INTEGER,
        cleared_at TEXT,
        cleared_reading INTEGER,
        acked_at TEXT,
        acked_by TEXT,
        ack_note TEXT,
        kind TEXT NOT NULL DEFAULT 'fault')""",
    # The database itself refuses two overlapping alarms for one machine and fault.
    f"CREATE UNIQUE INDEX IF NOT EXISTS {ALARMS}_one_active ON {ALARMS}(machine, fault) WHERE cleared_at IS NULL",
    f"CREATE INDEX IF NOT EXISTS {ALARMS}_timeline ON {ALARMS}(machine, fault, raised_at)",
    # AUTOINCREMENT: a delivery id is never reused, even after pruning, so receivers can dedupe on it.
    f"""CREATE TABLE IF NOT EXISTS {OUTBOX} (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        hook TEXT NOT NULL,
        event TEXT NOT NULL,
        alarm_id INTEGER NOT NULL,
        body TEXT NOT NULL,
        created TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_try REAL NOT NULL DEFAULT 0,
        delivered_at TEXT,
        last_error TEXT)""",
    f"CREATE INDEX IF NOT EXISTS {OUTBOX}_pending ON {OUTBOX}(hook, id) WHERE delivered_at IS NULL",
)

INSERT = (f"INSERT INTO {ALARMS} ({', '.join(COLUMNS[1:])}) "
           f"VALUES ({', '.join('?' * (len(COLUMNS) - 1))})")
INSERT_OUTBOX = f"INSERT INTO {OUTBOX} (hook, event, alarm_id, body, created) VALUES (?, ?, ?, ?, ?)"


def create(conn: sqlite3.Connection) -> None:
    """Create the alarm tables if needed, in one transaction."""
    with transaction(conn):
        for ddl in DDL:
            conn.execute(ddl)
        if "kind" not in {row[1] for row in conn.execute(f"PRAGMA table_info({ALARMS})")}:
            conn.execute(f"ALTER TABLE {ALARMS} ADD COLUMN kind TEXT NOT NULL DEFAULT 'fault'")  # older tables
        conn.execute("INSERT OR REPLACE INTO fdedge_meta(key, value) VALUES ('alarms_schema_version', ?)",
                     (SCHEMA_VERSION,))


def alarm_json(rec: dict[str, Any]) -> dict[str, Any]:
    """A stored alarm as the API shows it: ISO times, `state`, `acked`."""
    out = dict(rec)
    for key in _TIMES:
        out[key] = iso(out[key])
    out["state"] = "active" if rec["cleared_at"] is None else "cleared"
    out["acked"] = rec["acked_at"] is not None
    return out




def active_alarms(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    """Every uncleared alarm as stored, oldest first."""
    rows = conn.execute(f"SELECT {SELECT} FROM {ALARMS} WHERE cleared_at IS NULL ORDER BY id").fetchall()
    return [dict(zip(COLUMNS, row, strict=True)) for row in rows]


def stored_alarm(conn: sqlite3.Connection, alarm_id: int) -> dict[str, Any] | None:
    """One alarm as stored, or None. fetchall: never leave a statement open on the writer's connection."""
    found = conn.execute(f"SELECT {SELECT} FROM {ALARMS} WHERE id = ?", (alarm_id,)).fetchall()
    return dict(zip(COLUMNS, found[0], strict=True)) if found else None


def recent_machines(conn: sqlite3.Connection, within_s: float, limit: int, peak_at_least: float) -> list[str]:
    """Machines that may have an alarm run in progress: their newest reading is within `within_s`
    of the newest of all (taken no later than now: a reading dated 2099 must not hide every other
    machine) and its largest fault reached `peak_at_least` (or is unknown: migrated)."""
    newest = conn.execute("SELECT max(last_time) FROM fdedge_machines").fetchall()[0][0]
    if not newest:
        return []
    newest = min(newest, now_text())
    cutoff = datetime.fromtimestamp(epoch_seconds(newest) - within_s, UTC).strftime(TIME_FORMAT)
    rows = conn.execute("SELECT name FROM fdedge_machines WHERE last_time >= ? AND "
                        "(last_peak IS NULL OR last_peak >= ?) ORDER BY last_time DESC LIMIT ?",
                        (cutoff, peak_at_least, limit)).fetchall()
    return [r[0] for r in rows]



def list_alarms(conn: sqlite3.Connection, state: str = "all", machine: str | None = None,
                fault: str | None = None, limit: int = 100, before: int | None = None,
                kind: str | None = None, *, start: str | None = None, end: str | None = None,
                acked: bool | None = None) -> list[dict[str, Any]]:
    """Newest first; `before` (an alarm id) pages further back. `start` <= raised_at < `end`
    (stored format, UTC); `acked` True or False keeps only acknowledged or unacknowledged ones."""
    if state not in STATES:
        raise BadRequest(f"state must be one of {', '.join(STATES)}", field="state", valid=list(STATES))
    if fault is not None and fault not in FAULTS:
        raise BadRequest(f"unknown fault {fault[:40]!r}", field="fault", valid=list(FAULTS))
    if kind is not None and kind not in KINDS:
        raise BadRequest(f"unknown alarm kind {kind[:40]!r}", field="kind", valid=list(KINDS))
    where: list[str] = ["1"]
    args: list[Any] = []
    if state != "all":
        where.append("cleared_at IS NULL" if state == "active" else "cleared_at IS NOT NULL")
    for column, value in (("machine", machine), ("fault", fault), ("kind", kind)):
        if value is not None:
            where.append(f"{column} = ?")
            args.append(value)
    if before is not None:
        where.append("id < ?")
        args.append(before)
    if start is not None:
        where.append("raised_at >= ?")
        args.append(start)
    if end is not None:
        where.append("raised_at < ?")
        args.append(end)
    if acked is not None:
        where.append("acked_at IS NOT NULL" if acked else "acked_at IS NULL")
    rows = conn.execute(f"SELECT {SELECT} FROM {ALARMS} WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT ?",
                        (*args, limit)).fetchall()
    return [alarm_json(dict(zip(COLUMNS, r, strict=True))) for r in rows]


def get_alarm(conn: sqlite3.Connection, alarm_id: int) -> dict[str, Any]:
    row = conn.execute(f"SELECT {SELECT} FROM {ALARMS} WHERE id = ?", (alarm_id,)).fetchone()
    if row is None:
        raise NotFound(f"no alarm with id {alarm_id}", field="id")
    return alarm_json(dict(zip(COLUMNS, row, strict=True)))


def alarm_columns_sql(table: str = TABLE) -> str:
    """SQL for an `alarms` column on rows of `table`: the alarms active at each reading's time, as
    `fault2:alarm;fault5:warning` ('' when none), with the severity each had at that time.

    Per fault it takes the latest alarm raised at or before the reading and keeps it if it had
    not cleared yet: alarms of one machine and fault never overlap, so that is the only candidate,
    and it is one probe of the (machine, fault, raised_at) index per fault and row."""
    parts = []
    for fault in FAULTS:  # our own constants, never input
        parts.append(
            f"coalesce((SELECT CASE WHEN a.cleared_at IS NULL OR a.cleared_at > {table}.time "
            f"THEN '{fault}:' || CASE WHEN a.escalated_at IS NOT NULL AND a.escalated_at <= {table}.time "
            f"THEN 'alarm' ELSE a.raised_severity END || ';' END "
            f"FROM {ALARMS} a WHERE a.machine = {table}.machine AND a.fault = '{fault}' "
            f"AND a.raised_at <= {table}.time ORDER BY a.raised_at DESC, a.id DESC LIMIT 1), '')")
    return f"rtrim({' || '.join(parts)}, ';') AS alarms"

