"""Background pruning so an SD card never fills: oldest readings go first, in small chunks
run by the writer thread between commits, so ingest is never blocked for long."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import sqlite3
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial

from edge import memory
from edge.errors import Unavailable
from edge.fdrest import format_time
from edge.metrics import Metrics
from edge.settings import Settings
from edge.store import machine_state, shadow_table
from edge.store.database import transaction
from edge.store.rollups import FLEET, Rollups, minute_of
from edge.store.schema import TABLE
from edge.store.writer import Writer

log = logging.getLogger(__name__)
# Rows per chunk, each chunk its own short transaction in the writer thread. A reading that
# arrives during a chunk waits for it, so a chunk must take about what a quiet commit does: 1,000
# rows took 13 ms on a 10M-row file and tripled single-reading p99 (bench "scale"); 250 take ~3 ms.
CHUNK = 250
PAUSE_S = 0.002  # at least this between chunks, and at least as long as the last one took, so a
# pass never takes more than half of the writer's time
KEY_DAYS = 2  # idempotency keys outlive any sensor's retry window
VACUUM_PAGES = 256  # pages handed back to the filesystem per writer task
VACUUM_SLACK = 1024  # free pages kept for the next inserts (no shrink-then-grow churn)


@dataclass
class Pruned:
    """What one chunk removed: its rows, machines left without readings, minute buckets touched."""

    rows: int = 0
    machines_gone: list[str] = field(default_factory=list)
    touched: set[tuple[str, int]] = field(default_factory=set)
    seconds: float = 0.0  # how long the chunk held the writer


def _due(conn: sqlite3.Connection, days: float, keep_rows: int, limit: int) -> list[tuple[int, str, str | None]]:
    """The next rows to delete, found by index: the oldest by time past --retention-days (the time
    index), else the oldest by id past --retention-rows (the count kept per machine). Nothing due
    costs one index probe and one read of the machines table."""
    rows: list[tuple[int, str, str | None]] = []
    if days > 0:
        now = datetime.now(UTC)
        newest = newest_time(conn)
        reference = min(now, newest) if newest is not None else now
        cutoff = format_time(reference - timedelta(days=days))
        rows = conn.execute(f"SELECT id, machine, time FROM {TABLE} WHERE time < ? ORDER BY time LIMIT ?",
                            (cutoff, limit)).fetchall()
    if keep_rows > 0 and len(rows) < limit:
        excess = min(machine_state.total_readings(conn) - len(rows) - keep_rows, limit - len(rows))
        if excess > 0:
            taken = {r[0] for r in rows}
            oldest = conn.execute(f"SELECT id, machine, time FROM {TABLE} ORDER BY id LIMIT ?",
                                  (excess + len(rows),)).fetchall()
            rows += [r for r in oldest if r[0] not in taken][:excess]
    return rows


def prune_chunk(conn: sqlite3.Connection, rollups: Rollups, days: float, keep_rows: int,
                limit: int = CHUNK, on_gone: Callable[[list[str]], None] | None = None) -> Pruned:
    """Age is measured from min(clock, newest reading), inside the same transaction as the delete,
    so a clock that jumps years ahead (dead RTC battery, bad NTP) cannot wipe the history. The
    readings, their machines' counts and the rollups they were in change together."""
    out = Pruned()
    started = time.perf_counter()
    try:
        with transaction(conn):
            _prune(conn, rollups, days, keep_rows, limit, out)
    except BaseException:
        rollups.rollback()
        raise
    rollups.commit()
    if out.machines_gone and on_gone is not None:
        # here, in the writer thread right after the COMMIT: before any later commit brings one back
        on_gone(out.machines_gone)
    out.seconds = time.perf_counter() - started
    return out


def _prune(conn: sqlite3.Connection, rollups: Rollups, days: float, keep_rows: int, limit: int, out: Pruned) -> None:
    due = _due(conn, days, keep_rows, limit)
    if due:
        rollups.flush(conn)  # the buckets in memory go first: the cut below changes stored ones
        conn.execute(f"DELETE FROM {TABLE} WHERE id IN (SELECT value FROM json_each(?))",
                     (json.dumps([r[0] for r in due]),))
        shadow_table.forget(conn, [r[0] for r in due])  # a shadow model's faults go with their readings
        counts = Counter(r[1] for r in due)
        out.machines_gone = machine_state.forget(conn, TABLE, counts)
        rollups.forget_before(conn, dict.fromkeys(counts, None) | _first_times(conn, list(counts)))
        for _, machine, t in due:
            minute = minute_of(t[:16]) if t else None
            if minute is not None:
                out.touched.update(((machine, minute), (FLEET, minute)))
        out.rows = len(due)
    _prune_keys(conn)


def _prune_keys(conn: sqlite3.Connection) -> None:
    """Idempotency keys past KEY_DAYS, oldest first by rowid (their insertion order), so nothing
    is scanned when none is due."""
    cutoff = format_time(datetime.now(UTC) - timedelta(days=KEY_DAYS))
    oldest = conn.execute("SELECT rowid, created FROM fdedge_ingest_keys ORDER BY rowid LIMIT ?", (CHUNK,)).fetchall()
    due = [rowid for rowid, created in oldest if created < cutoff]
    if due:
        conn.execute("DELETE FROM fdedge_ingest_keys WHERE rowid IN (SELECT value FROM json_each(?))",
                     (json.dumps(due),))


def newest_time(conn: sqlite3.Connection) -> datetime | None:
    rows = conn.execute(f"SELECT time FROM {TABLE} ORDER BY id DESC LIMIT 1").fetchall()  # never leave a
    row = rows[0] if rows else None  # statement open on the writer's connection: COMMIT would fail
    try:
        return datetime.fromisoformat(row[0]).replace(tzinfo=UTC) if row and row[0] else None
    except ValueError:
        return None


def _first_times(conn: sqlite3.Connection, names: list[str] | None) -> dict[str, str | None]:
    """The first remaining time of machines `names` (None: all) and of the fleet (FLEET)."""
    if names is None:
        rows = conn.execute(f"SELECT name, first_time FROM {machine_state.MACHINES}").fetchall()
    else:
        rows = conn.execute(f"SELECT name, first_time FROM {machine_state.MACHINES} WHERE name IN "
                            "(SELECT value FROM json_each(?))", (json.dumps(names),)).fetchall()
    firsts: dict[str, str | None] = dict(rows)
    firsts[FLEET] = conn.execute(f"SELECT min(time) FROM {TABLE}").fetchall()[0][0]
    return firsts


def _still_held(conn: sqlite3.Connection, touched: set[tuple[str, int]]) -> list[tuple[str, int]]:
    """Touched minute buckets some remaining reading may still fall in: at or after their
    machine's first remaining minute (usually one per machine, where the cut went through)."""
    firsts = _first_times(conn, None)
    keep = []
    for machine, minute in touched:
        first = firsts.get(machine)
        first_minute = minute_of(first[:16]) if first else None
        if first_minute is not None and minute >= first_minute:
            keep.append((machine, minute))
    return sorted(keep)


def recompute(conn: sqlite3.Connection, rollups: Rollups, keys: list[tuple[str, int]]) -> None:
    try:
        with transaction(conn):
            rollups.flush(conn)
            rollups.recompute(conn, TABLE, keys)
    except BaseException:
        rollups.rollback()
        raise
    rollups.commit()


def vacuum_step(conn: sqlite3.Connection) -> tuple[int, float]:
    """Hand up to VACUUM_PAGES free pages back to the filesystem (databases created with
    auto_vacuum=INCREMENTAL, which FD-Edge's are); returns the free pages left above the slack
    and how long the step held the writer."""
    started = time.perf_counter()
    if conn.execute("PRAGMA auto_vacuum").fetchall()[0][0] != 2:
        return 0, 0.0
    free = conn.execute("PRAGMA freelist_count").fetchall()[0][0]
    if free <= VACUUM_SLACK:
        return 0, 0.0
    conn.execute(f"PRAGMA incremental_vacuum({min(VACUUM_PAGES, free - VACUUM_SLACK)})").fetchall()
    left = conn.execute("PRAGMA freelist_count").fetchall()[0][0]
    return (max(left - VACUUM_SLACK, 0) if left < free else 0), time.perf_counter() - started  # 0: nothing moved


async def prune_once(writer: Writer, settings: Settings, metrics: Metrics) -> int:
    """One pass: chunks of at most CHUNK rows, each its own transaction in the writer thread, so
    ingest commits between them; then the buckets the cut went through are made exact, and the
    space freed goes back to the filesystem."""
    total, gone = 0, 0
    touched: set[tuple[str, int]] = set()
    while True:
        pruned: Pruned = await writer.call(
            partial(prune_chunk, rollups=writer.rollups, days=settings.retention_days,
                    keep_rows=settings.retention_rows, on_gone=writer.on_machines_gone))
        total += pruned.rows
        gone += len(pruned.machines_gone)
        touched |= pruned.touched
        if pruned.rows < CHUNK:
            break
        await asyncio.sleep(max(PAUSE_S, pruned.seconds))  # let queued ingest commit between chunks
    if total:
        metrics.pruned.inc(total)
        writer.machines_gone(gone)
        keys = await writer.call(partial(_still_held, touched=touched))
        for start in range(0, len(keys), 20):
            await writer.call(partial(recompute, rollups=writer.rollups, keys=keys[start:start + 20]))
        while True:
            left, took = await writer.call(vacuum_step)
            if not left:
                break
            await asyncio.sleep(max(PAUSE_S, took))
        # The file shrinks when a checkpoint copies the vacuum into it: the checkpointer's thread,
        # so the writer does not wait for those pages.
        writer.checkpoint_soon()
        log.info("retention removed %d readings", total)
    metrics.retention_passes.inc()
    return total


async def run(writer: Writer, settings: Settings, metrics: Metrics) -> None:
    """Prune every `retention_interval` seconds until cancelled; a failed pass is logged, not fatal.

    Passes start `retention_interval` apart, however long a pass's tail (exact buckets, vacuum)
    takes, so the rows stored between two cuts stay bounded by the rate times the interval."""
    loop = asyncio.get_running_loop()
    while True:
        started = loop.time()
        try:
            await prune_once(writer, settings, metrics)
        except Unavailable as exc:
            log.warning("retention pass failed: %s", exc.message)
        # Clients that went away mid-response leave reference cycles (an error's traceback and the
        # frames of its stream) that only a full collection frees, and start-up froze the rest.
        gc.collect()
        memory.trim(min_interval=0)  # hand back what bursts of large batches left behind
        await asyncio.sleep(max(settings.retention_interval - (loop.time() - started), 0.0))
