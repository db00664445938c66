"""WAL checkpoints in a thread of their own, so copying pages into the database file (and that
file's fsync) never holds up the writer's commits.

Why: SQLite's automatic checkpoint runs inside the COMMIT that takes the WAL past 1,000 frames,
on the writer thread, and every reading queued behind that commit waits for it. A retention
chunk's deletes dirty pages all over the file: one such checkpoint took 240 ms on a 1M-row file
while the chunk itself took 3 ms, and single-reading p99 during a pass was 2.9x quiet.

When: once the writer has made CHANGES row changes since the last one (about what SQLite's own
1,000-frame trigger amounts to: a single reading's commit changes 2-3 rows and writes about 5
frames), or IDLE_S after the last one when anything changed, or at once after `soon()`. Why not
read the frame count from the `-shm` file: closing any descriptor of a file drops every POSIX
lock the process holds on it, SQLite's included, and another process's connection then reset
the WAL index under the server's feet (the soak test's server died of SIGBUS).
A PASSIVE checkpoint never waits for the writer or the readers; what a reader still needs is
left for the next one."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from pathlib import Path

from edge.store.database import CACHE_KIB

log = logging.getLogger(__name__)

CHANGES = 400
IDLE_S = 300.0  # a slow sensor's pages still reach the file, a few writes per checkpoint
POLL_S = 1.0


class Checkpointer:
    """Runs `PRAGMA wal_checkpoint(PASSIVE)` on its own connection when `note()`d changes reach
    CHANGES, IDLE_S after the last one, or at once after `soon()` (retention wants the space it
    freed back in the file). The writer's connection sets wal_autocheckpoint to 0 while this runs."""

    def __init__(self, db_path: Path) -> None:
        self.db_path = Path(db_path)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pending = 0  # row changes since the last checkpoint (the writer's thread adds)
        self._last = time.monotonic()
        self.checkpoints = 0
        self.failed = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="fdedge-checkpoint", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def note(self, changes: int) -> None:
        """The writer committed `changes` row changes (called from its thread, after the commit)."""
        self._pending += changes
        if self._pending >= CHANGES:
            self._wake.set()

    def soon(self) -> None:
        self._pending = max(self._pending, CHANGES)
        self._wake.set()

    def _run(self) -> None:
        conn = sqlite3.connect(str(self.db_path), isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA busy_timeout = 0")  # PASSIVE never waits; a busy one is retried later
            conn.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
            while not self._stop.is_set():
                self._wake.wait(POLL_S)
                self._wake.clear()
                if self._stop.is_set():
                    break
                pending = self._pending
                if pending >= CHANGES or (pending and time.monotonic() - self._last >= IDLE_S):
                    self._pending -= pending  # changes noted meanwhile count towards the next
                    self._checkpoint(conn)
        finally:
            conn.close()

    def _checkpoint(self, conn: sqlite3.Connection) -> None:
        self._last = time.monotonic()
        try:
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            self.checkpoints += 1
        except sqlite3.Error as exc:  # logged once per run of failures; the next poll tries again
            if not self.failed:
                log.warning("WAL checkpoint failed (%s); retrying", exc)
            self.failed += 1
            self._pending += CHANGES
            return
        self.failed = 0
