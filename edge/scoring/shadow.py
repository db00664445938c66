"""Shadow mode: a candidate model scores the readings the active one stored, off the ingest path.

The writer's post-commit hook hands each committed batch over (`offer`: a reference into a bounded
in-memory queue, never a wait); the shadow's own thread takes what queued every INTERVAL_S, runs
the candidate's predict in batches and writes the faults to `fdedge_shadow` on its own connection,
in one short transaction per batch. When the queue is full the hook drops and counts; the thread
then reads the readings it missed from SQLite by id, so the side table still covers every reading
stored after the shadow started.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import numpy as np

from edge import memory
from edge.errors import ModelRejected, StartupError
from edge.scoring.model import Model
from edge.scoring.model_store import ModelStore, check
from edge.store import shadow_table
from edge.store.database import connect, transaction
from edge.store.writer import Stored

log = logging.getLogger("fdedge.shadow")
# Readings waiting in memory at most; past it the hook drops and the thread catches up from SQLite.
# Each waits as the batch's Python lists (about 1 KB a reading), so the bound is also the memory's.
QUEUE_ROWS = 5_000
BATCH_ROWS = 1_000  # readings per predict call and per transaction (1,000 x 35 float64: one mapping)
INTERVAL_S = 0.2  # the thread coalesces what arrived for this long: few, short write transactions
END = 2**63 - 1
STOP_BUDGET_S = 5.0  # a stop scores what committed before it for at most this long


class Shadow:
    def __init__(self, db_path: Path, model: Model, version: str, *, resume: bool = False,
                 queue_rows: int = QUEUE_ROWS, batch_rows: int = BATCH_ROWS, interval: float = INTERVAL_S) -> None:
        """`resume`: after the newest reading this version shadowed before (a restart), else after the
        newest reading now (a shadow just set scores what arrives from now on)."""
        self.db_path, self.model, self.version, self.resume = db_path, model, version, resume
        self.queue_rows, self.batch_rows, self.interval = queue_rows, batch_rows, interval
        self._queue: deque[tuple[int, list[list]]] = deque()
        self._queued = 0
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._behind = False  # something was dropped: read SQLite after the last id scored
        self.scored = 0  # readings written to the side table
        self.dropped = 0  # readings the hook could not queue (then caught up from SQLite)
        self.caught_up = 0  # readings read back from SQLite
        self.errors = 0
        self.after = 0  # the newest reading id scored (or the newest when the shadow started)
        self.started = time.time()
        self._thread = threading.Thread(target=self._run, name=f"fdedge-shadow-{version}", daemon=True)
        self._ready = threading.Event()

    # -- the writer's side: never waits ------------------------------------------------------------

    def offer(self, stored: list[Stored]) -> None:
        """In the writer thread after a commit: queue references to the batches, or drop and count."""
        with self._lock:
            for s in stored:
                if s.replayed:
                    continue
                n = len(s.batch)
                if self._queued + n > self.queue_rows:
                    self.dropped += n
                    self._behind = True
                    continue
                self._queue.append((s.first_id, s.batch.rows))
                self._queued += n
        self._wake.set()

    # -- the shadow's thread -------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()
        self._ready.wait(10)  # the starting point is fixed before the caller reports the shadow running

    def catch_up_soon(self) -> None:
        """Read SQLite after the starting point once: what committed before the hook was attached."""
        with self._lock:
            self._behind = True
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(30)

    def _run(self) -> None:
        with closing(connect(self.db_path, sync="normal", busy_ms=10_000)) as conn:
            try:
                self.after = shadow_table.resume_after(conn, self.version if self.resume else None)
            finally:
                self._ready.set()
            while not self._stop.is_set():
                self._wake.wait(self.interval * 5)
                self._wake.clear()
                with self._lock:
                    busy = self._behind or self._queued >= self.batch_rows
                if not busy:
                    self._stop.wait(self.interval)  # coalesce: fewer, larger transactions
                self._logged(self._drain, conn)  # when stopped: what was handed over before, then the end
                memory.trim()  # at most every 5 s: what the batches' arrays and lists left behind
            self._logged(self._final_catch_up, conn)

    def _logged(self, step: Callable[[sqlite3.Connection], None], conn: sqlite3.Connection) -> None:
        try:
            step(conn)
        except (sqlite3.Error, RuntimeError, ValueError) as exc:  # onnxruntime raises RuntimeError
            self.errors += 1
            log.error("shadow model %s: scoring failed: %s", self.version, exc)

    def _take(self) -> tuple[list[tuple[int, list[list]]], bool]:
        with self._lock:
            items, behind = list(self._queue), self._behind
            self._queue.clear()
            self._queued, self._behind = 0, False
        return items, behind

    def _drain(self, conn: sqlite3.Connection) -> None:
        items, behind = self._take()
        ids: list[int] = []
        rows: list[list] = []
        for first, batch_rows in sorted(items, key=lambda item: item[0]):
            if first > self.after + 1:
                self._flush(conn, ids, rows)
                self._catch_up(conn, first)  # what was dropped before this batch
            skip = max(self.after + 1 - first, 0)  # already scored (read back from SQLite)
            for offset in range(skip, len(batch_rows)):
                ids.append(first + offset)
                rows.append(batch_rows[offset])
            self.after = max(self.after, first + len(batch_rows) - 1)
            if len(ids) >= self.batch_rows:
                self._flush(conn, ids, rows)
        self._flush(conn, ids, rows)
        if behind:
            self._catch_up(conn, END)

    def _catch_up(self, conn: sqlite3.Connection, before: int) -> None:
        """The readings stored after the last one scored and before `before`, read back by id."""
        while not self._stop.is_set():
            found = shadow_table.readings_between(conn, self.after, before, self.batch_rows)
            if not found:
                return
            ids = [r[0] for r in found]
            self.caught_up += len(ids)
            self.after = ids[-1]
            started = time.perf_counter()
            self._flush(conn, ids, [list(r[1:]) for r in found])
            # a long catch-up (after a restart) leaves the write lock to the writer at least half the time
            self._stop.wait(max(0.01, time.perf_counter() - started))

    def _final_catch_up(self, conn: sqlite3.Connection) -> None:
        """After a stop: what committed before it but was not handed over yet (the writer's hook runs
        just after its commit, so a stop can fall between the two). Bounded by the newest reading now
        and by STOP_BUDGET_S, so a shadow far behind still stops promptly."""
        newest = shadow_table.newest_reading(conn)
        deadline = time.monotonic() + STOP_BUDGET_S
        while self.after < newest and time.monotonic() < deadline:
            found = shadow_table.readings_between(conn, self.after, newest + 1, self.batch_rows)
            if not found:
                return
            self.caught_up += len(found)
            self.after = found[-1][0]
            self._flush(conn, [r[0] for r in found], [list(r[1:]) for r in found])

    def _flush(self, conn: sqlite3.Connection, ids: list[int], rows: list[list]) -> None:
        if not ids:
            return
        x = np.array(rows, dtype=np.float64)
        finite = np.asarray(np.isfinite(x).all(axis=1), dtype=bool)  # a legacy row with a missing feature is not scored
        y = self.model.predict(x[finite]) if finite.any() else np.empty((0, 8))
        kept = [i for i, ok in zip(ids, finite.tolist(), strict=True) if ok]
        with transaction(conn):
            shadow_table.insert(conn, self.version, kept, y.tolist())
        self.scored += len(kept)
        ids.clear()
        rows.clear()

    def counts(self) -> dict[str, int]:
        return {"scored": self.scored, "dropped": self.dropped, "caught_up": self.caught_up}

    def status(self) -> dict[str, Any]:
        with self._lock:
            queued = self._queued
        return {"version": self.version, "name": self.model.name, "scored": self.scored, "dropped": self.dropped,
                "caught_up": self.caught_up, "queued": queued, "errors": self.errors, "after_id": self.after,
                "running": self._thread.is_alive()}


async def watch(store: ModelStore, running: Callable[[], str | None], active: Callable[[], str],
                switch: Callable[[Model | None, str | None, bool], Awaitable[None]], interval: float = 1.0,
                threads: int = 1) -> None:
    """Poll the store's record for a shadow set or cleared from the CLI (or before a restart, then it
    resumes after its own newest row): a new one is loaded and checked off the event loop (as an
    activation is), then started by `switch`; one that fails its check is logged and left off."""
    stamp, first = -1, True
    while True:
        now = store.state_stamp()
        if now != stamp:
            stamp = now
            try:
                wanted = store.state()["shadow"]
                if wanted == active():
                    wanted = None  # promoted: the active model needs no shadow of itself
                if wanted != running():
                    model = await asyncio.to_thread(check, store.path(wanted), threads) if wanted else None
                    if store.state()["shadow"] == wanted or wanted is None:
                        await switch(model, wanted, first)
                        if wanted:
                            log.warning("shadow model %s (%s) scores beside the active one", wanted, model.name
                                        if model else "")
            except (ModelRejected, StartupError) as exc:
                log.error("model store: shadow model not started: %s", exc)
            first = False
        await asyncio.sleep(interval)
