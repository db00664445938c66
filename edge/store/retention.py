"""Background pruning so an SD card never fills: oldest readings go first, in small chunks
run by the writer thread between commits, so ingest is never blocked for long."""

from __future__ import annotations

import asyncio
import gc
import logging
import sqlite3
from datetime import UTC, datetime, timedelta

from edge import memory
from edge.errors import Unavailable
from edge.fdrest import format_time
from edge.metrics import Metrics
from edge.settings import Settings
from edge.store.database import transaction
from edge.store.schema import TABLE
from edge.store.writer import Writer

log = logging.getLogger(__name__)
CHUNK = 5000
KEY_DAYS = 2  # idempotency keys outlive any sensor's retry window


def prune_chunk(conn: sqlite3.Connection, days: float, keep_rows: int) -> int:
    """Age is measured from min(clock, newest reading), inside the same transaction as the delete,
    so a clock that jumps years ahead (dead RTC battery, bad NTP) cannot wipe the history."""
    with transaction(conn):
        deleted = 0
        if days > 0:
            now = datetime.now(UTC)
            newest = newest_time(conn)
            reference = min(now, newest) if newest is not None else now
            cutoff = format_time(reference - timedelta(days=days))
            deleted += conn.execute(
                f"DELETE FROM {TABLE} WHERE id IN (SELECT id FROM {TABLE} WHERE time < ? ORDER BY id LIMIT ?)",
                (cutoff, CHUNK)).rowcount
        if keep_rows > 0:
            found = conn.execute(f"SELECT id FROM {TABLE} ORDER BY id DESC LIMIT 1 OFFSET ?", (keep_rows,)).fetchall()
            row = found[0] if found else None
            if row is not None:
                deleted += conn.execute(
                    f"DELETE FROM {TABLE} WHERE id IN (SELECT id FROM {TABLE} WHERE id <= ? ORDER BY id LIMIT ?)",
                    (row[0], CHUNK)).rowcount
        key_cutoff = format_time(datetime.now(UTC) - timedelta(days=KEY_DAYS))
        conn.execute("DELETE FROM fdedge_ingest_keys WHERE created < ?", (key_cutoff,))
    return deleted


def newest_time(conn: sqlite3.Connection) -> datetime | None:
    rows = conn.execute(f"SELECT time FROM {TABLE} ORDER BY id DESC LIMIT 1").fetchall()  # never leave a
    row = rows[0] if rows else None  # statement open on the writer's connection: COMMIT would fail
    try:
        return datetime.fromisoformat(row[0]).replace(tzinfo=UTC) if row and row[0] else None
    except ValueError:
        return None


async def prune_once(writer: Writer, settings: Settings, metrics: Metrics) -> int:
    """One pass: chunks of at most CHUNK rows, each its own transaction in the writer thread, so
    ingest commits between them."""
    total = 0
    while True:
        deleted = await writer.call(
            lambda conn: prune_chunk(conn, settings.retention_days, settings.retention_rows))
        total += deleted
        if deleted < CHUNK:
            break
        await asyncio.sleep(0)  # let queued ingest commit between chunks
    if total:
        metrics.pruned.inc(total)
        await writer.call(writer.forget_machines_without_readings)
        # fetchall: a cursor handed back to the loop keeps its statement open on the writer's
        # connection until the loop drops it, and the next group's COMMIT fails meanwhile.
        await writer.call(lambda conn: conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall())
        log.info("retention removed %d readings", total)
    return total


async def run(writer: Writer, settings: Settings, metrics: Metrics) -> None:
    """Prune every `retention_interval` seconds until cancelled; a failed pass is logged, not fatal."""
    while True:
        try:
            await prune_once(writer, settings, metrics)
        except Unavailable as exc:
            log.warning("retention pass failed: %s", exc.message)
        # Clients that went away mid-response leave reference cycles (an error's traceback and the
        # frames of its stream) that only a full collection frees, and start-up froze the rest.
        gc.collect()
        memory.trim(min_interval=0)  # hand back what bursts of large batches left behind
        await asyncio.sleep(settings.retention_interval)
