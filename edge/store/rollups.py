"""Rollups: 1-minute and 1-hour buckets of every feature and fault per machine and for the whole
fleet, kept by the writer in the transaction of their readings.

Why: a chart of 90 days read every raw row to draw 600 points (10.7 s at 10M rows); from hour
buckets it reads 2,160 rows whatever the history holds. Threshold counts use the buckets' peak
bounds and only read raw rows where a bucket straddles the threshold.

One row per (machine, bucket start in epoch seconds); machine '' is the fleet (every machine).
`n` readings; `peak_min`/`peak_max` the smallest and largest "largest fault" of a reading;
`stats` packs float32 [min, max, mean] of the 43 data columns (edge.store.schema.DATA_COLUMNS
order, features then faults), little-endian: 516 bytes, so a row stays inside its page.
"""

from __future__ import annotations

import bisect
import logging
import sqlite3
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache

import numpy as np

from edge.fdrest import COLUMNS, FAULTS

log = logging.getLogger(__name__)

DATA_COLUMNS: tuple[str, ...] = COLUMNS + FAULTS
N = len(DATA_COLUMNS)
LEVELS: dict[str, int] = {"minute": 60, "hour": 3600}
FLEET = ""  # machine names are 1-64 printable characters, so '' is free for "every machine"
DTYPE = np.dtype("<f4")
CACHE_MAX = 8192
BACKFILL_ROWS = 2000
META_NEXT, META_END = "rollup_backfill_next", "rollup_backfill_end"


def table(level: str) -> str:
    return {"minute": "fdedge_rollup_minute", "hour": "fdedge_rollup_hour"}[level]


CREATE = ("CREATE TABLE IF NOT EXISTS {t} (machine TEXT NOT NULL, bucket INTEGER NOT NULL, n INTEGER NOT NULL, "
          "peak_min REAL, peak_max REAL, stats BLOB NOT NULL, PRIMARY KEY (machine, bucket)) WITHOUT ROWID")
_WRITE = {level: f"INSERT OR REPLACE INTO {table(level)}(machine, bucket, n, peak_min, peak_max, stats) "
                 "VALUES (?, ?, ?, ?, ?, ?)" for level in LEVELS}


@lru_cache(maxsize=8192)
def minute_of(text: str) -> int | None:
    """The epoch second of a stored time's minute (`text` is its first 16 characters); None for a
    time that is not FD-REST's format (such rows are left out of the rollups)."""
    try:
        return int(datetime.strptime(text.replace("T", " ", 1), "%Y-%m-%d %H:%M").replace(tzinfo=UTC).timestamp())
    except ValueError:
        return None


def epoch_text(seconds: float) -> str:
    """An epoch second as stored time text, for range bounds over raw rows."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S")


@dataclass(frozen=True)
class Bucket:
    n: int
    lo: np.ndarray  # (N,) float64
    hi: np.ndarray
    mean: np.ndarray
    peak_lo: float
    peak_hi: float

    @classmethod
    def of(cls, values: np.ndarray, peaks: np.ndarray, finite: bool = True) -> Bucket:
        """Stats of readings (rows of `values`); `finite=False` for a legacy file's rows, where
        NULL is NaN and is left out."""
        if len(values) == 1:  # one reading: its values are min, max and mean (most groups)
            v, p = values[0], float(peaks[0])
            return cls(1, v, v, v, p, p)
        if finite:
            return cls(len(values), values.min(axis=0), values.max(axis=0), values.mean(axis=0),
                       float(peaks.min()), float(peaks.max()))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # an all-NULL column: NaN, not a warning
            return cls(len(values), np.nanmin(values, axis=0), np.nanmax(values, axis=0),
                       np.nanmean(values, axis=0), float(np.nanmin(peaks)), float(np.nanmax(peaks)))

    def merge(self, other: Bucket) -> Bucket:
        n = self.n + other.n
        mean = (self.mean * self.n + other.mean * other.n) / n
        return Bucket(n, np.fmin(self.lo, other.lo), np.fmax(self.hi, other.hi), mean,
                      min(self.peak_lo, other.peak_lo), max(self.peak_hi, other.peak_hi))

    def row(self, machine: str, bucket: int) -> tuple:
        stats = np.concatenate((self.lo, self.hi, self.mean)).astype(DTYPE).tobytes()
        return machine, bucket, self.n, self.peak_lo, self.peak_hi, stats

    @classmethod
    def decode(cls, n: int, peak_lo: float, peak_hi: float, blob: bytes) -> Bucket:
        s = np.frombuffer(blob, DTYPE).astype(np.float64)
        return cls(n, s[:N], s[N:2 * N], s[2 * N:], peak_lo, peak_hi)


Key = tuple[str, str, int]  # level, machine, bucket


def _groups(times: list[str], machines: list[str]) -> Iterator[tuple[tuple[str, int | None], slice | list[int]]]:
    """The rows of each (machine, minute): slices when the batch is one machine in time order
    (a sensor's batch, the common case; no per-row Python work), index lists otherwise."""
    prefixes = [t[:16] for t in times]
    if machines.count(machines[0]) == len(machines) and prefixes == sorted(prefixes):
        start = 0
        for prefix in dict.fromkeys(prefixes):
            end = bisect.bisect_right(prefixes, prefix, start)
            yield (machines[0], minute_of(prefix) if prefix else None), slice(start, end)
            start = end
        return
    groups: dict[tuple[str, str], list[int]] = {}
    for i, key in enumerate(zip(machines, prefixes, strict=True)):
        groups.setdefault(key, []).append(i)
    for (machine, prefix), rows in groups.items():
        yield (machine, minute_of(prefix) if prefix else None), rows


class Rollups:
    """The writer's side: merges each group into its buckets, keeps the buckets it last touched in
    memory (one writer: the cache cannot go stale) and backfills rows stored before rollups.

    Rows with id < `backfill_next` or > `backfill_end` are in the rollups; until the backfill has
    reached `backfill_end`, readers use raw rows."""

    def __init__(self) -> None:
        self._cache: dict[Key, Bucket] = {}
        self._staged: dict[Key, Bucket] = {}
        self.backfill_next = 1
        self.backfill_end = 0
        self.skipped = 0  # rows whose time is not in FD-REST's format

    def load(self, conn: sqlite3.Connection) -> None:
        self.backfill_next, self.backfill_end = backfill_state(conn)

    @property
    def ready(self) -> bool:
        return self.backfill_next > self.backfill_end

    # -- the writer's transaction ----------------------------------------------------------

    def add(self, conn: sqlite3.Connection, times: list[str], machines: list[str], values: np.ndarray,
            peaks: np.ndarray, finite: bool = True) -> None:
        """Merge readings (rows of `values`: the 43 data columns) into their buckets, in the open
        transaction. Call commit() or rollback() after it."""
        merged: dict[Key, Bucket] = {}
        for (machine, minute), rows in _groups(times, machines):
            if minute is None:
                self.skipped += len(values[rows])
                continue
            part = Bucket.of(values[rows], peaks[rows], finite)
            hour = minute - minute % 3600
            for key in (("minute", machine, minute), ("hour", machine, hour),
                        ("minute", FLEET, minute), ("hour", FLEET, hour)):
                old = merged.get(key)
                merged[key] = part if old is None else old.merge(part)
        self._write(conn, merged, merge=True)

    def commit(self) -> None:
        if len(self._cache) + len(self._staged) > CACHE_MAX:
            self._cache.clear()
        self._cache.update(self._staged)
        self._staged.clear()

    def rollback(self) -> None:
        self._staged.clear()

    def _get(self, conn: sqlite3.Connection, key: Key) -> Bucket | None:
        found = self._staged.get(key) or self._cache.get(key)
        if found is not None:
            return found
        level, machine, bucket = key
        rows = conn.execute(f"SELECT n, peak_min, peak_max, stats FROM {table(level)} WHERE machine = ? AND bucket = ?",
                            (machine, bucket)).fetchall()
        return Bucket.decode(*rows[0]) if rows else None

    def _write(self, conn: sqlite3.Connection, buckets: dict[Key, Bucket], merge: bool) -> None:
        by_level: dict[str, list[tuple]] = {level: [] for level in LEVELS}
        for key, part in buckets.items():
            old = self._get(conn, key) if merge else None
            new = part if old is None else old.merge(part)
            self._staged[key] = new
            by_level[key[0]].append(new.row(key[1], key[2]))
        for level, rows in by_level.items():
            if rows:
                conn.executemany(_WRITE[level], rows)

    # -- retention ---------------------------------------------------------------------------

    def forget_before(self, conn: sqlite3.Connection, firsts: dict[str, str | None]) -> None:
        """After retention: drop the buckets of each machine (and the fleet) that end before its
        first remaining reading (`firsts`: machine -> that time, None when none is left)."""
        for machine, first in firsts.items():
            minute = minute_of(first[:16]) if first else None
            for level, width in LEVELS.items():
                if minute is None and first is not None:
                    continue  # a first time we cannot place: keep everything
                if minute is None:
                    conn.execute(f"DELETE FROM {table(level)} WHERE machine = ?", (machine,))
                else:
                    conn.execute(f"DELETE FROM {table(level)} WHERE machine = ? AND bucket <= ?",
                                 (machine, minute - width))
        self._cache.clear()

    def recompute(self, conn: sqlite3.Connection, raw_table: str, keys: Iterable[tuple[str, int]]) -> None:
        """Make minute buckets `keys` (machine, bucket) and their hours exact again from the rows
        left (retention deleted some of their readings)."""
        minutes: dict[Key, Bucket | None] = {}
        hours: set[tuple[str, int]] = set()
        select = f"SELECT {', '.join(DATA_COLUMNS)} FROM {raw_table} WHERE time >= ? AND time < ? "
        covered = "AND (id < ? OR id > ?)"
        for machine, minute in keys:
            sql, args = (select + covered, [epoch_text(minute), epoch_text(minute + 60),
                                            self.backfill_next, self.backfill_end])
            if machine != FLEET:
                sql += " AND machine = ?"
                args.append(machine)
            rows = conn.execute(sql, args).fetchall()
            values = np.array(rows, dtype=np.float64).reshape(-1, N)
            minutes[("minute", machine, minute)] = (
                Bucket.of(values, np.nanmax(values[:, len(COLUMNS):], axis=1)) if len(values) else None)
            hours.add((machine, minute - minute % 3600))
        for (_, machine, minute), bucket in minutes.items():
            if bucket is None:
                conn.execute(f"DELETE FROM {table('minute')} WHERE machine = ? AND bucket = ?", (machine, minute))
            else:
                conn.execute(_WRITE["minute"], bucket.row(machine, minute))
        for machine, hour in hours:
            parts = conn.execute(f"SELECT n, peak_min, peak_max, stats FROM {table('minute')} "
                                 "WHERE machine = ? AND bucket >= ? AND bucket < ?",
                                 (machine, hour, hour + 3600)).fetchall()
            if not parts:
                conn.execute(f"DELETE FROM {table('hour')} WHERE machine = ? AND bucket = ?", (machine, hour))
                continue
            total = Bucket.decode(*parts[0])
            for part in parts[1:]:
                total = total.merge(Bucket.decode(*part))
            conn.execute(_WRITE["hour"], total.row(machine, hour))
        self._cache.clear()
        self._staged.clear()

    # -- backfill ------------------------------------------------------------------------------

    def backfill_chunk(self, conn: sqlite3.Connection, raw_table: str, rows: int = BACKFILL_ROWS) -> int:
        """Roll up the next `rows` rows stored before rollups existed, in one transaction (the
        caller's); returns how many were read."""
        if self.ready:
            return 0
        found = conn.execute(f"SELECT id, time, machine, {', '.join(DATA_COLUMNS)} FROM {raw_table} "
                             "WHERE id >= ? AND id <= ? ORDER BY id LIMIT ?",
                             (self.backfill_next, self.backfill_end, rows)).fetchall()
        if found:
            values = np.array([r[3:] for r in found], dtype=np.float64).reshape(-1, N)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                peaks = np.nanmax(values[:, len(COLUMNS):], axis=1)
            self.add(conn, [r[1] or "" for r in found], [r[2] for r in found], values, peaks, finite=False)
        self.backfill_next = found[-1][0] + 1 if len(found) == rows else self.backfill_end + 1
        conn.execute("INSERT OR REPLACE INTO fdedge_meta(key, value) VALUES (?, ?)",
                     (META_NEXT, str(self.backfill_next)))
        return len(found)


def backfill_state(conn: sqlite3.Connection) -> tuple[int, int]:
    meta = dict(conn.execute("SELECT key, value FROM fdedge_meta WHERE key IN (?, ?)",
                             (META_NEXT, META_END)).fetchall())
    return int(meta.get(META_NEXT, 1)), int(meta.get(META_END, 0))


def migrate(conn: sqlite3.Connection, raw_table: str) -> None:
    """Create the rollup tables; rows already stored (an FD-REST or older FD-Edge file) are
    rolled up in the background afterwards, so start-up does not wait for them."""
    if conn.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (table("minute"),)).fetchall():
        return
    for level in LEVELS:
        conn.execute(CREATE.format(t=table(level)))
    first, last = conn.execute(f"SELECT coalesce(min(id), 1), coalesce(max(id), 0) FROM {raw_table}").fetchall()[0]
    conn.executemany("INSERT OR REPLACE INTO fdedge_meta(key, value) VALUES (?, ?)",
                     [(META_NEXT, str(first)), (META_END, str(last))])
    if last >= first:
        log.info("rolling up %d stored readings in the background (first start of this version)", last - first + 1)


# -- readers ---------------------------------------------------------------------------------

def ready(conn: sqlite3.Connection) -> bool:
    following, end = backfill_state(conn)
    return following > end


def level_for(bucket_seconds: float) -> str | None:
    """The coarsest rollup whose buckets fit in one output bucket; None: raw rows."""
    chosen = None
    for level, width in LEVELS.items():
        if width <= bucket_seconds:
            chosen = level
    return chosen


def read(conn: sqlite3.Connection, level: str, machine: str | None, start: float, end: float
         ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Buckets from the one holding `start` to `end`: (bucket starts, counts, peaks (k, 2), stats
    (k, 3N))."""
    width = LEVELS[level]
    first = int(start // width * width)
    rows = conn.execute(f"SELECT bucket, n, peak_min, peak_max, stats FROM {table(level)} "
                        "WHERE machine = ? AND bucket >= ? AND bucket <= ? ORDER BY bucket",
                        (machine or FLEET, first, int(end))).fetchall()
    if not rows:
        return np.empty(0), np.empty(0), np.empty((0, 2)), np.empty((0, 3 * N))
    stats = np.frombuffer(b"".join(r[4] for r in rows), DTYPE).reshape(len(rows), 3 * N).astype(np.float64)
    return (np.array([r[0] for r in rows], dtype=np.float64), np.array([r[1] for r in rows], dtype=np.float64),
            np.array([(r[2], r[3]) for r in rows], dtype=np.float64), stats)
