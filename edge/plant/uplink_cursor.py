"""The uplink's durable cursor and its reads, on the uplink's own SQLite connection.

`fdedge_uplink` holds one row: `readings`, the highest reading id whose message the broker
acknowledged (PUBACK) with every reading before it, and `alarms`, the same over the uplink's rows
of the alarm outbox (edge.alarms.tables.UPLINK_HOOK), which are deleted once acknowledged. Writes
are short transactions beside the writer thread's (busy_timeout waits them out), a few a second
at most; reads never hold a snapshot open (fetchall)."""

from __future__ import annotations

import sqlite3

from edge.alarms.tables import OUTBOX, UPLINK_HOOK
from edge.store import reading_queries
from edge.store.database import transaction
from edge.store.schema import TABLE

CURSOR = "fdedge_uplink"
CREATE_CURSOR = (f"CREATE TABLE IF NOT EXISTS {CURSOR} (id INTEGER PRIMARY KEY CHECK (id = 1), "
          "readings INTEGER NOT NULL, alarms INTEGER NOT NULL)")


def setup(conn: sqlite3.Connection) -> tuple[int, int]:
    """Create the cursor if needed and return it (readings, alarms). A new cursor starts before
    the oldest stored reading: everything kept is sent, within the backlog bound."""
    with transaction(conn):
        conn.execute(CREATE_CURSOR)
        row = conn.execute(f"SELECT readings, alarms FROM {CURSOR} WHERE id = 1").fetchall()
        if row:
            return row[0][0], row[0][1]
        start = conn.execute(f"SELECT min(id) - 1 FROM {TABLE}").fetchall()[0][0]
        if start is None:  # no rows: the next id follows the last one ever given out
            start = _sequence(conn)
        conn.execute(f"INSERT INTO {CURSOR} (id, readings, alarms) VALUES (1, ?, 0)", (start,))
        return start, 0


def _sequence(conn: sqlite3.Connection) -> int:
    try:
        found = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = ?", (TABLE,)).fetchall()
    except sqlite3.OperationalError:  # no AUTOINCREMENT table yet
        return 0
    return found[0][0] if found else 0


def save(conn: sqlite3.Connection, readings: int, alarms: int) -> None:
    """Advance both cursors; the acknowledged alarm rows go in the same transaction."""
    with transaction(conn):
        conn.execute(f"UPDATE {CURSOR} SET readings = ?, alarms = ? WHERE id = 1", (readings, alarms))
        conn.execute(f"DELETE FROM {OUTBOX} WHERE hook = ? AND id <= ? AND delivered_at IS NULL",
                     (UPLINK_HOOK, alarms))


def rows_after(conn: sqlite3.Connection, after: int, limit: int) -> list[tuple]:
    """Readings after the cursor in id order, in schema.SELECT_LIST's columns."""
    return reading_queries.rows_after(conn, after, None, limit)


def newest(conn: sqlite3.Connection) -> int:
    return reading_queries.max_id(conn)


def first_after(conn: sqlite3.Connection, after: int) -> int | None:
    """The id of the oldest reading after `after` (one rowid probe; counting a range would read it all)."""
    return conn.execute(f"SELECT min(id) FROM {TABLE} WHERE id > ?", (after,)).fetchall()[0][0]


def alarms_after(conn: sqlite3.Connection, after: int, limit: int) -> list[tuple[int, str]]:
    """The uplink's alarm changes after its cursor: (outbox id, the change's JSON)."""
    return conn.execute(f"SELECT id, body FROM {OUTBOX} WHERE hook = ? AND delivered_at IS NULL AND id > ? "
                        "ORDER BY id LIMIT ?", (UPLINK_HOOK, after, limit)).fetchall()
