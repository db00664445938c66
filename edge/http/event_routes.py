"""GET /events: every committed reading as a Server-Sent Event whose id is the row id.

A client that reconnects with Last-Event-ID, or falls behind its bounded queue, is caught up
from the database, so a dashboard never shows a gap and never slows ingest.

`?shape=` picks how a reading is written: `objects` (the default, the API's reading object) or
`arrays` (`"x"`/`"y"` value lists, named once by the `hello` event; what the pages use). Live
frames come from the hub, encoded once per shape; catch-up frames from the database are built
the same way, byte for byte.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import orjson
from sse_starlette.sse import EventSourceResponse
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from edge.appliance import Appliance
from edge.errors import BadRequest
from edge.fdrest import FAULTS, FEATURES
from edge.store import reading_queries as queries
from edge.store.database import database_id
from edge.stream.hub import SHAPES, frame, reading_wire

PAGE = 500


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


async def events(request: Request) -> Response:
    app: Appliance = request.app.state.appliance
    machine = request.query_params.get("machine") or None
    return EventSourceResponse(
        stream(app, _last_event_id(request), machine, _shape(request)),
        ping=15,
        send_timeout=30,  # a client that stops reading is disconnected, not buffered for
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


COALESCE_SECONDS = 0.1  # a page cannot show more than ~20 updates/s; batching keeps 100 clients cheap
RELOAD_ALARMS = frame("alarm", b'{"event":"reload"}')


def _reading_frame(row: tuple, shape: str) -> bytes:
    return reading_wire(row[0], queries.row_json(shape, row))


async def stream(app: Appliance, last: int | None, machine: str | None, shape: str = SHAPES[0]
                 ) -> AsyncIterator[bytes]:
    hub = app.hub
    readers = app.readers
    # Subscribed first, then the database read: a commit that was encoded without this client's
    # shape was stored before this point, so the reads below see it (see `missed`).
    hub.subscribe(shape)
    cursor = hub.next_seq  # taken before reading the database: nothing can slip between

    async def newest() -> int:
        return await run_in_threadpool(lambda: queries.max_id(readers.get()))

    async def after(last_id: int) -> list[tuple]:
        return await run_in_threadpool(lambda: queries.rows_after(readers.get(), last_id, machine, PAGE))

    async def replay() -> AsyncIterator[bytes]:
        """Every row after `last` from the database, a page at a time."""
        nonlocal last
        while True:
            rows = await after(last)
            if rows:
                yield b"".join(_reading_frame(row, shape) for row in rows)
                last = rows[-1][0]
            if len(rows) < PAGE:
                return

    def missed(batch) -> bool:
        """A reading of this commit for this client that was not encoded in its shape. None by
        construction (the commit was stored before this client subscribed, so its start-up read
        had it); checked anyway, and then caught up from the database."""
        return any(e.kind == "reading" and e.id > last and (machine is None or e.machine == machine)
                   for e in batch.events)

    try:
        # Every connection starts with hello: the newest row id, the database's identity (so a
        # page can reload its alarms and notice a replaced database) and the names of the values
        # in the arrays shape. Only a fresh connection takes hello's id as its resume point.
        top = await newest()
        db_id = await run_in_threadpool(lambda: database_id(readers.get()))
        hello = orjson.dumps({"last_id": top, "database_id": db_id, "features": FEATURES, "faults": FAULTS})
        if last is None or last > top:
            # Beyond the newest row (a replaced database, or an invented id): nothing is missed;
            # resume from the newest, or the client would skip every reading up to its number.
            last = top
        yield frame("hello", hello, last if last == top else None)
        catch_up = True
        while True:
            if catch_up:
                top = await newest()
                if top - last > app.settings.sse_replay_max:
                    skipped = top - last - app.settings.sse_replay_max
                    last = top - app.settings.sse_replay_max
                    yield frame("gap", orjson.dumps({"skipped": skipped, "resume_id": last}))
                async for chunk in replay():
                    yield chunk
                catch_up = False
            await hub.wait_beyond(cursor)
            await asyncio.sleep(COALESCE_SECONDS)
            if machine is None:
                shared = hub.joined(cursor, shape)
                if shared is not None and (shared.first_reading == 0 or shared.first_reading > last):
                    # the common case: the same bytes as every other client at this cursor
                    cursor = shared.next_seq
                    last = max(last, shared.last_reading)
                    yield shared.wire
                    continue
            published = hub.since(cursor)
            if published is None:
                # Fell off the ring: read what was missed from the database instead. Alarm changes
                # are not replayed from there: tell the page to reload them.
                cursor = hub.next_seq
                catch_up = True
                yield RELOAD_ALARMS
                continue
            cursor += len(published)
            frames = []
            for batch in published:
                wire = batch.wires.get(shape)
                if wire is None and missed(batch):
                    if frames:
                        yield b"".join(frames)
                        frames = []
                    async for chunk in replay():
                        yield chunk
                if wire is not None and machine is None and batch.first_reading > last:
                    frames.append(wire)  # the common case: as it is
                    last = batch.last_reading
                    continue
                for event in batch.events:
                    if machine is not None and event.machine != machine:
                        continue
                    event_wire = event.wires.get(shape)
                    if event.kind == "reading":
                        if event.id <= last or event_wire is None:  # sent, or gone from the database
                            continue
                        last = event.id
                    frames.append(event_wire)
            if frames:
                yield b"".join(frames)
    finally:
        hub.unsubscribe(shape)
