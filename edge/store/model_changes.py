"""When the scoring model changed: one row per switch, with the first reading the new model scored.

Each reading already carries `model_version`; this table answers "where are the boundaries"
without scanning them (the charts mark each one). Written on the writer's thread, between two
groups, in the same step that switches the model, so `first_id` is exact. A start with the model
that scored last adds nothing."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from typing import Any

from edge.fdrest import iso
from edge.store.database import transaction
from edge.store.schema import TABLE

CHANGES = "fdedge_model_changes"
DDL = (f"CREATE TABLE IF NOT EXISTS {CHANGES} (id INTEGER PRIMARY KEY, at TEXT NOT NULL, "
       "version TEXT NOT NULL, name TEXT, first_id INTEGER NOT NULL)")


def record(conn: sqlite3.Connection, version: str, name: str | None, now: datetime | None = None) -> bool:
    """The writer's connection: `version` scores from the next reading on. False if it already did."""
    with transaction(conn):
        conn.execute(DDL)
        last = conn.execute(f"SELECT version FROM {CHANGES} ORDER BY id DESC LIMIT 1").fetchone()
        if last is not None and last[0] == version:
            return False
        seq = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = ?", (TABLE,)).fetchone()
        at = stamp(now or datetime.now(UTC))
        conn.execute(f"INSERT INTO {CHANGES} (at, version, name, first_id) VALUES (?, ?, ?, ?)",
                     (at, version, name, (seq[0] if seq else 0) + 1))
    return True


def stamp(when: datetime) -> str:
    """UTC to the millisecond, always three digits: two switches within a second stay in order,
    and stamps compare as text (a shorter fraction would sort before a longer one)."""
    when = when.astimezone(UTC) if when.tzinfo else when
    return when.strftime("%Y-%m-%d %H:%M:%S.") + f"{when.microsecond // 1000:03d}"


def listing(conn: sqlite3.Connection, start: datetime | None = None, end: datetime | None = None,
            machine: str | None = None) -> list[dict[str, Any]]:
    """Oldest first: the change in effect at `start`, then those up to `end`.
    `time` is the first reading the new model scored (of `machine`, if given) in its own time: where
    a chart, drawn in the readings' times, marks the switch (null until one is stored)."""
    if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (CHANGES,)).fetchone() is None:
        return []  # a file no FD-Edge with a model store has scored into yet
    rows: list[tuple] = []
    if start is not None:
        rows += conn.execute(f"SELECT at, version, name, first_id FROM {CHANGES} WHERE at <= ? "
                             "ORDER BY id DESC LIMIT 1", (stamp(start),)).fetchall()
    rows += conn.execute(f"SELECT at, version, name, first_id FROM {CHANGES} WHERE at > ? AND at <= ? ORDER BY id",
                         (stamp(start) if start else "", stamp(end) if end else "9999")).fetchall()
    out = []
    for at, version, name, first in rows:
        if machine is None:
            found = conn.execute(f"SELECT time FROM {TABLE} WHERE id >= ? ORDER BY id LIMIT 1", (first,)).fetchone()
        else:
            found = conn.execute(f"SELECT time FROM {TABLE} WHERE machine = ? AND id >= ? ORDER BY id LIMIT 1",
                                 (machine, first)).fetchone()
        out.append({"at": iso(at), "version": version, "name": name, "first_id": first,
                    "time": iso(found[0]) if found else None})
    return out
