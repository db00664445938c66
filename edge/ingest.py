"""POST /send: FD-REST's single reading, plus batches as JSON array, NDJSON or CSV."""

from __future__ import annotations

import asyncio

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from edge.appliance import Appliance, dumps
from edge.deadlines import BodyDeadlines
from edge.errors import BadRequest, FDEdgeError, PayloadTooLarge
from edge.fdrest import FAULTS
from edge.readings import parse

PARSE_IN_THREAD_BYTES = 64 * 1024  # big batches are parsed off the event loop


def _header_safe(key: str) -> str:
    return "".join(c if 32 <= ord(c) < 127 and c != "," else "?" for c in key[:64])


async def read_body(request: Request, limit: int, length: int | None, deadlines: BodyDeadlines) -> bytes:
    if length is not None and length > limit:
        raise PayloadTooLarge(f"body of {length} bytes exceeds the limit of {limit} bytes", limit=limit)
    task = asyncio.current_task()
    assert task is not None
    deadlines.reading[task] = asyncio.get_running_loop().time()
    chunks: list[bytes] = []
    size = 0
    try:
        while True:
            message = await request.receive()
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


def _headers(request: Request) -> tuple[int | None, str | None, str | None]:
    """One pass over the raw headers: content-length, content-type, idempotency-key."""
    length = ctype = key = None
    for name, value in request.scope["headers"]:
        if name == b"content-length":
            length = int(value) if value.isdigit() else None
        elif name == b"content-type":
            ctype = value.decode("latin-1")
        elif name == b"idempotency-key":
            key = value.decode("latin-1")
    return length, ctype, key


async def send(request: Request) -> Response:
    app: Appliance = request.app.state.appliance
    try:
        length, content_type, key = _headers(request)
        data = await read_body(request, app.settings.max_body_bytes, length, app.deadlines)
        if len(data) > PARSE_IN_THREAD_BYTES:
            batch = await run_in_threadpool(parse, content_type, data)
        else:
            batch = parse(content_type, data)
        if len(batch) > app.settings.max_batch_rows:
            raise PayloadTooLarge(f"{len(batch)} readings exceed the limit of {app.settings.max_batch_rows} per request",
                                  limit=app.settings.max_batch_rows)
        if key is not None and not 0 < len(key) <= 200:
            raise BadRequest("Idempotency-Key must be 1-200 characters", field="Idempotency-Key")
        stored = await app.writer.ingest(batch, key)
    except FDEdgeError as exc:
        app.metrics.rejected.labels(reason=str(exc.details.get("reason", exc.code))).inc()
        raise
    faults = stored.faults.tolist()
    headers = {"X-FDEdge-First-Id": str(stored.first_id)}
    if stored.replayed:
        headers["X-FDEdge-Replayed"] = "true"
    if batch.ignored:
        headers["X-FDEdge-Ignored-Keys"] = ",".join(sorted(map(_header_safe, batch.ignored))[:20])
    return Response(dumps([dict(zip(FAULTS, row)) for row in faults]), media_type="application/json", headers=headers)
