"""SQLite connections: how every connection is opened, one transaction helper, and the
per-thread read-only connections the routes use beside the single writer."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


# KiB of page cache per connection (SQLite's default is 2 MiB). The appliance holds several
# (writer, checkpointer, readers, notifier, uplink) and the OS caches the file anyway: with every
# feature on, 1 MiB each kept RSS after 100,000 readings 4 MB lower, within the 100 MB budget.
CACHE_KIB = 1024


def connect(path: Path, *, sync: str = "full", busy_ms: int = 2000, readonly: bool = False) -> sqlite3.Connection:
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, cached_statements=512)
    conn.execute(f"PRAGMA busy_timeout = {int(busy_ms)}")
    conn.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
    if readonly:
        conn.execute("PRAGMA query_only = 1")
    else:
        conn.execute(f"PRAGMA synchronous = {'FULL' if sync == 'full' else 'NORMAL'}")
        conn.execute("PRAGMA journal_size_limit = 67108864")
    return conn


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any exception, the COMMIT's own included (as
    datasette's `with conn:` with BEGIN IMMEDIATE). IMMEDIATE takes the write lock up front, so a
    busy database fails here, before any work. BaseException too: a cancelled or interrupted
    caller must not leave the connection inside a transaction."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):  # the original error is the one to report
                conn.execute("ROLLBACK")
        raise


class Readers:
    """Reads in their own small pool of threads, one read-only connection each (SQLite connections
    must not be shared across threads mid-query; WAL lets readers run beside the writer).

    Why a pool of their own: reads shared the thread pool with the parsing of large ingest bodies,
    and every thread a read occupies competes with the event loop for the GIL. 20 clients
    replaying /events from id 0 cut single-reading ingest from 1,285 to 13 requests/s; `threads`
    (--read-threads) bounds what reads can take, the rest queues."""

    def __init__(self, path: Path, threads: int = 2) -> None:
        self.path = path
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="fdedge-read")

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(connection, *args)` in the read pool."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._with_conn, fn, args)

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` in the read pool: a step of a read with its own connection (an export)."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def _with_conn(self, fn: Callable[..., T], args: tuple) -> T:
        return fn(self.get(), *args)

    def get(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self.path, readonly=True, busy_ms=5000)
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            for conn in self._all:
                try:
                    conn.close()
                except sqlite3.Error:
                    pass
            self._all.clear()
