"""Flash wear: the bytes FD-Edge writes to storage, per reading and per day, and what that means
for the card under it.

Why: an SD card dies of writes, not of age. The count is the kernel's (`write_bytes` of
/proc/self/io: what this process sent to the block device, the database, its WAL and checkpoints
included), so it is what the card sees, not an estimate from SQLite's page counts. Where the
kernel does not keep it (not Linux, or a filesystem in memory), the figures are null."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Flash is erased in blocks far larger than SQLite's 4 KiB pages, so a card writes more than it
# is sent; 4 is a middle figure for small random writes on consumer cards (measured 2-10).
WRITE_AMPLIFICATION = 4.0
DAY_S = 86400.0


def process_write_bytes() -> int | None:
    try:
        for line in Path("/proc/self/io").read_text().splitlines():
            if line.startswith("write_bytes:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


class Wear:
    def __init__(self, db_path: Path, readings: Callable[[], float], card_size_gb: float = 0.0,
                 pe_cycles: int = 1000) -> None:
        self.db_path = db_path
        self.readings = readings  # readings committed since start
        self.card_size_gb = card_size_gb
        self.pe_cycles = pe_cycles
        self.started = time.monotonic()
        self.start_bytes = process_write_bytes()

    def written(self) -> int | None:
        now = process_write_bytes()
        return None if now is None or self.start_bytes is None else max(now - self.start_bytes, 0)

    def card_bytes(self) -> int | None:
        if self.card_size_gb > 0:
            return int(self.card_size_gb * 1e9)
        try:
            st = os.statvfs(self.db_path.parent)
        except OSError:
            return None
        return st.f_blocks * st.f_frsize

    def report(self) -> dict[str, Any]:
        written = self.written()
        readings = self.readings()
        uptime = max(time.monotonic() - self.started, 1e-9)
        per_day = written / uptime * DAY_S if written is not None and uptime >= 60 else None
        card = self.card_bytes()
        life_days = None
        if per_day and card:
            life_days = card * self.pe_cycles / (per_day * WRITE_AMPLIFICATION)
        return {
            "bytes_written": written,
            "readings": int(readings),
            "bytes_per_reading": written / readings if written is not None and readings else None,
            "bytes_per_day": per_day,
            "since_s": round(uptime, 1),
            "card_bytes": card,
            "card_pe_cycles": self.pe_cycles,
            "write_amplification_assumed": WRITE_AMPLIFICATION,
            "card_life_days": life_days,
        }
