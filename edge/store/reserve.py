"""Room kept on the database's disk so that a full disk never stops the appliance from starting.

Why: SQLite cannot even open a WAL database for reading when its `-shm` and `-wal` files cannot
be created, and a clean shutdown deletes them; so after a reboot on a full disk FD-Edge could not
start, and reads, the pages and retention were down with ingest. A reserve file of RESERVE_BYTES
sits beside the database while there is room. If the database cannot be opened, the reserve is
given up and opening is tried again; the freed room is enough to open, read, acknowledge alarms
and run retention. Ingest then pauses (503 `disk_full`) until the disk has room for the reserve
again (taken back at once) or retention has freed as much inside the database (`ingest_paused`,
checked at most once a second). A disk that fills while running is SQLite's SQLITE_FULL, 503 as
well; the reserve is kept for the next start.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)
RESERVE_BYTES = 4 * 1024 * 1024
SUFFIX = ".reserve"


class Reserve:
    def __init__(self, db_path: Path) -> None:
        self.path = db_path.with_name(db_path.name + SUFFIX)
        self.directory = db_path.parent
        self._checked = 0.0
        self._paused = False
        self.given_up = False  # released to open the database on a full disk

    def usable_bytes(self) -> int | None:
        """Free space, the reserve counted as free: it is the appliance's to give."""
        free = self.free_bytes()
        return None if free is None else free + (RESERVE_BYTES if self.present() else 0)

    def free_bytes(self) -> int | None:
        try:
            stat = os.statvfs(self.directory)
        except OSError:
            return None
        return stat.f_bavail * stat.f_frsize

    def present(self) -> bool:
        try:
            return self.path.stat().st_size >= RESERVE_BYTES
        except OSError:
            return False

    def take(self) -> bool:
        """Claim the reserve if the disk has room for it and then as much again; True if held."""
        if self.present():
            return True
        free = self.free_bytes()
        if free is None or free < 2 * RESERVE_BYTES:
            return False
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                os.posix_fallocate(fd, 0, RESERVE_BYTES)  # real blocks, not a sparse file
            finally:
                os.close(fd)
        except OSError as exc:
            log.warning("cannot keep a reserve of %d MiB in %s: %s", RESERVE_BYTES >> 20, self.directory, exc)
            self.release(quiet=True)
            return False
        return True

    def release(self, quiet: bool = False) -> bool:
        """Give the reserve up (the disk is full); True if there was one."""
        try:
            self.path.unlink()
        except FileNotFoundError:
            return False
        except OSError as exc:
            if not quiet:
                log.error("cannot remove the reserve %s: %s", self.path, exc)
            return False
        if not quiet:
            self.given_up = True
            log.warning("the disk holding the database is full: gave up the %d MiB reserve %s; ingest is paused "
                        "until there is room again", RESERVE_BYTES >> 20, self.path)
        return True

    def ingest_paused(self, room_inside: Callable[[], int]) -> bool:
        """True while the reserve was given up and can be neither taken back nor done without
        (`room_inside`: free bytes inside the database, say after retention). Cached for a second."""
        if not self.given_up:
            return False
        now = time.monotonic()
        if now - self._checked < 1.0:
            return self._paused
        self._checked = now
        paused = not self.take() and room_inside() < RESERVE_BYTES
        if not paused:
            self.given_up = False
        if self._paused and not paused:
            log.warning("the disk has room again: reserve taken back, ingest resumes")
        self._paused = paused
        return paused
