"""Named tokens (`fdedge token add|list|revoke`): one per device or person, with a role, stored
as the sha256 of a 32-byte random secret (high entropy, so no slow hash is needed), revocable.

The CLI writes the same SQLite file a running appliance uses; `Tokens` re-reads the (small) table
at most once per `TTL` seconds, so a revoke takes effect within a second without a query per
request. Last use is kept in memory and written by `flush_last_used` through the writer.
"""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from edge.fdrest import MAX_MACHINE_LEN

ROLES = ("sensor", "viewer", "operator", "admin")
PREFIX = "fdt_"  # tells a named token from a shared one in a log or a paste
TTL = 0.5  # seconds a snapshot of the table is trusted

@dataclass(frozen=True)
class Token:
    id: int
    name: str
    role: str
    machines: frozenset[str] | None  # None = any machine


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_table(conn: sqlite3.Connection) -> None:
    conn.execute("CREATE TABLE IF NOT EXISTS fdedge_tokens (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, "
                 "role TEXT NOT NULL, machines TEXT, hash TEXT NOT NULL UNIQUE, created TEXT NOT NULL, "
                 "last_used TEXT, revoked TEXT)")


def add(conn: sqlite3.Connection, name: str, role: str, machines: list[str] | None = None) -> str:
    """Store a new token and return its secret, which is never stored and cannot be shown again."""
    name = name.strip()
    if not name or len(name) > 100:
        raise ValueError("a token's name must be 1-100 characters")
    if name.isdigit():
        raise ValueError("a token's name must not be a number (revoke takes a name or an id)")
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    if machines is not None:
        if role != "sensor":
            raise ValueError("only sensor tokens are limited to machines")
        if not machines or any(not m or len(m) > MAX_MACHINE_LEN for m in machines):
            raise ValueError(f"machines must be 1-{MAX_MACHINE_LEN} characters each")
    secret = PREFIX + secrets.token_urlsafe(32)
    create_table(conn)
    try:
        conn.execute("INSERT INTO fdedge_tokens (name, role, machines, hash, created) VALUES (?, ?, ?, ?, ?)",
                     (name, role, ",".join(machines) if machines else None, digest(secret), _now()))
    except sqlite3.IntegrityError:
        raise ValueError(f"a token named {name!r} exists already (revoke it first)") from None
    return secret


def list_tokens(conn: sqlite3.Connection) -> list[dict]:
    """Every token, revoked ones included; never a secret or its hash."""
    create_table(conn)
    rows = conn.execute("SELECT id, name, role, machines, created, last_used, revoked FROM fdedge_tokens "
                        "ORDER BY id").fetchall()
    keys = ("id", "name", "role", "machines", "created", "last_used", "revoked")
    return [dict(zip(keys, row, strict=True)) for row in rows]


def revoke(conn: sqlite3.Connection, name_or_id: str) -> str:
    """Revoke by name or id; the row stays (who had access, and when)."""
    create_table(conn)
    key = int(name_or_id) if name_or_id.isdigit() else None
    row = conn.execute("SELECT id, name, revoked FROM fdedge_tokens WHERE id = ? OR name = ?",
                       (key, name_or_id)).fetchone()
    if row is None:
        raise ValueError(f"no token named {name_or_id!r}")
    if row[2] is None:
        conn.execute("UPDATE fdedge_tokens SET revoked = ? WHERE id = ?", (_now(), row[0]))
    return str(row[1])


class Tokens:
    """The active tokens of one database, keyed by hash: a lookup is a dict access and a
    constant-time compare, the table is re-read at most every TTL seconds."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None
        self._by_hash: dict[str, Token] = {}
        self._loaded = -1.0
        self._exist = False  # any token was ever added (revoked ones count)
        self._lock = threading.Lock()
        self.used: dict[int, str] = {}  # id -> last use, not yet written

    def _reload(self) -> None:
        from edge.store.database import connect

        if self._conn is None:
            self._conn = connect(self.path, readonly=True, busy_ms=200)
        rows: list | None
        try:
            rows = self._conn.execute("SELECT id, name, role, machines, hash, revoked FROM fdedge_tokens").fetchall()
        except sqlite3.OperationalError:  # no table yet (no token ever added), or busy: keep what we had
            rows = None if self._by_hash else []
        if rows is not None:
            self._by_hash = {h: Token(i, n, r, frozenset(m.split(",")) if m else None)
                             for i, n, r, m, h, revoked in rows if revoked is None}
            self._exist = bool(rows)

    def snapshot(self) -> dict[str, Token]:
        now = time.monotonic()
        if now - self._loaded > TTL:
            with self._lock:
                if now - self._loaded > TTL:
                    self._reload()
                    self._loaded = now
        return self._by_hash

    def any(self) -> bool:
        """Named tokens are in use: revoking the last one must not open the appliance."""
        self.snapshot()
        return self._exist

    def has_role(self, role: str) -> bool:
        """A token of this role is active (not revoked)."""
        return any(t.role == role for t in self.snapshot().values())

    def lookup(self, secret: str | None) -> Token | None:
        if not secret or not secret.startswith(PREFIX):
            return None
        found = self.snapshot().get(digest(secret))
        if found is not None:
            self.used[found.id] = _now()
        return found

    def flush_last_used(self, conn: sqlite3.Connection) -> None:
        """In the writer: the last uses seen since the previous flush."""
        used, self.used = self.used, {}
        if used:
            create_table(conn)
            conn.executemany("UPDATE fdedge_tokens SET last_used = ? WHERE id = ?",
                             [(t, i) for i, t in used.items()])

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
