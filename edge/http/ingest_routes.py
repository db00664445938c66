"""POST /send: FD-REST's single reading, plus batches as JSON array, NDJSON or CSV."""

from __future__ import annotations

import asyncio

from starlette.types import Message, Receive, Scope, Send

from edge import memory
from edge.appliance import Appliance, dumps
from edge.errors import BadRequest, FDEdgeError, Forbidden, PayloadTooLarge, UnsupportedMediaType
from edge.fdrest import FAULTS
from edge.http import origins
from edge.http.body_deadlines import BodyDeadlines
from edge.ingest.bodies import ACCEPTED_TYPES, Batch, parse
from edge.store.writer import Stored

PARSE_IN_THREAD_BYTES = 64 * 1024  # big batches are parsed off the event loop
# Before a 413 on a connection that closes after the answer, the rest of the body is read and
# dropped (up to this much, for up to this long): closing with unread data makes the kernel reset
# the connection, and the client would see a reset instead of the 413 and retry for ever.
DISCARD_BYTES = 16 * 1024 * 1024
DISCARD_SECONDS = 2.0


def _header_safe(key: str) -> str:
    return "".join(c if 32 <= ord(c) < 127 and c != "," else "?" for c in key[:64])


async def discard_body(receive: Receive) -> None:
    """Read and drop what is left of the body, within DISCARD_BYTES and DISCARD_SECONDS."""

    async def drain() -> None:
        left = DISCARD_BYTES
        while left > 0:
            message = await receive()
            left -= len(message.get("body", b""))
            if message["type"] != "http.request" or not message.get("more_body", False):
                return

    try:
        await asyncio.wait_for(drain(), DISCARD_SECONDS)
    except TimeoutError:
        pass


class TrackedReceive:
    """`receive`, noting whether the body has been read to its end (then there is nothing to drop)."""

    def __init__(self, receive: Receive) -> None:
        self.receive, self.done = receive, False

    async def __call__(self) -> Message:
        message = await self.receive()
        if message["type"] != "http.request" or not message.get("more_body", False):
            self.done = True
        return message


async def read_body(receive: Receive, limit: int, length: int | None, deadlines: BodyDeadlines) -> bytes:
    if length is not None and length > limit:
        raise PayloadTooLarge(f"body of {length} bytes exceeds the limit of {limit} bytes", limit=limit)
    task = asyncio.current_task()
    assert task is not None
    deadlines.reading[task] = asyncio.get_running_loop().time()
    chunks: list[bytes] = []
    size = 0
    try:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise BadRequest("the client disconnected before sending its body", reason="client_disconnect")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"body exceeds the limit of {limit} bytes", limit=limit)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
    except asyncio.CancelledError:
        if task in deadlines.expired:
            deadlines.expired.discard(task)
            if hasattr(task, "uncancel"):
                task.uncancel()
            raise BadRequest(f"the body did not arrive within {deadlines.seconds:.0f} s",
                             reason="body_timeout") from None
        raise
    finally:
        deadlines.reading.pop(task, None)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _headers(scope: Scope) -> tuple[int | None, str | None, str | None, str | None, str | None, bool]:
    """One pass over the raw headers: content-length, content-type, idempotency-key, origin, host,
    and whether the connection closes after the answer."""
    length = ctype = key = origin = host = None
    closing = scope.get("http_version") == "1.0"
    for name, value in scope["headers"]:
        if name == b"content-length":
            length = int(value) if value.isdigit() else None
        elif name == b"content-type":
            ctype = value.decode("latin-1")
        elif name == b"idempotency-key":
            key = value.decode("latin-1")
        elif name == b"origin":
            origin = value.decode("latin-1")
        elif name == b"host":
            host = value.decode("latin-1")
        elif name == b"connection":
            closing = b"close" in value.lower() or (closing and b"keep-alive" not in value.lower())
    return length, ctype, key, origin, host, closing


class SendEndpoint:
    """POST /send as a plain ASGI app (Starlette routes to instances as they are): the hottest path
    skips Request/Response objects. Errors raise FDEdgeError like every route and become JSON in
    edge.http.responses."""

    async def __call__(self, scope: Scope, receive: Receive, send_message: Send) -> None:
        await _ingest(scope, receive, send_message)


def _parse(content_type: str | None, data: bytes, key: str | None, limit: int) -> tuple[Batch, str | None]:
    batch = parse(content_type, data, max_rows=limit)
    return batch, (batch.digest() if key is not None else None)


async def _ingest(scope: Scope, receive: Receive, send_message: Send) -> None:
    app: Appliance = scope["app"].state.appliance
    length, content_type, key, origin, host, closing = _headers(scope)
    tracked = TrackedReceive(receive) if closing else None
    try:
        token = scope.get("fdedge_token")
        stored, ignored = await _store(app, tracked or receive, length, content_type, key, origin, host,
                                       token.machines if token is not None else None)
    except FDEdgeError as exc:
        error = _without_frames(exc)
    else:
        body = dumps([dict(zip(FAULTS, row, strict=True)) for row in stored.faults.tolist()])
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body)),
                   (b"x-fdedge-first-id", b"%d" % stored.first_id),
                   (b"x-fdedge-quality", stored.quality_header().encode("latin-1", "replace"))]
        if stored.replayed:
            headers.append((b"x-fdedge-replayed", b"true"))
        if ignored:
            headers.append((b"x-fdedge-ignored-keys", ",".join(sorted(map(_header_safe, ignored))[:20]).encode()))
        await send_message({"type": "http.response.start", "status": 200, "headers": headers})
        await send_message({"type": "http.response.body", "body": body})
        return
    reason = str(error.details.get("reason", error.code))
    app.metrics.rejected.labels(reason=reason).inc()
    if tracked is not None and not tracked.done and reason not in ("body_timeout", "client_disconnect"):
        await discard_body(tracked)  # so the client reads the answer, not a reset
    if length is not None and length > PARSE_IN_THREAD_BYTES:
        memory.trim_later(asyncio.get_running_loop())  # a refused large body never reaches the writer
    raise error


async def _store(app: Appliance, receive: Receive, length: int | None, content_type: str | None, key: str | None,
                 origin: str | None, host: str | None,
                 machines: frozenset[str] | None = None) -> tuple[Stored, set[str]]:
    origins.check(origin, host, app.settings.allowed_origins or frozenset())
    if content_type is None:
        raise UnsupportedMediaType(
            "a Content-Type is required: application/json, application/x-ndjson or text/csv "
            "(with curl: -H 'Content-Type: application/json')", reason="content_type_missing",
            accepted=sorted(ACCEPTED_TYPES))
    data = await read_body(receive, app.settings.max_body_bytes, length, app.deadlines)
    if key is not None and not 0 < len(key) <= 200:
        raise BadRequest("Idempotency-Key must be 1-200 characters", field="Idempotency-Key")
    limit = app.settings.max_batch_rows
    if len(data) > PARSE_IN_THREAD_BYTES:
        batch, digest = await asyncio.get_running_loop().run_in_executor(
            app.parse_pool, _parse, content_type, data, key, limit)
    else:
        batch, digest = _parse(content_type, data, key, limit)
    if len(batch) > limit:
        raise PayloadTooLarge(f"{len(batch)} readings exceed the limit of {limit} per request", limit=limit)
    if machines is not None:
        other = set(batch.machines) - machines
        if other:
            name = sorted(other)[0]
            raise Forbidden(f"this sensor token may not send readings for machine {name[:100]!r} "
                            f"(it is limited to {', '.join(sorted(machines))[:200]})",
                            reason="machine_not_allowed", machine=name[:100])
    return await app.writer.ingest(batch, key, digest), batch.ignored


def _without_frames(exc: FDEdgeError) -> FDEdgeError:
    """The error alone, without the traceback and context that reach back into the frames holding
    the request body. Those frames join a reference cycle with the connection, so they lived until
    the next full garbage collection: 16 refused 8 MiB bodies kept 127 MB resident. A client error
    needs no traceback; an unexpected one is not an FDEdgeError and keeps its own."""
    exc.__context__ = exc.__cause__ = None
    return exc.with_traceback(None)


send_endpoint = SendEndpoint()
