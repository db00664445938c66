"""Per-machine state kept by the writer, never recomputed: every machine with stored readings, its
first and last time, its reading count and its newest row.

Why: grouping the readings table for the machine list cost 10 s at 10M rows; this table answers
the list, the --max-machines cap and the alarm engine's start-up at any size in one short read."""

from __future__ import annotations

import logging
import sqlite3
from collections import Counter
from typing import Any

from edge.fdrest import iso

log = logging.getLogger(__name__)

MACHINES = "fdedge_machines"
# last_peak: the largest fault of the machine's newest reading. Below every warning threshold, no
# alarm run can be in progress, so start-up need not replay that machine's readings.
CREATE_MACHINES = f"""CREATE TABLE IF NOT EXISTS {MACHINES} (
    name TEXT PRIMARY KEY, first_time TEXT, last_time TEXT, last_peak REAL,
    readings INTEGER NOT NULL DEFAULT 0, last_id INTEGER) WITHOUT ROWID"""
UPSERT_MACHINE = (f"INSERT INTO {MACHINES}(name, first_time, last_time, last_peak, readings, last_id) "
                  "VALUES (?, ?, ?, ?, ?, ?) "
                  "ON CONFLICT(name) DO UPDATE SET first_time = min(first_time, excluded.first_time), "
                  "last_peak = CASE WHEN excluded.last_time >= last_time THEN excluded.last_peak ELSE last_peak END, "
                  "last_time = max(last_time, excluded.last_time), readings = readings + excluded.readings, "
                  "last_id = max(coalesce(last_id, 0), excluded.last_id)")


def migrate(conn: sqlite3.Connection, table: str) -> None:
    """Create the table, or add the count and newest row to one of an earlier version: one pass
    over the (machine, id) index, once."""
    if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (MACHINES,)).fetchall():
        conn.execute(CREATE_MACHINES)
        log.info("counting the readings of every machine once (first start of this version)")
        conn.execute(f"INSERT INTO {MACHINES}(name, first_time, last_time, last_peak, readings, last_id) "
                     f"SELECT machine, min(time), max(time), NULL, count(*), max(id) FROM {table} GROUP BY machine")
        return
    have = {row[1] for row in conn.execute(f"PRAGMA table_info({MACHINES})")}
    if "readings" not in have:
        log.info("counting the readings of every machine once (first start of this version)")
        conn.execute(f"ALTER TABLE {MACHINES} ADD COLUMN readings INTEGER NOT NULL DEFAULT 0")
        conn.execute(f"ALTER TABLE {MACHINES} ADD COLUMN last_id INTEGER")
        conn.execute(f"UPDATE {MACHINES} SET (readings, last_id) = "
                     f"(SELECT count(*), max(id) FROM {table} WHERE machine = {MACHINES}.name)")


def record(conn: sqlite3.Connection, first_id: int, times: list[str], machines: list[str],
           peaks: list[float]) -> list[str]:
    """Keep the table up to date with readings inserted in the open transaction, ids from
    `first_id` on (`peaks`: each reading's largest fault); returns the machines seen."""
    spans: dict[str, list] = {}  # machine -> [first time, last time, peak of the last, count, last id]
    for k, (t, m, peak) in enumerate(zip(times, machines, peaks, strict=True)):
        span = spans.get(m)
        if span is None:
            spans[m] = [t, t, peak, 1, first_id + k]
            continue
        if t < span[0]:
            span[0] = t
        elif t >= span[1]:
            span[1], span[2] = t, peak
        span[3] += 1
        span[4] = first_id + k
    conn.executemany(UPSERT_MACHINE, [(m, *span) for m, span in spans.items()])
    return list(spans)


def forget(conn: sqlite3.Connection, table: str, deleted: Counter[str]) -> list[str]:
    """After retention deleted `deleted[machine]` readings in the open transaction: counts drop,
    first times move up (one index probe each), machines left without readings go. Returns the
    machines that went."""
    gone: list[str] = []
    for name, n in deleted.items():
        conn.execute(f"UPDATE {MACHINES} SET readings = max(readings - ?, 0), "
                     f"first_time = (SELECT min(time) FROM {table} WHERE machine = ?) WHERE name = ?",
                     (n, name, name))
        left = conn.execute(f"SELECT 1 FROM {table} WHERE machine = ? LIMIT 1", (name,)).fetchall()
        if not left and conn.execute(f"DELETE FROM {MACHINES} WHERE name = ?", (name,)).rowcount:
            gone.append(name)
    return gone


def count(conn: sqlite3.Connection) -> int:
    return conn.execute(f"SELECT count(*) FROM {MACHINES}").fetchall()[0][0]


def total_readings(conn: sqlite3.Connection) -> int:
    return conn.execute(f"SELECT coalesce(sum(readings), 0) FROM {MACHINES}").fetchall()[0][0]


def listing(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    """/api/machines: FD-Edge's earlier fields (machine, readings, last_time) and the rest."""
    rows = conn.execute(f"SELECT name, readings, first_time, last_time, last_id, last_peak FROM {MACHINES} "
                        "ORDER BY name").fetchall()
    return [{"machine": m, "readings": n, "first_time": iso(first), "last_time": iso(last), "last_id": last_id,
             "last_peak": peak} for m, n, first, last, last_id, peak in rows]
