"""Keep the resident set small on a Pi: few malloc arenas, and freed memory handed back.

glibc gives every thread its own arena and keeps freed pages; after a burst of large batches
the process would stay at its peak. Both calls are no-ops where glibc is absent (musl, macOS).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import time

M_ARENA_MAX = -8
M_MMAP_THRESHOLD = -3
# Blocks from this size up get their own mapping, returned whole on free. glibc otherwise raises
# the threshold each time such a block is freed (up to 32 MB), and a batch's numpy arrays
# (1,000 x 35 float64: 280 KB) then land in the heap and leave it fragmented.
MMAP_THRESHOLD = 128 * 1024

_libc = None
try:
    _name = ctypes.util.find_library("c")
    _libc = ctypes.CDLL(_name) if _name else None
    if _libc is not None and not hasattr(_libc, "malloc_trim"):
        _libc = None
except OSError:
    _libc = None

_last_trim = 0.0


def limit_arenas(count: int = 2) -> None:
    """Call before threads start."""
    if _libc is not None:
        _libc.mallopt(M_ARENA_MAX, count)
        _libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)


def trim(min_interval: float = 5.0) -> None:
    """Return freed heap memory to the OS, at most every `min_interval` seconds (it walks the heap)."""
    global _last_trim
    now = time.monotonic()
    if _libc is None or now - _last_trim < min_interval:
        return
    _last_trim = now
    _libc.malloc_trim(0)


_pending: asyncio.TimerHandle | None = None


def trim_later(loop: asyncio.AbstractEventLoop, delay: float = 1.0) -> None:
    """Trim once, `delay` seconds after the first call since the last trim: a burst of large
    bodies refused before they reached the writer (which trims after large batches itself) is
    handed back after the burst, not at each body."""
    global _pending
    if _libc is None or _pending is not None:
        return

    def run() -> None:
        global _pending
        _pending = None
        trim(min_interval=0)

    _pending = loop.call_later(delay, run)
