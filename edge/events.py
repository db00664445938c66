"""GET /events: every committed reading as a Server-Sent Event whose id is the row id.

A client that reconnects with Last-Event-ID, or falls behind its bounded queue, is caught up
from the database, so a dashboard never shows a gap and never slows ingest.
"""

from __future__ import annotations

import json
from typing import AsyncIterator

from sse_starlette.event import ServerSentEvent
from sse_starlette.sse import EventSourceResponse
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from edge import queries
from edge.appliance import Appliance
from edge.storage import database_id

PAGE = 500


def _last_event_id(request: Request) -> int | None:
    text = request.headers.get("last-event-id") or request.query_params.get("last_event_id")
    try:
        return int(text) if text else None
    except ValueError:
        return None


async def events(request: Request) -> Response:
    app: Appliance = request.app.state.appliance
    machine = request.query_params.get("machine") or None
    return EventSourceResponse(
        stream(app, _last_event_id(request), machine),
        ping=15,
        send_timeout=30,  # a client that stops reading is disconnected, not buffered for
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


async def stream(app: Appliance, last: int | None, machine: str | None) -> AsyncIterator[ServerSentEvent]:
    sub = app.hub.subscribe(machine)  # before reading the database: nothing can slip between
    readers = app.readers

    async def newest() -> int:
        return await run_in_threadpool(lambda: queries.max_id(readers.get()))

    async def after(last_id: int) -> list[tuple]:
        return await run_in_threadpool(lambda: queries.rows_after(readers.get(), last_id, machine, PAGE))

    try:
        # Every connection starts with hello (after subscribing, so nothing slips in between): the
        # newest row id and the database's identity, so a page can reload its alarms and notice a
        # replaced database. Only a fresh connection takes hello's id as its resume point.
        top = await newest()
        db_id = await run_in_threadpool(lambda: database_id(readers.get()))
        hello = json.dumps({"last_id": top, "database_id": db_id})
        if last is None:
            last = top
            yield ServerSentEvent(event="hello", data=hello, id=str(last))
        else:
            yield ServerSentEvent(event="hello", data=hello)
        catch_up = True
        while True:
            if catch_up:
                top = await newest()
                if top - last > app.settings.sse_replay_max:
                    skipped = top - last - app.settings.sse_replay_max
                    last = top - app.settings.sse_replay_max
                    yield ServerSentEvent(event="gap", data=json.dumps({"skipped": skipped, "resume_id": last}))
                while True:
                    rows = await after(last)
                    for row in rows:
                        yield ServerSentEvent(event="reading", id=str(row[0]),
                                              data=json.dumps(queries.reading(row), separators=(",", ":")))
                        last = row[0]
                    if len(rows) < PAGE:
                        break
                catch_up = False
            event = await sub.queue.get()
            if sub.lagging:
                # Fell behind: drop the queue, read what was missed from the database instead.
                while not sub.queue.empty():
                    sub.queue.get_nowait()
                sub.lagging = False
                catch_up = True
                # Alarm changes in the dropped queue are not replayed: tell the page to reload them.
                yield ServerSentEvent(event="alarm", data='{"event":"reload"}')
                continue
            if event.kind == "alarm":  # no SSE id: alarm events never move the reading resume point
                yield ServerSentEvent(event="alarm", data=event.data)
                continue
            if event.id <= last:
                continue
            yield ServerSentEvent(event=event.kind, id=str(event.id), data=event.data)
            last = event.id
    finally:
        app.hub.unsubscribe(sub)
