"""One /events connection: every committed reading after its resume point, then everything live.

A client that reconnects with Last-Event-ID, or falls behind the hub's bounded ring, is caught
up from the database, so a dashboard never shows a gap and never slows ingest. One method per
job, as sse-starlette's EventSourceResponse has one per concurrent task: `hello` says where the
stream starts, `catch_up` replays stored rows, `follow` sends the hub's live frames.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import orjson

from edge.fdrest import FAULTS, FEATURES
from edge.store import reading_queries
from edge.store.database import Readers
from edge.store.schema import database_id
from edge.stream.hub import Hub, Published
from edge.stream.wire import SHAPES, frame, reading_wire, row_json

PAGE = 500  # stored rows per catch-up read
COALESCE_SECONDS = 0.1  # a page cannot show more than ~20 updates/s; batching keeps 100 clients cheap
RELOAD_ALARMS = frame("alarm", b'{"event":"reload"}')


class Subscriber:
    """The stream of one client; `last` is the newest reading id it has (None: a fresh client)."""

    def __init__(self, hub: Hub, readers: Readers, *, last: int | None, machine: str | None,
                 shape: str = SHAPES[0], replay_max: int = 10_000) -> None:
        self.hub = hub
        self.readers = readers
        self.last = last if last is not None else -1
        self.fresh = last is None
        self.machine = machine
        self.shape = shape
        self.replay_max = replay_max
        self.cursor = 0  # the next hub sequence number this client has not seen

    async def events(self) -> AsyncIterator[bytes]:
        # Subscribed first, then the database read: a commit that was encoded without this
        # client's shape was stored before this point, so the reads below see it (see `_missed`).
        self.hub.subscribe(self.shape)
        self.cursor = self.hub.next_seq  # taken before reading the database: nothing can slip between
        try:
            yield await self.hello()
            while not self.hub.closed:
                async for chunk in self.catch_up():
                    yield chunk
                async for chunk in self.follow():
                    yield chunk
        finally:
            self.hub.unsubscribe(self.shape)

    async def hello(self) -> bytes:
        """Every connection starts with hello: the newest row id, the database's identity (so a
        page can reload its alarms and notice a replaced database) and the names of the values in
        the arrays shape. Only a fresh connection takes hello's id as its resume point."""
        top = await self._newest()
        db_id = await self.readers.run(database_id)
        hello = orjson.dumps({"last_id": top, "database_id": db_id, "features": FEATURES, "faults": FAULTS})
        if self.fresh or self.last > top:
            # Beyond the newest row (a replaced database, or an invented id): nothing is missed;
            # resume from the newest, or the client would skip every reading up to its number.
            self.last = top
        return frame("hello", hello, self.last if self.last == top else None)

    async def catch_up(self) -> AsyncIterator[bytes]:
        """What the client missed, from the database: at most `replay_max` readings, after a `gap`
        event that says how many older ones it will not get."""
        top = await self._newest()
        if top - self.last > self.replay_max:
            skipped = top - self.last - self.replay_max
            self.last = top - self.replay_max
            yield frame("gap", orjson.dumps({"skipped": skipped, "resume_id": self.last}))
        async for chunk in self._replay():
            yield chunk

    async def follow(self) -> AsyncIterator[bytes]:
        """Live frames from the hub, one write per coalescing tick. Returns when the client fell
        off the ring (the caller then catches up from the database) or when the hub closes."""
        hub, machine, shape = self.hub, self.machine, self.shape
        while True:
            await hub.wait_beyond(self.cursor)
            if hub.closed:
                return
            await asyncio.sleep(COALESCE_SECONDS)
            if machine is None:
                shared = hub.joined(self.cursor, shape)
                if shared is not None and (shared.first_reading == 0 or shared.first_reading > self.last):
                    # the common case: the same bytes as every other client at this cursor
                    self.cursor = shared.next_seq
                    self.last = max(self.last, shared.last_reading)
                    yield shared.wire
                    continue
            published = hub.since(self.cursor)
            if published is None:
                # Fell off the ring: read what was missed from the database instead. Alarm changes
                # are not replayed from there: tell the page to reload them.
                self.cursor = hub.next_seq
                yield RELOAD_ALARMS
                return
            self.cursor += len(published)
            frames: list[bytes] = []
            for batch in published:
                wire = batch.wires.get(shape)
                if wire is None and self._missed(batch):
                    if frames:
                        yield b"".join(frames)
                        frames = []
                    async for chunk in self._replay():
                        yield chunk
                if wire is not None and machine is None and batch.first_reading > self.last:
                    frames.append(wire)  # the common case: as it is
                    self.last = batch.last_reading
                    continue
                for event in batch.events:
                    if machine is not None and event.machine != machine:
                        continue
                    event_wire = event.wires.get(shape)
                    if event_wire is None:  # a reading gone from the database before encoding
                        continue
                    if event.kind == "reading":
                        if event.id <= self.last:  # sent already
                            continue
                        self.last = event.id
                    frames.append(event_wire)
            if frames:
                yield b"".join(frames)

    async def _newest(self) -> int:
        return await self.readers.run(reading_queries.max_id)

    async def _replay(self) -> AsyncIterator[bytes]:
        """Every row after `last` from the database, a page at a time."""
        while True:
            rows = await self.readers.run(reading_queries.rows_after, self.last, self.machine, PAGE)
            if rows:
                yield b"".join(reading_wire(row[0], row_json(self.shape, row)) for row in rows)
                self.last = rows[-1][0]
            if len(rows) < PAGE:
                return

    def _missed(self, batch: Published) -> bool:
        """A reading of this commit for this client that was not encoded in its shape. None by
        construction (the commit was stored before this client subscribed, so its start-up read
        had it); checked anyway, and then caught up from the database."""
        return any(e.kind == "reading" and e.id > self.last and (self.machine is None or e.machine == self.machine)
                   for e in batch.events)
