"""GET /events: every committed reading as a Server-Sent Event whose id is the row id.

A client that reconnects with Last-Event-ID, or falls behind its bounded queue, is caught up
from the database, so a dashboard never shows a gap and never slows ingest.
"""

from __future__ import annotations

import asyncio
import json
from typing import AsyncIterator

import orjson
from sse_starlette.event import ServerSentEvent
from sse_starlette.sse import EventSourceResponse
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from edge import queries
from edge.appliance import Appliance
from edge.hub import Event
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


COALESCE_SECONDS = 0.1  # a page cannot show more than ~20 updates/s; batching keeps 100 clients cheap


def _reading_frame(row: tuple) -> bytes:
    return Event.make(row[0], row[2], "reading", orjson.dumps(queries.reading(row)).decode()).wire


async def stream(app: Appliance, last: int | None, machine: str | None) -> AsyncIterator[bytes]:
    hub = app.hub
    readers = app.readers
    hub.clients += 1
    cursor = hub.next_seq  # taken before reading the database: nothing can slip between

    async def newest() -> int:
        return await run_in_threadpool(lambda: queries.max_id(readers.get()))

    async def after(last_id: int) -> list[tuple]:
        return await run_in_threadpool(lambda: queries.rows_after(readers.get(), last_id, machine, PAGE))

    try:
        # Every connection starts with hello: the newest row id and the database's identity, so a
        # page can reload its alarms and notice a replaced database. Only a fresh connection takes
        # hello's id as its resume point.
        top = await newest()
        db_id = await run_in_threadpool(lambda: database_id(readers.get()))
        hello = json.dumps({"last_id": top, "database_id": db_id})
        if last is None:
            last = top
        yield ServerSentEvent(event="hello", data=hello, id=str(last) if last == top else None).encode()
        catch_up = True
        while True:
            if catch_up:
                top = await newest()
                if top - last > app.settings.sse_replay_max:
                    skipped = top - last - app.settings.sse_replay_max
                    last = top - app.settings.sse_replay_max
                    yield ServerSentEvent(event="gap", data=json.dumps({"skipped": skipped, "resume_id": last})).encode()
                while True:
                    rows = await after(last)
                    if rows:
                        yield b"".join(_reading_frame(row) for row in rows)
                        last = rows[-1][0]
                    if len(rows) < PAGE:
                        break
                catch_up = False
            await hub.wait_beyond(cursor)
            await asyncio.sleep(COALESCE_SECONDS)
            published = hub.since(cursor)
            if published is None:
                # Fell off the ring: read what was missed from the database instead. Alarm changes
                # are not replayed from there: tell the page to reload them.
                cursor = hub.next_seq
                catch_up = True
                yield ServerSentEvent(event="alarm", data='{"event":"reload"}').encode()
                continue
            cursor += len(published)
            frames = []
            for batch in published:
                if machine is None and batch.first_reading > last:  # the common case: as it is
                    frames.append(batch.wire)
                    last = batch.last_reading
                    continue
                for event in batch.events:
                    if machine is not None and event.machine != machine:
                        continue
                    if event.kind == "reading":
                        if event.id <= last:
                            continue
                        last = event.id
                    frames.append(event.wire)
            if frames:
                yield b"".join(frames)
    finally:
        hub.clients -= 1
