"""Rolls up, in the background, the readings a database held before it had rollups (an FD-REST
file, or an earlier FD-Edge's): chunks in the writer thread between ingest groups."""

from __future__ import annotations

import asyncio
import logging
import time

from edge.errors import Unavailable
from edge.store.writer import Writer

log = logging.getLogger(__name__)
PAUSE_S = 0.005  # between chunks: ingest groups go first


async def run(writer: Writer) -> None:
    rollups = writer.rollups
    if rollups.ready:
        return
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
