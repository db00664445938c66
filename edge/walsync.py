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
import threading
from pathlib import Path
from typing import Any, Callable

log = logging.getLogger("fdedge.writer")

Settlement = tuple[Any, Any, BaseException | None]  # (future, result, error), as the writer collects them


class WalSyncer:
    def __init__(self, wal_path: Path, deliver: Callable[[list[Settlement], OSError | None], None]) -> None:
        """`deliver(settlements, error)` runs in this thread after each sync; `error` is set when
        the disk refused it, and the settlements of that sync must then not claim durability."""
        self.wal_path = wal_path
        self.deliver = deliver
        self.syncs = 0
        self._fd: int | None = None
        self._cond = threading.Condition()
        self._waiting: list[Settlement] = []
        self._dirty = False
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="fdedge-walsync", daemon=True)
        self._thread.start()

    def submit(self, settlements: list[Settlement], wrote: bool) -> None:
        """Called by the writer after a group: `wrote` when it committed anything since the last call."""
        with self._cond:
            self._waiting.extend(settlements)
            self._dirty = self._dirty or wrote
            self._cond.notify()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        """Sync and deliver what is waiting, then end the thread (call after the writer stopped)."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._thread.join(timeout=10)
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._waiting and not self._dirty and not self._stopping:
                    self._cond.wait()
                if self._stopping and not self._waiting and not self._dirty:
                    return
                settlements, self._waiting = self._waiting, []
                dirty, self._dirty = self._dirty, False
            error = None
            if dirty:
                try:
                    self._sync()
                except OSError as exc:
                    log.error("fdatasync of %s failed: %s", self.wal_path, exc)
                    error = exc
            try:
                self.deliver(settlements, error)
            except Exception:  # noqa: BLE001 - the thread must outlive a bug in delivery
                log.exception("delivering %d answers after a sync failed", len(settlements))

    def _sync(self) -> None:
        if self._fd is None:
            # Opened at the first sync, after the first commit: SQLite creates the WAL lazily. The
            # writer's connection stays open for the process's life, so the file is never replaced.
            self._fd = os.open(self.wal_path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        getattr(os, "fdatasync", os.fsync)(self._fd)  # macOS has only fsync
        self.syncs += 1
