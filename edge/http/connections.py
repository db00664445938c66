"""Connections that cost the appliance nothing they did not earn: a deadline from accept to a
complete request head, a cap on open connections, and stalled writers dropped.

Why in the protocol: uvicorn holds a connection that never sends a byte, or stops halfway
through its head, for ever, and no ASGI app sees it. With systemd's 1,024 descriptors, about
1,000 such sockets made the server refuse everyone, /healthz included.

- **Head deadline.** A new connection has `head_timeout` seconds to complete its first request
  head; a later request on a kept-alive connection as long from its first byte. Idle time between
  requests is uvicorn's keep-alive timeout. A sweep once a second checks every connection, so
  the hot path sets one attribute per request and arms no timer.
- **Cap.** Past `max_connections` (never more than the descriptor limit allows), a new connection
  first takes the place of the one that has waited longest without a request in progress; if
  every connection is busy with a request, the new one is answered 503 and closed. So a flood of
  idle sockets cannot lock out a sensor or a health check, which send their request at once.
- **Stalled writers.** uvicorn's keep-alive close waits for unsent data to drain, which a client
  that stopped reading never lets happen; such a connection is aborted. The
  `fdedge.abort` scope extension lets edge.http.send_deadline do the same mid-response.

Written against uvicorn 0.54 (constraints.txt), like edge.http.head_limit, whose 431 it keeps.
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
import time
from typing import Any

from edge.http.head_limit import BoundedHttpToolsProtocol

log = logging.getLogger(__name__)
DESCRIPTOR_RESERVE = 200  # the database, WAL and SHM of every reader thread, logs, the listener
SWEEP_SECONDS = 1.0


def connection_cap(wanted: int) -> int:
    """`wanted`, lowered to fit the process's descriptor limit (RLIMIT_NOFILE) with a reserve."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(16, min(wanted, soft - DESCRIPTOR_RESERVE))


def _answer(status: str, error: str, message: str) -> bytes:
    body = json.dumps({"error": error, "message": message}, separators=(",", ":")).encode()
    return (b"HTTP/1.1 " + status.encode() + b"\r\ncontent-type: application/json\r\ncontent-length: "
            + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n" + body)


class GuardedHttpToolsProtocol(BoundedHttpToolsProtocol):
    """`BoundedHttpToolsProtocol` with the guards above; `protocol(head_timeout, max_connections)`
    makes the class `uvicorn.Config(http=...)` takes."""

    head_timeout = 10.0
    max_connections = 1000

    # Per-connection state; class attributes are the initial values (no __init__ override).
    _head_due: float | None = None   # loop time by which the head in progress must be complete
    _idle_since: float | None = None  # time.monotonic() since which no request (complete head) is in progress
    _had_request = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._head_due = self.loop.time() + self.head_timeout
        self._idle_since = time.monotonic()  # not loop.time(): uvloop's is the same for a whole accept burst
        connections = self.connections
        full = len(connections) >= self.max_connections and not self._make_room(connections)
        super().connection_made(transport)
        if full:
            self._idle_since = self._head_due = None
            transport.write(_answer("503 Service Unavailable", "too_many_connections",
                                    f"the appliance holds its maximum of {self.max_connections} connections"))
            transport.close()
            return
        _Sweeper.ensure(self)

    def _make_room(self, connections: set[Any]) -> bool:
        """Close the connection idle longest (no complete head, so no request in progress: silent
        or with a head still arriving); False if there is none."""
        idle = [p for p in connections if getattr(p, "_idle_since", None) is not None]
        if not idle:
            return False
        oldest = min(idle, key=lambda p: p._idle_since)
        oldest._evict()
        return True

    def _evict(self) -> None:
        self._idle_since = self._head_due = None
        self.connections.discard(self)  # at once: the new connection takes this one's place
        if not self.transport.is_closing():
            self.transport.close()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        # edge.http.send_deadline drops a connection whose client stopped reading with this
        self.scope["extensions"] = {"fdedge.abort": {"abort": self.transport.abort}}
        if self._had_request:  # the first head's deadline runs from accept
            self._head_due = self.loop.time() + self.head_timeout
        self._had_request = True

    def on_headers_complete(self) -> None:
        self._head_due = self._idle_since = None  # a request is in progress: not evictable now
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.cycle is None or not self.pipeline:
            self._idle_since = time.monotonic()

    def connection_lost(self, exc: Exception | None) -> None:
        self._idle_since = self._head_due = None
        super().connection_lost(exc)

    def _head_expired(self) -> None:
        """The head did not arrive in time: 408 if it had begun, then close (nothing was read)."""
        self._head_due = self._idle_since = None
        transport = self.transport
        if transport.is_closing():
            return
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "a client"
        if self._had_request:
            log.info("%s did not complete its request head within %.0f s: answered 408", client, self.head_timeout)
            transport.write(_answer("408 Request Timeout", "head_timeout",
                                    f"the request head did not arrive within {self.head_timeout:.0f} s"))
        transport.close()

    def timeout_keep_alive_handler(self) -> None:
        """uvicorn closes an idle connection; a close waits for unsent data to drain, which a client
        that stopped reading never lets happen: such a connection is dropped instead."""
        if not self.transport.is_closing() and self.transport.get_write_buffer_size() > 0:
            self.transport.abort()
            return
        super().timeout_keep_alive_handler()


class _Sweeper:
    """One timer per server: once a second, connections whose head is overdue are answered."""

    def __init__(self, connections: set[Any], loop: asyncio.AbstractEventLoop) -> None:
        self.connections, self.loop = connections, loop
        self.handle = loop.call_later(SWEEP_SECONDS, self.sweep)

    @classmethod
    def ensure(cls, protocol: GuardedHttpToolsProtocol) -> None:
        state = protocol.server_state
        if getattr(state, "_fdedge_sweeper", None) is None:
            state._fdedge_sweeper = cls(protocol.connections, protocol.loop)  # type: ignore[attr-defined]

    def sweep(self) -> None:
        now = self.loop.time()
        for protocol in [p for p in self.connections if (getattr(p, "_head_due", None) or now) < now]:
            protocol._head_expired()
        self.handle = self.loop.call_later(SWEEP_SECONDS, self.sweep)


def protocol(head_timeout: float, max_connections: int) -> type[GuardedHttpToolsProtocol]:
    cap = connection_cap(max_connections)
    if cap < max_connections:
        log.warning("at most %d connections (--max-connections %d does not fit the descriptor limit %d)",
                    cap, max_connections, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
    return type("GuardedHttpToolsProtocol", (GuardedHttpToolsProtocol,),
                {"head_timeout": head_timeout, "max_connections": cap})
