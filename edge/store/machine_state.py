"""Per-machine state kept by the writer, never recomputed: every machine with stored readings, its
first and last time, its reading count and its newest row.

Why: grouping the readings table for the machine list cost 10 s at 10M rows; this table answers
the list, the --max-machines cap and the alarm engine's start-up at any size in one short read."""

from __future__ import annotations

import logging
import sqlite3
import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from edge.fdrest import epoch_seconds, iso

log = logging.getLogger(__name__)

MACHINES = "fdedge_machines"
# last_peak: the largest fault of the machine's newest reading. Below every warning threshold, no
# alarm run can be in progress, so start-up need not replay that machine's readings.
# last_seen: when the appliance last received a reading of the machine (epoch seconds, its own
# clock: a sensor's clock may be years off, so last_time cannot tell how long it has been silent).
# interval_s: the machine's usual gap between arrivals, an exponentially weighted mean (STALE_*).
CREATE_MACHINES = f"""CREATE TABLE IF NOT EXISTS {MACHINES} (
    name TEXT PRIMARY KEY, first_time TEXT, last_time TEXT, last_peak REAL,
    readings INTEGER NOT NULL DEFAULT 0, last_id INTEGER, last_seen REAL, interval_s REAL) WITHOUT ROWID"""
# A machine is stale once silent for longer than max(--stale-after, STALE_INTERVALS x interval_s).
STALE_INTERVALS = 3
INTERVAL_WEIGHT = 0.2  # of the newest gap in the mean
# ?7 arrival time, ?8 --stale-after (0: nothing learned). A gap is counted at most up to the
# machine's stale threshold: one outage moves the mean by at most INTERVAL_WEIGHT x that (so a
# 3-day silence cannot teach "every 3 days"), while a machine that really slowed down still gets
# there, its threshold growing by up to 40 % per reading.
UPSERT_MACHINE = (f"INSERT INTO {MACHINES}(name, first_time, last_time, last_peak, readings, last_id, "
                  "last_seen, interval_s) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, NULL) "
                  "ON CONFLICT(name) DO UPDATE SET first_time = min(first_time, excluded.first_time), "
                  "last_peak = CASE WHEN excluded.last_time >= last_time THEN excluded.last_peak ELSE last_peak END, "
                  "last_time = max(last_time, excluded.last_time), readings = readings + excluded.readings, "
                  "last_id = max(coalesce(last_id, 0), excluded.last_id), "
                  "interval_s = CASE WHEN ?8 <= 0 OR last_seen IS NULL OR ?7 < last_seen THEN interval_s "
                  "WHEN interval_s IS NULL THEN min(?7 - last_seen, ?8) "
                  f"ELSE interval_s + {INTERVAL_WEIGHT} * "
                  f"(min(?7 - last_seen, max(?8, {STALE_INTERVALS} * interval_s)) - interval_s) END, "
                  "last_seen = max(coalesce(last_seen, 0), ?7)")


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
        have |= {"readings", "last_id"}
    if "last_seen" not in have:
        # Earlier versions kept no arrival time: the newest reading's own time is the best guess,
        # never later than now (a sensor dated 2099 is not heard from in the future).
        conn.execute(f"ALTER TABLE {MACHINES} ADD COLUMN last_seen REAL")
        conn.execute(f"ALTER TABLE {MACHINES} ADD COLUMN interval_s REAL")
        now = time.time()
        rows = conn.execute(f"SELECT name, last_time FROM {MACHINES}").fetchall()
        conn.executemany(f"UPDATE {MACHINES} SET last_seen = ? WHERE name = ?",
                         [(min(epoch_seconds(last or ""), now) or None, name) for name, last in rows])


def record(conn: sqlite3.Connection, first_id: int, times: list[str], machines: list[str],
           peaks: list[float], *, arrival: float | None = None, stale_after: float = 0.0) -> list[str]:
    """Keep the table up to date with readings inserted in the open transaction, ids from
    `first_id` on (`peaks`: each reading's largest fault), received at `arrival` (epoch seconds,
    default now); with `stale_after` > 0 each machine's usual interval is learned too (one
    upsert per machine, as before). Returns the machines seen."""
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
    at = time.time() if arrival is None else arrival
    conn.executemany(UPSERT_MACHINE, [(m, *span, at, stale_after) for m, span in spans.items()])
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


def stale_threshold(interval_s: float | None, stale_after: float) -> float:
    """Seconds of silence after which a machine is stale; 0: never (--stale-after 0)."""
    if stale_after <= 0:
        return 0.0
    return max(stale_after, STALE_INTERVALS * interval_s) if interval_s else stale_after


def iso_epoch(seconds: float | None) -> str | None:
    """Epoch seconds as the API's ISO 8601 UTC text, milliseconds kept."""
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def silence(conn: sqlite3.Connection) -> list[tuple[str, float | None, float | None, int | None]]:
    """(machine, last_seen, interval_s, last_id) of every machine: one short scan (at most
    --max-machines rows), what the stale check and /api/machines read."""
    return conn.execute(f"SELECT name, last_seen, interval_s, last_id FROM {MACHINES} ORDER BY name").fetchall()


def stale_machines(conn: sqlite3.Connection, stale_after: float, now: float | None = None) -> list[str]:
    """Names of the machines silent past their threshold at `now` (default: the clock)."""
    at = time.time() if now is None else now
    out = []
    for name, seen, interval, _ in silence(conn):
        limit = stale_threshold(interval, stale_after)
        if limit and seen is not None and at - seen > limit:
            out.append(name)
    return out


def listing(conn: sqlite3.Connection, stale_after: float = 0.0, now: float | None = None) -> list[dict[str, Any]]:
    """/api/machines: FD-Edge's earlier fields (machine, readings, last_time) and the rest.
    `last_seen`/`silent_s` are the appliance's clock (arrival), `last_time` the sensor's."""
    at = time.time() if now is None else now
    rows = conn.execute(f"SELECT name, readings, first_time, last_time, last_id, last_peak, last_seen, interval_s "
                        f"FROM {MACHINES} ORDER BY name").fetchall()
    out = []
    for m, n, first, last, last_id, peak, seen, interval in rows:
        limit = stale_threshold(interval, stale_after)
        silent = None if seen is None else round(max(at - seen, 0.0), 3)
        out.append({"machine": m, "readings": n, "first_time": iso(first), "last_time": iso(last), "last_id": last_id,
                    "last_peak": peak, "last_seen": iso_epoch(seen), "silent_s": silent,
                    "interval_s": None if interval is None else round(interval, 3),
                    "stale_after_s": limit or None, "stale": bool(limit and silent is not None and silent > limit)})
    return out
