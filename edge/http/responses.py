"""Every error leaves the server as JSON through here; no traceback ever reaches a client."""

from __future__ import annotations

import contextlib
import logging
import sys
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from edge.errors import FDEdgeError
from edge.http.quiet_logs import describe, is_disconnect, mark_logged

log = logging.getLogger(__name__)

_HTTP_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
               405: "method_not_allowed", 413: "payload_too_large", 415: "unsupported_media_type"}


def error_response(exc: FDEdgeError) -> JSONResponse:
    response = JSONResponse(exc.body(), status_code=exc.status)
    if exc.details.get("reason") == "body_timeout":
        # A slowloris sender: close, or the connection stays open as long as it keeps trickling.
        # Not for 413: closing with the body unread makes the kernel reset the connection, and the
        # client may never see the 413 (it would retry instead of setting the batch aside).
        response.headers["Connection"] = "close"
    return response


async def on_fdedge_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, FDEdgeError)
    return error_response(exc)


async def on_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, "error")
    message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
    if exc.status_code == 404:
        message = f"no such path: {request.url.path}"
    return JSONResponse({"error": code, "message": message}, status_code=exc.status_code,
                        headers=getattr(exc, "headers", None))


def internal_error(method: str, path: str) -> JSONResponse:
    """Call from an `except` block: logs the traceback for the operator, tells the client nothing of it.

    Marked as logged, so uvicorn's own report of the re-raised exception is dropped (one traceback)."""
    log.exception("unexpected error on %s %s", method, path)
    mark_logged(sys.exc_info()[1])
    return JSONResponse({"error": "internal", "message": "internal error; the server logged the details"},
                        status_code=500)


async def on_unexpected(request: Request, exc: Exception) -> Response:
    """Also reached by a client that went away mid-response (an SSE client that stopped reading):
    that is one line, not a traceback; no answer can reach that client any more."""
    mark_logged(exc)
    if is_disconnect(exc):
        client = request.client.host if request.client else "?"
        log.info("client %s went away or stopped reading during %s %s (%s); connection closed",
                 client, request.method, request.url.path, describe(exc))
        return JSONResponse({"error": "disconnected", "message": "the client went away"}, status_code=499)
    return internal_error(request.method, request.url.path)


class ClosesItsBody:
    """Mixed into a streaming response: its body iterator is closed however the response ends.

    Starlette and sse-starlette leave an async generator suspended when a send fails (a client
    that stopped reading): it keeps its database connection and its chunk until a full garbage
    collection, which a reference cycle through the error's traceback defers. 30 exports stalled
    in 15 s held 170 MB that way."""

    body_iterator: Any

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)  # type: ignore[misc]
        finally:
            aclose = getattr(self.body_iterator, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(RuntimeError):  # still running in a cancelled task: it ends there
                    await aclose()


class ClosingStreamingResponse(ClosesItsBody, StreamingResponse):
    pass


EXCEPTION_HANDLERS = {
    FDEdgeError: on_fdedge_error,
    HTTPException: on_http_exception,
    Exception: on_unexpected,
}
