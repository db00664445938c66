"""`fdedge_shadow`: a shadow model's 8 faults for readings the active model scored (issue 18 item 4).

Keyed by (reading_id, version) so retention deletes a cut's shadow rows by the readings' ids in the
same transaction; the (version, reading_id) index serves the comparison of one version. Written
only by the shadow's own thread (edge/scoring/shadow.py), read by `/api/models/{version}/compare`.
"""

from __future__ import annotations

import json
import sqlite3

from edge.fdrest import COLUMNS, FAULTS
from edge.store.schema import TABLE

SHADOW = "fdedge_shadow"
CREATE_SHADOW = (f"CREATE TABLE IF NOT EXISTS {SHADOW} (reading_id INTEGER NOT NULL, version TEXT NOT NULL, "
                 + ", ".join(f"{f} REAL" for f in FAULTS) + ", PRIMARY KEY (reading_id, version)) WITHOUT ROWID")
CREATE_SHADOW_INDEX = f"CREATE INDEX IF NOT EXISTS {SHADOW}_version ON {SHADOW}(version, reading_id)"
# Only for a reading that is still there: retention may have cut it since it was handed over.
INSERT_SHADOW = (f"INSERT OR REPLACE INTO {SHADOW} (reading_id, version, {', '.join(FAULTS)}) "
                 f"SELECT ?, ?, {', '.join('?' for _ in FAULTS)} WHERE EXISTS (SELECT 1 FROM {TABLE} WHERE id = ?)")
DELETE_SHADOW = f"DELETE FROM {SHADOW} WHERE reading_id IN (SELECT value FROM json_each(?))"
NEWEST_SHADOW = f"SELECT max(reading_id) FROM {SHADOW} WHERE version = ?"
NEWEST_READING = f"SELECT max(id) FROM {TABLE}"
# Readings the hook could not hand over (queue full), by id, in FD-REST feature order.
READINGS_AFTER = f"SELECT id, {', '.join(COLUMNS)} FROM {TABLE} WHERE id > ? AND id < ? ORDER BY id LIMIT ?"
# Both fault vectors of every reading the version shadowed (and another version scored), newest first.
PAIRS = (f"SELECT s.id, s.time, s.machine, {', '.join('s.' + f for f in FAULTS)}, "
         f"{', '.join('h.' + f for f in FAULTS)} FROM {SHADOW} h JOIN {TABLE} s ON s.id = h.reading_id "
         "WHERE h.version = ? AND (s.model_version IS NULL OR s.model_version != ?) "
         "AND (? IS NULL OR s.time >= ?) AND (? IS NULL OR s.time < ?) AND (? IS NULL OR s.machine = ?) "
         "ORDER BY h.reading_id DESC LIMIT ?")


def migrate(conn: sqlite3.Connection) -> None:
    """Inside schema.migrate's transaction: the table exists before retention or the shadow use it."""
    conn.execute(CREATE_SHADOW)
    conn.execute(CREATE_SHADOW_INDEX)


def forget(conn: sqlite3.Connection, reading_ids: list[int]) -> None:
    """In retention's transaction: the shadow rows of the readings it deletes."""
    conn.execute(DELETE_SHADOW, (json.dumps(reading_ids),))


def insert(conn: sqlite3.Connection, version: str, ids: list[int], faults: list[list[float]]) -> None:
    conn.executemany(INSERT_SHADOW, [(i, version, *row, i) for i, row in zip(ids, faults, strict=True)])


def resume_after(conn: sqlite3.Connection, version: str | None) -> int:
    """Where a shadow picks up: after the newest reading `version` scored before (a restart), else
    (None, or nothing scored) after the newest reading now: a shadow scores what arrives once it started."""
    done = conn.execute(NEWEST_SHADOW, (version,)).fetchall()[0][0] if version is not None else None
    if done is not None:
        return int(done)
    return newest_reading(conn)


def newest_reading(conn: sqlite3.Connection) -> int:
    return int(conn.execute(NEWEST_READING).fetchall()[0][0] or 0)


def readings_between(conn: sqlite3.Connection, after: int, before: int, limit: int) -> list[tuple]:
    return conn.execute(READINGS_AFTER, (after, before, limit)).fetchall()


def pairs(conn: sqlite3.Connection, version: str, start: str | None, end: str | None, machine: str | None,
          limit: int) -> list[tuple]:
    return conn.execute(PAIRS, (version, version, start, start, end, end, machine, machine, limit)).fetchall()
