"""Small JSON request bodies (an acknowledgement, a label, a login): the media type checked, the
size bounded while the body streams in, and a parse error named, before any route looks at it."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request

from edge.errors import InvalidJSON, PayloadTooLarge, UnsupportedMediaType

MAX_BYTES = 16 * 1024


def require_json(request: Request, what: str) -> None:
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "application/json":
        raise UnsupportedMediaType(f"{what} is JSON: send Content-Type: application/json, "
                                   f"not {media[:60]!r}" if media else
                                   f"{what} is JSON: send Content-Type: application/json",
                                   accepted=["application/json"])


async def json_body(request: Request) -> Any:
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > MAX_BYTES:
        raise PayloadTooLarge(f"body exceeds the limit of {MAX_BYTES} bytes", limit=MAX_BYTES)
    data = b""
    async for chunk in request.stream():
        data += chunk
        if len(data) > MAX_BYTES:
            raise PayloadTooLarge(f"body exceeds the limit of {MAX_BYTES} bytes", limit=MAX_BYTES)
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidJSON(f"the body is not valid JSON: {str(exc)[:100]}") from None
