"""FD-REST's live clients: Socket.IO on the appliance's port, emitting FD-REST's `update_table`.

FD-REST (Flask-SocketIO, default namespace) emitted `update_table` after each stored reading with
the same payload as its `/send` answer: a list holding one `{"fault0": .., ..., "fault7": ..}`
object. Its dashboard and scripts listen for exactly that, so it is emitted here for every stored
reading, in commit order, with the values `/send` answered.

Why a bridge of its own rather than a hub subscriber: the hub encodes SSE frames per reading for
its shapes, none of which is this payload. The writer thread only hands over each commit's fault
arrays (O(commits), no per-reading work) and only while a client is connected; the payloads are
built and emitted on the event loop, from a queue bounded like the SSE ring (`--sse-buffer`), so a
flood of readings cannot stack up memory: past the bound the oldest pending events are dropped and
counted.

python-socketio is imported when this module is, and edge.appliance imports it only with
`--socketio`.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qs

import numpy as np
import orjson
import socketio
from engineio import packet as eio_packet
from starlette.responses import JSONResponse
from starlette.types import Receive, Scope, Send

from edge.errors import BadRequest, FDEdgeError, Unavailable
from edge.fdrest import FAULTS

log = logging.getLogger(__name__)

EVENT = "update_table"  # FD-REST's event name, default namespace
PATH = "socket.io"  # FD-REST's (Flask-SocketIO's default) path
MAX_MESSAGE_BYTES = 64 * 1024  # clients only ever send pings and the namespace connect
YIELD_EVERY = 256  # events emitted between yields to the loop, so a 10,000-row batch cannot hog it

# (Origin header or None, WSGI-style environ) -> allowed; a request without Origin is always served
OriginCheck = Callable[[str | None, Mapping[str, Any]], bool]


class SocketIOBridge:
    """The Socket.IO server (python-socketio's AsyncServer in ASGI mode) and the feed into it.

    `origin_allowed` decides which `Origin` headers may connect (the appliance's own and
    --allowed-origins); python-socketio answers CORS for those only. `max_clients` bounds the
    Engine.IO sessions, `backlog` the events waiting to be emitted."""

    def __init__(self, origin_allowed: OriginCheck, max_clients: int, backlog: int) -> None:
        self.server = socketio.AsyncServer(
            async_mode="asgi", cors_allowed_origins=origin_allowed, max_http_buffer_size=MAX_MESSAGE_BYTES,
            logger=False, engineio_logger=ClientErrors(log))
        self.asgi = socketio.ASGIApp(self.server, socketio_path=PATH)
        self.max_clients = max_clients
        self.clients = 0  # connected Socket.IO clients; the writer thread reads it
        self.pending: deque[list[dict[str, float]]] = deque(maxlen=backlog)
        self.dropped = 0  # events dropped from a full backlog, since start
        self._warn_after = 0.0
        self.loop: asyncio.AbstractEventLoop | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self.server.on("connect", self._connected)
        self.server.on("disconnect", self._disconnected)
        self._eio_disconnect = self.server.eio.handlers["disconnect"]
        self.server.eio.on("disconnect", self._eio_disconnected)

    async def _connected(self, sid: str, environ: Mapping[str, Any], auth: object = None) -> None:
        self.clients += 1

    async def _disconnected(self, sid: str, reason: object = None) -> None:
        self.clients -= 1

    async def _eio_disconnected(self, eio_sid: str, reason: object) -> None:
        """python-engineio closes a session whose client said goodbye without answering that
        client's long-poll GET in progress, which then holds its connection for 45 s (and a
        python-socketio client's disconnect() waits for it): answer it now, empty."""
        await self._eio_disconnect(eio_sid, reason)
        session = self.server.eio.sockets.get(eio_sid)
        if session is not None:
            session.queue.put_nowait(None)

    # -- the feed ---------------------------------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._wake = asyncio.Event()
        self._task = loop.create_task(self._emit_forever())

    async def close(self) -> None:
        """Disconnect every client (so shutdown does not wait for open long-polls) and stop; once."""
        if self._task is None:
            return
        self._task.cancel()
        self._task = None
        await self.server.shutdown()
        # Each session's goodbye is queued and its long-poll in progress answered; not
        # eio.disconnect(), which waits for every client to collect it, and one that stopped
        # polling never does
        sessions = list(self.server.eio.sockets.values())
        for session in sessions:
            await session.close(wait=False, abort=False)
        self.server.eio.sockets.clear()

    def publish(self, faults: list[np.ndarray]) -> None:
        """Writer thread, after a commit: each stored batch's (n, 8) fault array. Nothing when no
        client is connected."""
        if self.clients and self.loop is not None:
            self.loop.call_soon_threadsafe(self._queue, faults)

    def _queue(self, faults: list[np.ndarray]) -> None:
        pending = self.pending
        for array in faults:
            rows = array.tolist()
            overflow = len(pending) + len(rows) - (pending.maxlen or 0)
            if overflow > 0:
                self.dropped += overflow
                now = self.loop.time() if self.loop is not None else 0.0
                if now >= self._warn_after:  # once a minute at most: a flood must not flood the log too
                    self._warn_after = now + 60
                    log.warning("Socket.IO clients fell behind: %d events not sent so far, the oldest "
                                "dropped (--sse-buffer bounds the backlog)", self.dropped)
            # FD-REST's payload: what /send answered for this reading, a list of one object
            pending.extend([dict(zip(FAULTS, row, strict=True))] for row in rows)
        self._wake.set()

    async def _emit_forever(self) -> None:
        """What `AsyncServer.emit(EVENT, payload)` sends every client of the default namespace, at
        a fraction of its cost: one orjson encoding per reading and a queue put per client, where
        emit makes a task per client and waits for them all (~29 µs a reading with one client,
        which halved batch ingest)."""
        pending, participants, send = self.pending, self.server.manager.get_participants, self.server.eio.send_packet
        while True:
            await self._wake.wait()
            self._wake.clear()
            while pending:
                clients = [eio_sid for _, eio_sid in participants("/", None)]
                for _ in range(min(len(pending), YIELD_EVERY)):
                    packet = eio_packet.Packet(eio_packet.MESSAGE, event_packet(pending.popleft()))
                    for eio_sid in clients:
                        await send(eio_sid, packet)  # a put on the session's queue: never waits
                await asyncio.sleep(0)

    # -- the ASGI side ----------------------------------------------------------------------------

    def in_session(self, scope: Scope) -> bool:
        """The request names a live Engine.IO session (`?sid=`). Access is decided when a session
        opens: its id (96 random bits) is known only to the client that opened it, and clients
        send their credentials with the handshake only (python-socketio's sends its headers
        there and nowhere else)."""
        sids = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("sid") or []
        return bool(sids) and sids[-1] in self.server.eio.sockets

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """/socket.io/ after the appliance's host and token checks (edge.http.app)."""
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        try:
            if "j" in query:
                # JSONP polling answers a <script> tag, which any site may embed: with the cookie
                # it would read the appliance across sites
                raise BadRequest("JSONP polling is not served; use the polling or websocket transport",
                                 field="j")
            if "sid" not in query and len(self.server.eio.sockets) >= self.max_clients:
                raise Unavailable(f"the appliance holds its maximum of {self.max_clients} Socket.IO clients "
                                  "(--max-connections)", reason="too_many_clients")
        except FDEdgeError as exc:
            await refuse(scope, receive, send, exc)
            return
        await self.asgi(scope, receive, send)


def event_packet(payload: object) -> str:
    """A Socket.IO EVENT packet of the default namespace: `2["update_table", payload]`, as
    python-socketio's own encoder writes it (Engine.IO's MESSAGE type goes in front)."""
    return "2" + orjson.dumps([EVENT, payload]).decode()


class ClientErrors(logging.LoggerAdapter):
    """python-engineio's logger. Its one `error` is a client's mistake (an unknown session, a
    foreign origin, a bad transport), logged once per kind: information, not an error of the
    appliance. Its handler exceptions stay errors."""

    def error(self, msg: object, *args: object, **kwargs: Any) -> None:
        self.info(msg, *args, **kwargs)


async def refuse(scope: Scope, receive: Receive, send: Send, exc: FDEdgeError,
                 headers: Mapping[str, str] | None = None) -> None:
    """A JSON error for an HTTP request; a WebSocket handshake is closed before it is accepted
    (uvicorn answers it 403)."""
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008})
        return
    await JSONResponse(exc.body(), status_code=exc.status, headers=headers)(scope, receive, send)
