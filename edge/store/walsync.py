"""Durable answers without a blocking commit: `--sync full` as a thread that fdatasyncs the WAL.

With SQLite's synchronous=FULL every COMMIT waits for its own fsync, and the single writer waits
with it, so the next group cannot even start. Here the writer commits with synchronous=NORMAL
and hands the answers to this thread, which fdatasyncs the WAL file and only then lets them go.
Meanwhile the writer commits the next groups, and one fdatasync covers every commit written
before it. An answered reading is on disk exactly as with FULL: its WAL frames were written
before the fdatasync that preceded its answer. Checkpoints are as safe as under FULL: with
NORMAL, SQLite syncs the WAL before copying it into the database and the database after.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

Settlement = tuple[Any, Any, BaseException | None]  # (future, result, error), as the writer collects them


class WalSyncer:
    def __init__(self, wal_path: Path, deliver: Callable[[list[Settlement], OSError | None], None]) -> None:
        """`deliver(settlements, error)` runs in this thread after each sync; `error` is set when
        the disk refused it, and the settlements of that sync must then not claim durability."""
        self.wal_path = wal_path
        self.deliver = deliver
        self.syncs = 0
        self._fd: int | None = None
        # The writer's hand-offs: (settlements, wrote) or None to stop. A SimpleQueue is one C
        # call per side, where a Condition costs a lock allocation and Python code per wait.
        self._queue: queue.SimpleQueue[tuple[list[Settlement], bool] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="fdedge-walsync", daemon=True)
        self._thread.start()

    def submit(self, settlements: list[Settlement], wrote: bool) -> None:
        """Called by the writer after a group: `wrote` when it committed anything since the last call."""
        self._queue.put((settlements, wrote))

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        """Sync and deliver what is waiting, then end the thread (call after the writer stopped)."""
        self._queue.put(None)
        self._thread.join(timeout=10)
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _run(self) -> None:
        stopping = False
        while not stopping:
            # Everything handed over while the last sync ran goes under one fdatasync.
            items = [self._queue.get()]
            while True:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stopping = None in items
            settlements = [s for item in items if item is not None for s in item[0]]
            dirty = any(item[1] for item in items if item is not None)
            error = None
            if dirty:
                try:
                    self._sync()
                except OSError as exc:
                    log.error("fdatasync of %s failed: %s", self.wal_path, exc)
                    error = exc
            if settlements:
                try:
                    self.deliver(settlements, error)
                except Exception:  # the thread must outlive a bug in delivery
                    log.exception("delivering %d answers after a sync failed", len(settlements))
            del items, settlements  # not held (with their readings) while waiting for the next

    def _sync(self) -> None:
        if self._fd is None:
            # Opened at the first sync, after the first commit: SQLite creates the WAL lazily. The
            # writer's connection stays open for the process's life, so the file is never replaced.
            self._fd = os.open(self.wal_path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        getattr(os, "fdatasync", os.fsync)(self._fd)  # macOS has only fsync
        self.syncs += 1
