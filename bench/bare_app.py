"""The yardstick: a bare Starlette endpoint that only parses the same JSON body.

The runtime's single-reading throughput is reported as a ratio to this app, measured in the
same run on the same machine, so the figure means something on a noisy shared host.
"""

from __future__ import annotations

import json

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

ANSWER = json.dumps([{f"fault{i}": 0.0 for i in range(8)}]).encode()


async def send(request: Request) -> Response:
    json.loads(await request.body())
    return Response(ANSWER, media_type="application/json")


app = Starlette(routes=[Route("/send", send, methods=["POST"])])
