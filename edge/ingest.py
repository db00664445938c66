"""POST /send: FD-REST's single reading, plus batches as JSON array, NDJSON or CSV."""

from __future__ import annotations

import asyncio
import contextlib
import time

from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from edge.appliance import Appliance, dumps
from edge.errors import BadRequest, FDEdgeError, PayloadTooLarge
from edge.fdrest import FAULTS
from edge.readings import parse

PARSE_IN_THREAD_BYTES = 64 * 1024  # big batches are parsed off the event loop
BODY_TIMEOUT = 30.0  # a client trickling its body (slowloris) is cut off


if hasattr(asyncio, "timeout"):  # 3.11+: no extra task per request, unlike wait_for
    _timeout = asyncio.timeout
else:  # pragma: no cover - Python 3.10
    @contextlib.asynccontextmanager
    async def _timeout(seconds: float):
        task = asyncio.current_task()
        handle = asyncio.get_running_loop().call_later(seconds, task.cancel)
        try:
            yield
        except asyncio.CancelledError:
            raise asyncio.TimeoutError from None
        finally:
            handle.cancel()


def _header_safe(key: str) -> str:
    return "".join(c if 32 <= ord(c) < 127 and c != "," else "?" for c in key[:64])


async def read_body(request: Request, limit: int) -> bytes:
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise PayloadTooLarge(f"body of {length} bytes exceeds the limit of {limit} bytes", limit=limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"body exceeds the limit of {limit} bytes", limit=limit)
        chunks.append(chunk)
    return b"".join(chunks)


async def send(request: Request) -> Response:
    app: Appliance = request.app.state.appliance
    started = time.perf_counter()
    try:
        try:
            async with _timeout(BODY_TIMEOUT):
                data = await read_body(request, app.settings.max_body_bytes)
        except asyncio.TimeoutError:
            raise BadRequest(f"the body did not arrive within {BODY_TIMEOUT:.0f} s", reason="body_timeout") from None
        except ClientDisconnect:
            raise BadRequest("the client disconnected before sending its body", reason="client_disconnect") from None
        content_type = request.headers.get("content-type")
        if len(data) > PARSE_IN_THREAD_BYTES:
            batch = await run_in_threadpool(parse, content_type, data)
        else:
            batch = parse(content_type, data)
        if len(batch) > app.settings.max_batch_rows:
            raise PayloadTooLarge(f"{len(batch)} readings exceed the limit of {app.settings.max_batch_rows} per request",
                                  limit=app.settings.max_batch_rows)
        key = request.headers.get("idempotency-key")
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
    app.metrics.requests.inc()
    app.metrics.ingest.observe(time.perf_counter() - started)
    return Response(dumps([dict(zip(FAULTS, row)) for row in faults]), media_type="application/json", headers=headers)
