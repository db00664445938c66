"""A bound on the request head (request line + headers) for uvicorn's httptools protocol.

uvicorn's `HttpToolsProtocol` accumulates the URL, and httptools the header being parsed, without
any limit: one client sending a 48 MB header grew the server by about that much.
`BoundedHttpToolsProtocol` answers `431 Request Header Fields Too Large` (JSON, in the appliance's
error shape) once a head is over `MAX_HEAD_BYTES`, and closes the connection; the request never
reaches the app. `edge.serve` passes it to `uvicorn.Config(http=...)`.

Cost on the hot path: a few attribute reads and writes per read and per request; no work per
header, none per byte. The size is known without per-header callbacks:

- `_head_first` is the size of the read the head began in, `_head_more` the sizes of the reads fed
  while it was still open. Their sum bounds the head from above; `_head_more` alone, while the
  head is still open after a read, from below (those reads were head from end to end), however a
  header or the URL is split across reads.
- A head still open after a read is refused once that lower bound is over the limit, so at most
  the limit plus two reads (256 KiB each) is ever held for one head. The 431 is written directly,
  after the responses still owed on the connection (pipelining), then the connection is half-closed
  and what the client still sends is dropped for a moment (`LINGER_*`), so it reads the 431
  rather than a reset.
- A complete head is measured (URL, names, values) only when the upper bound is over the limit,
  which a normal request, arriving in one read shorter than the limit, never is. If it is over, uvicorn
  runs its request cycle as usual, with `_refusal_app` in place of the app.

A head of at most `MAX_HEAD_BYTES` on the wire is never refused. Written against uvicorn 0.54 (see
constraints.txt): it relies on `data_received`, `on_message_begin`, `on_headers_complete`,
`self.url`, `self.headers`, `self.app`, `self.flow`, `self.cycle` and its `on_response`, and
`timeout_keep_alive_task` of `HttpToolsProtocol`; tests/http/test_security.py covers each path on the
real server.
"""

from __future__ import annotations

import asyncio
import json

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

MAX_HEAD_BYTES = 64 * 1024  # nginx: 8 KiB a header line, 4 x 8 KiB in all; Node: 16 KiB
# After a 431, the rest of what the client already sent is read and dropped (up to this much, for
# up to this long) before closing, so the client reads the 431 instead of a connection reset.
LINGER_BYTES = 1 << 20
LINGER_SECONDS = 2.0


def refusal_body(limit: int) -> bytes:
    return json.dumps({"error": "header_too_large",
                       "message": f"request line and headers exceed {limit} bytes", "limit": limit},
                      separators=(",", ":")).encode()


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """`HttpToolsProtocol` that refuses a request head over `max_head_bytes` with a 431."""

    max_head_bytes = MAX_HEAD_BYTES

    # Per-connection state; class attributes are the initial values (no __init__ override).
    _chunk = 0           # size of the chunk being fed to the parser
    _head_open = False   # between on_message_begin and on_headers_complete
    _head_first = 0      # size of the chunk the current head began in
    _head_more = 0       # sizes of the chunks fed since, while the head was open
    _refused = False     # a head was too large: nothing more on this connection is parsed
    _answered = False    # ... and the 431 was written
    _linger_left = 0

    def data_received(self, data: bytes) -> None:
        if self._refused:
            self._drop(data)
            return
        self._chunk = n = len(data)
        if self._head_open:
            self._head_more += n
        super().data_received(data)
        if self._head_open and self._head_more > self.max_head_bytes:
            self._refuse()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_open = True
        self._head_first = self._chunk
        self._head_more = 0

    def on_headers_complete(self) -> None:
        self._head_open = False
        limit = self.max_head_bytes
        if self._head_first + self._head_more > limit and self._head_bytes() > limit:
            # The whole head is in (it came in one large read): uvicorn runs its cycle as usual,
            # after any pipelined request before it, with the refusal in place of the app; its
            # `connection: close` ends the connection, so nothing after it is served.
            self._log_refusal()
            # The refusal needs no URL, and httptools.parse_url fails on one over 64 KiB (a 400).
            self.url = b"/"
            app, self.app = self.app, self._refusal_app
            try:
                super().on_headers_complete()
            finally:
                self.app = app
            return
        super().on_headers_complete()

    # -- refusal ------------------------------------------------------------------------------------

    def _head_bytes(self) -> int:
        """The head as parsed: URL, names, values, and ':' + CRLF per header (never more than the wire)."""
        headers = self.headers
        return len(self.url) + sum(len(name) + len(value) for name, value in headers) + 3 * len(headers)

    def _refuse(self) -> None:
        """The head is still arriving and already too large: stop parsing, answer 431, close."""
        self._refused = True
        self._head_open = False
        self._log_refusal()
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            # Earlier (pipelined) requests are still being answered: the 431 follows the last of
            # them (`self.cycle` is the latest; uvicorn answers in order). Reading stays paused.
            self.flow.pause_reading()
            done = cycle.on_response

            def then_answer() -> None:
                done()
                self._answer()

            cycle.on_response = then_answer
            return
        self._answer()

    def _log_refusal(self) -> None:
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "a client"
        self.logger.warning("%s sent a request head over %d bytes: answered 431", client, self.max_head_bytes)

    def _answer(self) -> None:
        self._answered = True
        self._unset_keepalive_if_required()
        transport = self.transport
        if transport.is_closing():
            return
        body = refusal_body(self.max_head_bytes)
        content = [b"HTTP/1.1 431 Request Header Fields Too Large\r\n"]
        for name, value in self.server_state.default_headers:
            content.extend([name, b": ", value, b"\r\n"])
        content.extend([b"content-type: application/json\r\n",
                        b"content-length: ", str(len(body)).encode(), b"\r\n",
                        b"connection: close\r\n\r\n", body])
        transport.write(b"".join(content))
        if not transport.can_write_eof():
            transport.close()
            return
        # Half-close, then drop what the client is still sending for a moment: closing with unread
        # data would reset the connection and could take the 431 with it.
        transport.write_eof()
        self._linger_left = LINGER_BYTES
        self.flow.resume_reading()
        # uvicorn's keep-alive timer closes the transport and is cancelled in connection_lost.
        self.timeout_keep_alive_task = self.loop.call_later(LINGER_SECONDS, self.timeout_keep_alive_handler)

    def _drop(self, data: bytes) -> None:
        if not self._answered:
            self.flow.pause_reading()  # still answering earlier requests; read again once answered
            return
        self._linger_left -= len(data)
        if self._linger_left < 0 and not self.transport.is_closing():
            self.transport.close()

    async def _refusal_app(self, scope, receive, send) -> None:
        """The 431 as an ASGI app, for a head that came in whole. Reads (and drops) a body first,
        up to LINGER_BYTES or LINGER_SECONDS, so that closing does not reset the connection."""

        async def drain_body() -> None:
            left = LINGER_BYTES
            while left >= 0:
                message = await receive()
                left -= len(message.get("body", b""))
                if not message.get("more_body"):
                    return

        try:
            await asyncio.wait_for(drain_body(), LINGER_SECONDS)
        except TimeoutError:
            pass
        body = refusal_body(self.max_head_bytes)
        await send({"type": "http.response.start", "status": 431,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode()), (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})
