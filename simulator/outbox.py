"""The virtual sensor's on-disk outbox: every reading is stored here before it is sent.

Why a file and not a list in memory: the point of the sensor is that nothing is lost when
the appliance is down, restarts, or the sensor itself is killed. A reading is committed
here (WAL, `synchronous=FULL`) before any attempt to send it, and leaves only after the
server answered 200 (or refused it for good, into `dead_letter`).

Why the claim: a request whose answer is lost (timeout, server killed after its commit)
must be re-sent with the *same* Idempotency-Key and the *same* readings, or the server
would store them twice. So the next request's id range is recorded in the file before it
is sent (`claim`), and handed out again until it is settled, also after a restart of the
sensor. Ids come from AUTOINCREMENT, so they are never reused even after the outbox ran
empty, and a key `<sensor uuid>:<first id>-<last id>` is never used for other readings.

One process per file: `Outbox.open` takes an exclusive lock beside the database; two
sensors sending the same rows would defeat the ordering and the keys.
"""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import IO

try:
    import fcntl
except ImportError:  # Windows: no advisory lock, one sensor per buffer is then up to the user
    fcntl = None  # type: ignore[assignment]

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    # body: the reading's JSON text exactly as it will be sent; created: epoch seconds.
    "CREATE TABLE IF NOT EXISTS outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, body TEXT NOT NULL, "
    "created REAL NOT NULL)",
    "CREATE TABLE IF NOT EXISTS dead_letter (id INTEGER PRIMARY KEY, body TEXT NOT NULL, created REAL NOT NULL, "
    "failed REAL NOT NULL, status INTEGER, message TEXT)",
)
CHUNK = 500  # rows per DELETE ... IN (...) statement, well below SQLite's variable limit


class BufferLocked(RuntimeError):
    """Another sensor process already uses this outbox file."""


@dataclass(frozen=True)
class Claim:
    """The readings of one request and its Idempotency-Key; ids ascending."""

    key: str
    ids: list[int]
    bodies: list[str]

    def __len__(self) -> int:
        return len(self.ids)


class Outbox:
    """A durable FIFO of JSON reading bodies, shared by the generating and the sending thread.

    One connection guarded by a lock: SQLite serialises writers anyway, and a lock is simpler
    than reasoning about busy timeouts between two connections of the same process.
    """

    def __init__(self, path: str | Path, max_rows: int = 0) -> None:
        self.path = Path(path)
        self.max_rows = max_rows  # 0 = unbounded
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_file = self._take_lock()
        self._lock = threading.Lock()
        self.conn = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
        try:
            self.conn.execute("PRAGMA busy_timeout = 5000")
            self.conn.execute("PRAGMA journal_mode = WAL")
            self.conn.execute("PRAGMA synchronous = FULL")
            with self._transaction():
                for ddl in SCHEMA:
                    self.conn.execute(ddl)
                row = self.conn.execute("SELECT value FROM meta WHERE key = 'sensor_id'").fetchone()
                if row is None:
                    row = (str(uuid.uuid4()),)
                    self.conn.execute("INSERT INTO meta (key, value) VALUES ('sensor_id', ?)", row)
            self.sensor_id: str = row[0]
            self._count: int = self.conn.execute("SELECT count(*) FROM outbox").fetchone()[0]
        except BaseException:
            self.close()
            raise

    def _take_lock(self) -> IO[str] | None:
        if fcntl is None:
            return None
        handle = open(self.path.with_name(self.path.name + ".lock"), "a")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            raise BufferLocked(f"{self.path} is in use by another `fdedge simulate`; "
                               "give each sensor its own --buffer") from None
        return handle

    def _transaction(self) -> _Transaction:
        return _Transaction(self.conn)

    def close(self) -> None:
        if getattr(self, "conn", None) is not None:
            self.conn.close()
            self.conn = None  # type: ignore[assignment]
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    # -- generating side ---------------------------------------------------------------------

    def put(self, bodies: list[str]) -> int:
        """Append readings in one transaction; returns how many old ones `max_rows` dropped."""
        if not bodies:
            return 0
        now = time.time()
        with self._lock, self._transaction():
            self.conn.executemany("INSERT INTO outbox (body, created) VALUES (?, ?)", [(b, now) for b in bodies])
            self._count += len(bodies)
            excess = self._count - self.max_rows if self.max_rows > 0 else 0
            if excess > 0:
                # Never drop the claimed rows: they may already be stored under their key.
                _, last = self._claimed_range()
                dropped = self.conn.execute(
                    "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox WHERE id > ? ORDER BY id LIMIT ?)",
                    (last or 0, excess)).rowcount
                self._count -= dropped
                return dropped
        return 0

    # -- sending side ------------------------------------------------------------------------

    def claim(self, limit: int, min_rows: int = 1, max_wait: float = 0.0) -> Claim | None:
        """The next request: the unsettled claim if there is one, else up to `limit` oldest rows.

        A new claim is only made when `min_rows` are waiting or the oldest has waited
        `max_wait` seconds (so batches fill up at low rates); None when nothing is due.
        """
        with self._lock:
            first, last = self._claimed_range()
            if first is not None:
                rows = self.conn.execute("SELECT id, body FROM outbox WHERE id BETWEEN ? AND ? ORDER BY id",
                                         (first, last)).fetchall()
                if rows:
                    return Claim(f"{self.sensor_id}:{first}-{last}", [r[0] for r in rows], [r[1] for r in rows])
                self._set_claim(None)
            rows = self.conn.execute("SELECT id, body, created FROM outbox ORDER BY id LIMIT ?", (limit,)).fetchall()
            if not rows or (len(rows) < min_rows and time.time() - rows[0][2] < max_wait):
                return None
            first, last = rows[0][0], rows[-1][0]
            self._set_claim((first, last))
            return Claim(f"{self.sensor_id}:{first}-{last}", [r[0] for r in rows], [r[1] for r in rows])

    def ack(self, claim: Claim) -> None:
        """The server stored (or had stored) the claim: remove its rows and the claim."""
        with self._lock, self._transaction():
            self._count -= self._delete(claim.ids)
            self._set_claim(None)

    def reject(self, claim: Claim, ids: list[int], status: int | None, message: str) -> None:
        """The server refused `ids` for good: move them to `dead_letter` and drop the claim.

        Dropping the claim is safe: a refused request stored nothing, so its key is unused
        and the remaining rows may go out under a new one.
        """
        now = time.time()
        with self._lock, self._transaction():
            for start in range(0, len(ids), CHUNK):
                chunk = ids[start:start + CHUNK]
                marks = ",".join("?" * len(chunk))
                self.conn.execute(
                    f"INSERT OR REPLACE INTO dead_letter (id, body, created, failed, status, message) "
                    f"SELECT id, body, created, ?, ?, ? FROM outbox WHERE id IN ({marks})",
                    (now, status, message, *chunk))
            self._count -= self._delete(ids)
            self._set_claim(None)

    def release(self) -> None:
        """Forget the claim without sending it; only valid when the server refused it (nothing stored)."""
        with self._lock, self._transaction():
            self._set_claim(None)

    # -- inspection --------------------------------------------------------------------------

    def __len__(self) -> int:
        return self._count

    def dead_count(self) -> int:
        with self._lock:
            return self.conn.execute("SELECT count(*) FROM dead_letter").fetchone()[0]

    def oldest_created(self) -> float | None:
        with self._lock:
            row = self.conn.execute("SELECT created FROM outbox ORDER BY id LIMIT 1").fetchone()
        return row[0] if row else None

    # -- internals (caller holds self._lock) ---------------------------------------------------

    def _claimed_range(self) -> tuple[int | None, int | None]:
        row = self.conn.execute("SELECT value FROM meta WHERE key = 'claim'").fetchone()
        if row is None:
            return None, None
        first, _, last = row[0].partition("-")
        return int(first), int(last)

    def _set_claim(self, span: tuple[int, int] | None) -> None:
        if span is None:
            self.conn.execute("DELETE FROM meta WHERE key = 'claim'")
        else:
            self.conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('claim', ?)", (f"{span[0]}-{span[1]}",))

    def _delete(self, ids: list[int]) -> int:
        deleted = 0
        for start in range(0, len(ids), CHUNK):
            chunk = ids[start:start + CHUNK]
            deleted += self.conn.execute(f"DELETE FROM outbox WHERE id IN ({','.join('?' * len(chunk))})",
                                         chunk).rowcount
        return deleted


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on error (the connection runs in autocommit mode)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if exc_type is None:
            self.conn.execute("COMMIT")
        elif self.conn.in_transaction:
            self.conn.execute("ROLLBACK")
