"""Background rollup work in the writer thread, between ingest groups: the readings a database
held before it had rollups (an FD-REST file, or an earlier FD-Edge's) are rolled up in chunks,
and buckets changed while ingest is quiet are stored every FLUSH_S seconds."""

from __future__ import annotations

import asyncio
import logging
import time

from edge.errors import Unavailable
from edge.store.rollups import FLUSH_S
from edge.store.writer import Writer

log = logging.getLogger(__name__)
PAUSE_S = 0.005  # between chunks: ingest groups go first


async def run(writer: Writer) -> None:
    rollups = writer.rollups
    if not rollups.ready:
        started, total = time.monotonic(), 0
        while not rollups.ready:
            try:
                total += await writer.call(writer.backfill_rollups)
            except Unavailable as exc:
                log.warning("rollup backfill paused: %s", exc.message)
                await asyncio.sleep(5)
                continue
            await asyncio.sleep(PAUSE_S)
        log.info("rolled up %d stored readings in %.1f s; long ranges now read rollups", total,
                 time.monotonic() - started)
    while True:
        await asyncio.sleep(FLUSH_S)
        try:
            await writer.call(writer.flush_rollups)
        except Unavailable as exc:
            log.warning("storing the rollups failed (they stay in memory, retried): %s", exc.message)
