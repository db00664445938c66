"""GET /events: every committed reading as a Server-Sent Event whose id is the row id.

`?shape=` picks how a reading is written: `objects` (the default, the API's reading object) or
`arrays` (`"x"`/`"y"` value lists, named once by the `hello` event; what the pages use). The
stream itself (hello, catch-up, live frames) is edge/stream/subscriber.py.
"""

from __future__ import annotations

from sse_starlette.sse import EventSourceResponse
from starlette.requests import Request
from starlette.responses import Response

from edge.appliance import Appliance
from edge.errors import BadRequest
from edge.http.responses import ClosesItsBody
from edge.stream.subscriber import Subscriber
from edge.stream.wire import SHAPES


def _last_event_id(request: Request) -> int | None:
    text = request.headers.get("last-event-id") or request.query_params.get("last_event_id")
    try:
        value = int(text) if text else None
    except ValueError:
        return None
    # Row ids are SQLite INTEGERs: anything outside that range names no row (and would overflow
    # the query), so it is no resume point at all.
    return value if value is not None and 0 <= value < 2**63 else None


def _shape(request: Request) -> str:
    shape = request.query_params.get("shape") or SHAPES[0]
    if shape not in SHAPES:
        raise BadRequest(f"unknown shape {shape[:40]!r}; use one of {', '.join(SHAPES)}", field="shape",
                         valid=list(SHAPES))
    return shape


class ClosingEventSourceResponse(ClosesItsBody, EventSourceResponse):
    pass


async def events(request: Request) -> Response:
    app: Appliance = request.app.state.appliance
    subscriber = Subscriber(app.hub, app.readers, last=_last_event_id(request),
                            machine=request.query_params.get("machine") or None, shape=_shape(request),
                            replay_max=app.settings.sse_replay_max)
    return ClosingEventSourceResponse(
        subscriber.events(),
        ping=15,
        send_timeout=app.settings.send_timeout,  # a client that stops reading is disconnected, not buffered for
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
