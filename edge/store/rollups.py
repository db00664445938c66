"""Rollups: 1-minute and 1-hour buckets of every feature and fault per machine and for the whole
fleet, kept by the writer in the transaction of their readings.

Why: a chart of 90 days read every raw row to draw 600 points (10.7 s at 10M rows); from hour
buckets it reads 2,160 rows whatever the history holds. Threshold counts use the buckets' peak
bounds and only read raw rows where a bucket straddles the threshold.

One row per (machine, bucket start in epoch seconds); machine '' is the fleet (every machine).
`n` readings; `peak_min`/`peak_max` the smallest and largest "largest fault" of a reading;
`stats` packs float32 [min, max, mean] of the 43 data columns (edge.store.schema.DATA_COLUMNS
order, features then faults), little-endian: 516 bytes, so a row stays inside its page. Hour
buckets also keep `peaks`, a histogram of the largest fault (uint32 counts of PEAK_EDGES' bins,
808 bytes): a count at a threshold that is a multiple of 0.5 reads no raw row (see PEAK_EDGES).
"""

from __future__ import annotations

import bisect
import logging
import sqlite3
import time
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import lru_cache

import numpy as np

from edge.fdrest import COLUMNS, FAULTS, format_time

log = logging.getLogger(__name__)

DATA_COLUMNS: tuple[str, ...] = COLUMNS + FAULTS
N = len(DATA_COLUMNS)
LEVELS: dict[str, int] = {"minute": 60, "hour": 3600}
FLEET = ""  # machine names are 1-64 printable characters, so '' is free for "every machine"
DTYPE = np.dtype("<f4")
CACHE_MAX = 512  # buckets kept in memory besides the unstored ones: a sensor's current minute and hour
BACKFILL_ROWS = 2000
META_NEXT, META_END = "rollup_backfill_next", "rollup_backfill_end"
META_COVERED = "rollup_covered"  # the newest row id the stored buckets include (with the backfill's)
FLUSH_S = 10.0  # changed buckets are stored this often (and when the writer stops)
DIRTY_MAX = 1024  # ...or sooner when this many wait (about 1.5 KB each in memory)
# Bin k of an hour's peak histogram holds peaks p with PEAK_EDGES[k-1] <= p < PEAK_EDGES[k] (bin 0:
# p < 0, the last: p >= 100). Fault intensities run 0-100 and thresholds are set in halves
# (alarm rules 30/60, clear 25, the report's 0.5): every multiple of 0.5 in [0, 100] is an edge,
# exactly (halves are exact doubles), so its count is exact. Why not minute buckets too: 808
# bytes per minute per machine would be 12 % of the raw rows' size; per hour it is 0.2 %.
PEAK_EDGES = np.arange(201) * 0.5
PEAK_BINS = len(PEAK_EDGES) + 1
HIST_DTYPE = np.dtype("<u4")


def table(level: str) -> str:
    return {"minute": "fdedge_rollup_minute", "hour": "fdedge_rollup_hour"}[level]


CREATE = ("CREATE TABLE IF NOT EXISTS {t} (machine TEXT NOT NULL, bucket INTEGER NOT NULL, n INTEGER NOT NULL, "
          "peak_min REAL, peak_max REAL, stats BLOB NOT NULL, PRIMARY KEY (machine, bucket)) WITHOUT ROWID")
ADD_PEAKS = f"ALTER TABLE {table('hour')} ADD COLUMN peaks BLOB"  # NULL: not known (an older file's hour)
_WRITE = {"minute": f"INSERT OR REPLACE INTO {table('minute')}(machine, bucket, n, peak_min, peak_max, stats) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
          "hour": f"INSERT OR REPLACE INTO {table('hour')}(machine, bucket, n, peak_min, peak_max, stats, peaks) "
                  "VALUES (?, ?, ?, ?, ?, ?, ?)"}
_READ = {"minute": "n, peak_min, peak_max, stats", "hour": "n, peak_min, peak_max, stats, peaks"}


def peak_histogram(peaks: np.ndarray) -> np.ndarray:
    """Counts per PEAK_EDGES bin; a NaN peak (a legacy row with a NULL fault, which SQL's max()
    never counts either) is left out."""
    peaks = peaks[~np.isnan(peaks)]
    return np.bincount(np.searchsorted(PEAK_EDGES, peaks, side="right"), minlength=PEAK_BINS).astype(np.int64)


def at_or_above(hist: np.ndarray, threshold: float) -> int | None:
    """Peaks >= threshold from a histogram, or None when the threshold is not one of its edges."""
    k = int(np.searchsorted(PEAK_EDGES, threshold))
    if k >= len(PEAK_EDGES) or PEAK_EDGES[k] != threshold:
        return None
    return int(hist[k + 1:].sum())


_EPOCH_DAY = date(1970, 1, 1).toordinal()


@lru_cache(maxsize=8192)
def minute_of(text: str) -> int | None:
    """The epoch second of a stored time's minute (`text` is its first 16 characters, or 13 for
    its hour); None for a time that is not FD-REST's format (such rows stay out of the rollups).
    Parsed by hand: strptime cost 15 µs a call on the writer's path."""
    try:
        if len(text) not in (13, 16) or text[4] != "-" or text[7] != "-" or text[10] not in " T":
            return None
        day = date(int(text[0:4]), int(text[5:7]), int(text[8:10])).toordinal() - _EPOCH_DAY
        hour = int(text[11:13])
        minute = int(text[14:16]) if len(text) == 16 and text[13] == ":" else 0 if len(text) == 13 else -1
        if not (0 <= hour < 24 and 0 <= minute < 60):
            return None
        return day * 86400 + hour * 3600 + minute * 60
    except ValueError:
        return None


def epoch_text(seconds: float) -> str:
    """An epoch second as stored time text, for range bounds over raw rows."""
    return format_time(datetime.fromtimestamp(seconds, UTC))


@dataclass(frozen=True)
class Bucket:
    n: int
    lo: np.ndarray  # (N,) float64
    hi: np.ndarray
    mean: np.ndarray
    peak_lo: float
    peak_hi: float
    hist: np.ndarray | None = None  # an hour's peak histogram; None for minutes and unknown hours

    @classmethod
    def of(cls, values: np.ndarray, peaks: np.ndarray, finite: bool = True, hist: bool = False) -> Bucket:
        """Stats of readings (rows of `values`); `finite=False` for a legacy file's rows, where
        NULL is NaN and is left out. `hist`: with the peak histogram (hours)."""
        counts = None
        if hist:  # from the values: a row with any NULL fault has no peak, as in SQL
            counts = peak_histogram(peaks if finite else values[:, len(COLUMNS):].max(axis=1))
        if len(values) == 1:  # one reading: its values are min, max and mean (most groups)
            v, p = values[0], float(peaks[0])
            return cls(1, v, v, v, p, p, counts)
        if finite:
            return cls(len(values), values.min(axis=0), values.max(axis=0), values.mean(axis=0),
                       float(peaks.min()), float(peaks.max()), counts)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # an all-NULL column: NaN, not a warning
            return cls(len(values), np.nanmin(values, axis=0), np.nanmax(values, axis=0),
                       np.nanmean(values, axis=0), float(np.nanmin(peaks)), float(np.nanmax(peaks)), counts)

    def merge(self, other: Bucket) -> Bucket:
        n = self.n + other.n
        mean = (self.mean * self.n + other.mean * other.n) / n
        hist = None if self.hist is None or other.hist is None else self.hist + other.hist
        return Bucket(n, np.fmin(self.lo, other.lo), np.fmax(self.hi, other.hi), mean,
                      min(self.peak_lo, other.peak_lo), max(self.peak_hi, other.peak_hi), hist)

    def row(self, machine: str, bucket: int, level: str) -> tuple:
        stats = np.concatenate((self.lo, self.hi, self.mean)).astype(DTYPE).tobytes()
        if level == "minute":
            return machine, bucket, self.n, self.peak_lo, self.peak_hi, stats
        hist = None if self.hist is None else self.hist.astype(HIST_DTYPE).tobytes()
        return machine, bucket, self.n, self.peak_lo, self.peak_hi, stats, hist

    @classmethod
    def decode(cls, n: int, peak_lo: float, peak_hi: float, blob: bytes, peaks: bytes | None = None) -> Bucket:
        s = np.frombuffer(blob, DTYPE).astype(np.float64)
        hist = None if peaks is None else np.frombuffer(peaks, HIST_DTYPE).astype(np.int64)
        return cls(n, s[:N], s[N:2 * N], s[2 * N:], peak_lo, peak_hi, hist)


Key = tuple[str, str, int]  # level, machine, bucket


def _parts(times: list[str], machines: list[str], values: np.ndarray, peaks: np.ndarray, finite: bool
           ) -> Iterator[tuple[str, str, list[str], list[Bucket]]]:
    """(level, machine, time prefixes, their stats) of the minutes and hours the readings fall in.
    A batch of one machine in time order (a sensor's, the common case) costs a few numpy calls
    per level whatever its length; others are grouped row by row."""
    minutes = [t[:16] for t in times]
    if finite and machines.count(machines[0]) == len(machines) and minutes == sorted(minutes):
        for level, prefixes in (("minute", minutes), ("hour", [t[:13] for t in minutes])):
            distinct = list(dict.fromkeys(prefixes))
            starts = [bisect.bisect_left(prefixes, prefix) for prefix in distinct]
            yield level, machines[0], distinct, _reduced(values, peaks, starts, hist=level == "hour")
        return
    by_minute: dict[tuple[str, str], list[int]] = {}
    by_hour: dict[tuple[str, str], list[int]] = {}
    for i, (machine, minute) in enumerate(zip(machines, minutes, strict=True)):
        by_minute.setdefault((machine, minute), []).append(i)
        by_hour.setdefault((machine, minute[:13]), []).append(i)
    for level, groups in (("minute", by_minute), ("hour", by_hour)):
        for (machine, prefix), rows in groups.items():
            yield level, machine, [prefix], [Bucket.of(values[rows], peaks[rows], finite, hist=level == "hour")]


def _reduced(values: np.ndarray, peaks: np.ndarray, starts: list[int], hist: bool) -> list[Bucket]:
    """Stats of consecutive row ranges beginning at `starts`, in a few numpy calls."""
    if len(starts) == 1:
        return [Bucket.of(values, peaks, hist=hist)]
    lo = np.minimum.reduceat(values, starts, axis=0)
    hi = np.maximum.reduceat(values, starts, axis=0)
    sums = np.add.reduceat(values, starts, axis=0)
    plo, phi = np.minimum.reduceat(peaks, starts).tolist(), np.maximum.reduceat(peaks, starts).tolist()
    counts = np.diff([*starts, len(values)])
    means = sums / counts[:, None]
    hists: list[np.ndarray | None] = [None] * len(starts)
    if hist:
        group = np.repeat(np.arange(len(starts)), counts)
        flat = np.bincount(group * PEAK_BINS + np.searchsorted(PEAK_EDGES, peaks, side="right"),
                           minlength=len(starts) * PEAK_BINS)
        hists = list(flat.reshape(len(starts), PEAK_BINS))
    return [Bucket(int(counts[k]), lo[k], hi[k], means[k], plo[k], phi[k], hists[k]) for k in range(len(starts))]


class Rollups:
    """The writer's side: merges each group into its buckets in memory and writes the buckets it
    changed every FLUSH_S seconds, inside a writer transaction that also records the newest row
    id they cover (`covered`). Readers add the raw rows after `covered`, so answers stay exact.

    Why not write every bucket in every commit: a single reading's commit wrote 5 WAL pages; its
    minute and hour buckets (machine and fleet) added 2-3 more, 56 % more flash writes per reading.
    Flushed every 10 s, a bucket is written a few times instead of once per reading. A crash loses
    nothing: start-up rolls up the rows after `covered` again (a few seconds of readings).

    Rows with id < `backfill_next`, or in (`backfill_end`, `covered`], are in the stored rollups;
    until the backfill has reached `backfill_end`, readers use raw rows."""

    def __init__(self) -> None:
        self._cache: dict[Key, Bucket] = {}  # every bucket's latest state, stored or not
        self._dirty: set[Key] = set()  # keys whose state in _cache is not stored yet
        self._staged: dict[Key, Bucket] = {}  # this transaction's new states
        self._flushing = False  # this transaction stores every dirty bucket
        self._invalidate = False  # this transaction changed stored buckets behind the cache
        # (level, machine) -> no stored bucket is later than this: a later one is new without a
        # lookup (a sensor's next minute). Deletions only make it an overestimate, which is safe.
        self._newest: dict[tuple[str, str], int] = {}
        self.backfill_next = 1
        self.backfill_end = 0
        self.covered = 0  # stored buckets include rows up to this id
        self.seen = 0  # buckets in memory include rows up to this id
        self._staged_seen: int | None = None
        self._covering = 0
        self.flushed_at = time.monotonic()
        self.skipped = 0  # rows whose time is not in FD-REST's format

    def load(self, conn: sqlite3.Connection, raw_table: str) -> int:
        """Read the state and roll up again the rows after `covered` (a crash or kill left them
        in memory only); returns how many. Call before the writer thread starts."""
        self.backfill_next, self.backfill_end, self.covered = rollup_state(conn)
        self.seen = self.covered
        redone = 0
        while True:
            rows = conn.execute(f"SELECT id, time, machine, {', '.join(DATA_COLUMNS)} FROM {raw_table} "
                                "WHERE id > ? ORDER BY id LIMIT ?", (self.covered, BACKFILL_ROWS)).fetchall()
            if not rows:
                return redone
            conn.execute("BEGIN IMMEDIATE")
            try:
                self._add_rows(conn, rows, last_id=rows[-1][0])
                self.flush(conn)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                self.rollback()
                raise
            self.commit()
            redone += len(rows)

    @property
    def ready(self) -> bool:
        return self.backfill_next > self.backfill_end

    def due(self, now: float | None = None) -> bool:
        return bool(self._dirty or self._staged) and (
            (now or time.monotonic()) - self.flushed_at >= FLUSH_S or len(self._dirty) > DIRTY_MAX)

    # -- the writer's transaction ----------------------------------------------------------

    def add(self, conn: sqlite3.Connection, times: list[str], machines: list[str], values: np.ndarray,
            peaks: np.ndarray, finite: bool = True, last_id: int | None = None) -> None:
        """Merge readings (rows of `values`: the 43 data columns) into their buckets; `last_id`:
        the newest row id among them (None for the backfill's older rows). Call commit() or
        rollback() after the transaction; nothing is written unless flush() is."""
        if last_id is not None:
            self._staged_seen = max(self._staged_seen or self.seen, last_id)
        merged: dict[Key, Bucket] = {}
        for level, machine, prefixes, parts in _parts(times, machines, values, peaks, finite):
            for prefix, part in zip(prefixes, parts, strict=True):
                bucket = minute_of(prefix) if prefix else None
                if bucket is None:
                    if level == "minute":
                        self.skipped += part.n
                    continue
                for key in ((level, machine, bucket), (level, FLEET, bucket)):
                    old = merged.get(key)
                    merged[key] = part if old is None else old.merge(part)
        for key, part in merged.items():
            old = self._get(conn, key)
            self._staged[key] = part if old is None else old.merge(part)

    @property
    def stored_through(self) -> int:
        """The newest row id the stored buckets include, in the open transaction."""
        return self._covering if self._flushing else self.covered

    def flush(self, conn: sqlite3.Connection) -> None:
        """Store every changed bucket and the newest row id they include, in the caller's open
        transaction."""
        covered = self._staged_seen or self.seen
        by_level: dict[str, list[tuple]] = {level: [] for level in LEVELS}
        for key in self._dirty | set(self._staged):
            bucket = self._staged.get(key) or self._cache[key]
            by_level[key[0]].append(bucket.row(key[1], key[2], key[0]))
            mark = (key[0], key[1])
            if key[2] > self._newest.get(mark, key[2]):
                self._newest[mark] = key[2]
        for level, rows in by_level.items():
            if rows:
                conn.executemany(_WRITE[level], rows)
        conn.execute("INSERT OR REPLACE INTO fdedge_meta(key, value) VALUES (?, ?)", (META_COVERED, str(covered)))
        self._flushing = True
        self._covering = covered

    def commit(self) -> None:
        if len(self._cache) + len(self._staged) > CACHE_MAX:  # keep only what is not stored yet
            self._cache = {key: self._cache[key] for key in self._dirty}
        self._cache.update(self._staged)
        if self._flushing:
            self._dirty.clear()
            self.covered = self._covering
            self.flushed_at = time.monotonic()
        else:
            self._dirty.update(self._staged)
        if self._staged_seen is not None:
            self.seen = self._staged_seen
        self._staged.clear()
        self._staged_seen = None
        self._flushing = False
        if self._invalidate:
            self._cache.clear()
            self._newest.clear()
            self._invalidate = False

    def rollback(self) -> None:
        self._staged.clear()
        self._staged_seen = None
        self._flushing = False
        self._invalidate = False
        self._newest.clear()  # it may name buckets the rolled-back transaction wrote

    def _get(self, conn: sqlite3.Connection, key: Key) -> Bucket | None:
        found = self._staged.get(key) or self._cache.get(key)
        if found is not None:
            return found
        level, machine, bucket = key
        newest = self._newest.get((level, machine))
        if newest is None:
            newest = conn.execute(f"SELECT max(bucket) FROM {table(level)} WHERE machine = ?",
                                  (machine,)).fetchall()[0][0]
            newest = -(2 ** 62) if newest is None else newest
            self._newest[(level, machine)] = newest
        if bucket > newest:
            return None
        rows = conn.execute(f"SELECT {_READ[level]} FROM {table(level)} WHERE machine = ? AND bucket = ?",
                            (machine, bucket)).fetchall()
        return Bucket.decode(*rows[0]) if rows else None

    def _add_rows(self, conn: sqlite3.Connection, rows: list[tuple], last_id: int | None = None) -> None:
        """Rows as (id, time, machine, 43 values), from a file: NULL values are NaN."""
        values = np.array([r[3:] for r in rows], dtype=np.float64).reshape(-1, N)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            peaks = np.nanmax(values[:, len(COLUMNS):], axis=1)
        self.add(conn, [r[1] or "" for r in rows], [r[2] for r in rows], values, peaks, finite=False,
                 last_id=last_id)

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
        self._forget_cache()

    def _forget_cache(self) -> None:
        """Retention changed stored buckets in this transaction (right after a flush, so nothing is
        left only in memory): the cache goes once it commits; a rollback keeps it as it was."""
        assert self._flushing, "retention must flush the rollups first"
        self._invalidate = True

    def recompute(self, conn: sqlite3.Connection, raw_table: str, keys: Iterable[tuple[str, int]]) -> None:
        """Make minute buckets `keys` (machine, bucket) and their hours exact again from the rows
        left (retention deleted some of their readings)."""
        minutes: dict[Key, Bucket | None] = {}
        hours: set[tuple[str, int]] = set()
        select = f"SELECT {', '.join(DATA_COLUMNS)} FROM {raw_table} WHERE time >= ? AND time < ? "
        covered = "AND (id < ? OR (id > ? AND id <= ?))"
        for machine, minute in keys:
            sql, args = (select + covered, [epoch_text(minute), epoch_text(minute + 60),
                                            self.backfill_next, self.backfill_end, self.stored_through])
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
                conn.execute(_WRITE["minute"], bucket.row(machine, minute, "minute"))
        for machine, hour in hours:
            parts = conn.execute(f"SELECT {_READ['minute']} FROM {table('minute')} "
                                 "WHERE machine = ? AND bucket >= ? AND bucket < ?",
                                 (machine, hour, hour + 3600)).fetchall()
            if not parts:
                conn.execute(f"DELETE FROM {table('hour')} WHERE machine = ? AND bucket = ?", (machine, hour))
                continue
            total = Bucket.decode(*parts[0])  # minutes keep no histogram: this hour's is unknown now
            for part in parts[1:]:
                total = total.merge(Bucket.decode(*part))
            conn.execute(_WRITE["hour"], total.row(machine, hour, "hour"))
        self._forget_cache()

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
            self._add_rows(conn, found)
        self.flush(conn)  # stored with the cursor: a crash repeats no chunk
        self.backfill_next = found[-1][0] + 1 if len(found) == rows else self.backfill_end + 1
        conn.execute("INSERT OR REPLACE INTO fdedge_meta(key, value) VALUES (?, ?)",
                     (META_NEXT, str(self.backfill_next)))
        return len(found)


def rollup_state(conn: sqlite3.Connection) -> tuple[int, int, int]:
    """(backfill next, backfill end, covered) from fdedge_meta."""
    meta = dict(conn.execute("SELECT key, value FROM fdedge_meta WHERE key IN (?, ?, ?)",
                             (META_NEXT, META_END, META_COVERED)).fetchall())
    end = int(meta.get(META_END, 0))
    return int(meta.get(META_NEXT, 1)), end, int(meta.get(META_COVERED, end))


def backfill_state(conn: sqlite3.Connection) -> tuple[int, int]:
    following, end, _ = rollup_state(conn)
    return following, end


def migrate(conn: sqlite3.Connection, raw_table: str) -> None:
    """Create the rollup tables; rows already stored (an FD-REST or older FD-Edge file) are
    rolled up in the background afterwards, so start-up does not wait for them."""
    if conn.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (table("minute"),)).fetchall():
        if not any(c[1] == "peaks" for c in conn.execute(f"PRAGMA table_info({table('hour')})")):
            conn.execute(ADD_PEAKS)  # a file of the first rollup version: its hours' histograms are unknown
        return
    for level in LEVELS:
        conn.execute(CREATE.format(t=table(level)))
    conn.execute(ADD_PEAKS)
    first, last = conn.execute(f"SELECT coalesce(min(id), 1), coalesce(max(id), 0) FROM {raw_table}").fetchall()[0]
    conn.executemany("INSERT OR REPLACE INTO fdedge_meta(key, value) VALUES (?, ?)",
                     [(META_NEXT, str(first)), (META_END, str(last)), (META_COVERED, str(last))])
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


def covered(conn: sqlite3.Connection) -> int:
    """The newest row id the stored buckets include: later rows are read raw (the tail)."""
    return rollup_state(conn)[2]


def tail_where(after: int, start_text: str, end_text: str, machine: str | None, end_inclusive: bool = True
               ) -> tuple[str, list]:
    """Rows not in the stored buckets yet: by rowid (a few seconds of readings), never by index."""
    sql = f"id > ? AND time >= ? AND time {'<=' if end_inclusive else '<'} ?"
    args: list = [after, start_text, end_text]
    if machine:
        sql += " AND machine = ?"
        args.append(machine)
    return sql, args


def read(conn: sqlite3.Connection, raw_table: str, level: str, machine: str | None, start: float, end: float
         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Buckets from the one holding `start` to `end`, the raw tail folded in as one-reading
    buckets: (bucket starts, counts, stats (k, 3N)), sorted by start. One read transaction, so
    the stored buckets and `covered` agree."""
    width = LEVELS[level]
    first = int(start // width * width)
    conn.execute("BEGIN")
    try:
        after = covered(conn)
        rows = conn.execute(f"SELECT bucket, n, stats FROM {table(level)} "
                            "WHERE machine = ? AND bucket >= ? AND bucket <= ? ORDER BY bucket",
                            (machine or FLEET, first, int(end))).fetchall()
        where, args = tail_where(after, epoch_text(first), epoch_text(end), machine)
        tail = conn.execute(f"SELECT time, {', '.join(DATA_COLUMNS)} FROM {raw_table} NOT INDEXED WHERE {where}",
                            args).fetchall()
    finally:
        conn.execute("COMMIT")
    starts = [r[0] for r in rows]
    counts = [r[1] for r in rows]
    stats = np.frombuffer(b"".join(r[2] for r in rows), DTYPE).reshape(len(rows), 3 * N).astype(np.float64)
    placed = [(minute_of(t[0][:16 if level == "minute" else 13]), t) for t in tail if t[0]]
    placed = [(b, t) for b, t in placed if b is not None]
    if placed:
        values = np.array([t[1:] for _, t in placed], dtype=np.float64).reshape(-1, N)
        starts += [b for b, _ in placed]
        counts += [1] * len(placed)
        stats = np.vstack((stats, np.hstack((values, values, values))))
    order = np.argsort(np.array(starts, dtype=np.float64), kind="stable")
    return (np.array(starts, dtype=np.float64)[order], np.array(counts, dtype=np.float64)[order], stats[order])
