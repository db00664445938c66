"""The integrity check of a database too large to check during start-up, run in a background
thread on its own read-only connection.

Why: `PRAGMA quick_check` reads the whole file; on a 10M-row database (4 GB) that was 72 s from a
cold SD card before /readyz could answer. Started after the server listens, it costs start-up
nothing; what it finds is reported on /readyz, /metrics (fdedge_integrity) and the log, and
stops ingest: writing into a damaged b-tree can spread the damage."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

from edge.store.database import connect

log = logging.getLogger(__name__)
STATES = {"pending": -1.0, "running": -1.0, "ok": 1.0, "corrupt": 0.0, "failed": -2.0}


class IntegrityCheck:
    def __init__(self, db_path: Path, checked_at_start: bool,
                 on_corrupt: Callable[[str], None] | None = None) -> None:
        self.db_path = db_path
        self.state = "ok" if checked_at_start else "pending"
        self.detail = "checked during start-up" if checked_at_start else ""
        self.seconds: float | None = None
        self.on_corrupt = on_corrupt
        self._conn: sqlite3.Connection | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.state != "pending":
            return
        self._thread = threading.Thread(target=self._run, name="fdedge-integrity", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        conn = self._conn
        if conn is not None:
            conn.interrupt()
        if self._thread is not None:
            self._thread.join(timeout=5)

    @property
    def value(self) -> float:
        """For /metrics: 1 ok, 0 corrupt, -1 not finished yet, -2 could not run."""
        return STATES[self.state]

    @property
    def problem(self) -> str | None:
        if self.state == "corrupt":
            return (f"the database failed its integrity check ({self.detail}); ingest is stopped: "
                    "restore a backup or move the file away")
        return None

    def _run(self) -> None:
        self.state = "running"
        started = time.monotonic()
        log.info("checking the integrity of %s in the background", self.db_path.name)
        try:
            self._conn = connect(self.db_path, readonly=True, busy_ms=5000)
            rows = self._conn.execute("PRAGMA quick_check(20)").fetchall()
        except sqlite3.Error as exc:
            if "interrupted" in str(exc):
                self.state = "pending"
                return
            rows = [(f"cannot be read: {exc}",)]
        finally:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
        self.seconds = time.monotonic() - started
        findings = [str(r[0]) for r in rows]
        if findings == ["ok"]:
            self.state, self.detail = "ok", f"quick_check ok in {self.seconds:.1f} s"
            log.info("database integrity: %s", self.detail)
            return
        self.state, self.detail = "corrupt", "; ".join(findings)[:500]
        log.error("DATABASE CORRUPT: %s (quick_check: %s); ingest stopped, restore a backup",
                  self.db_path, self.detail)
        if self.on_corrupt is not None:
            self.on_corrupt(self.detail)
