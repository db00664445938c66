"""A deadline on every send of a response: a client that stops reading is disconnected.

Why: uvicorn waits for a slow client's socket to drain, for ever. Meanwhile the response holds
its memory (10 clients that asked /history for a million rows and never read held 1.7 GB) and a
streamed export its read connection. SSE has its own deadline (sse-starlette's send_timeout);
POST /send answers are small and take the app's shortcut.
"""

from __future__ import annotations

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

STREAMS_WITH_THEIR_OWN = frozenset({"/events"})
PIECE = 64 * 1024  # a large body goes out in pieces, so that each piece waits for the client
ABORT = "fdedge.abort"  # scope["extensions"][ABORT]["abort"](): drop the connection, unsent data and all


class SendDeadline:
    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app, self.seconds = app, seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in STREAMS_WITH_THEIR_OWN:
            await self.app(scope, receive, send)
            return
        seconds = self.seconds

        async def send_in_time(message: Message) -> None:
            body = message.get("body", b"")
            try:
                if message["type"] != "http.response.body" or len(body) <= 4 * PIECE:
                    with anyio.fail_after(seconds):
                        await send(message)
                    return
                # uvicorn writes a whole body at once and waits for the socket only before the next
                # send: one large body would sit in memory behind a stalled client for ever.
                more = message.get("more_body", False)
                view = memoryview(body)
                for start in range(0, len(body), PIECE):
                    last = start + PIECE >= len(body)
                    with anyio.fail_after(seconds):
                        await send({"type": "http.response.body", "body": bytes(view[start:start + PIECE]),
                                    "more_body": more or not last})
            except TimeoutError:
                # Closing would wait for the unsent data to drain, for ever; fdedge serve's protocol
                # (edge.http.head_limit) offers to drop the connection instead.
                abort = scope.get("extensions", {}).get(ABORT, {}).get("abort")
                if abort is not None:
                    abort()
                raise  # edge.http.responses logs it as a client gone, one line

        await self.app(scope, receive, send_in_time)
