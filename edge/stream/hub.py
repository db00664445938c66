"""Fan-out of committed readings to live SSE clients without ever slowing ingest.

Events go once into a shared, bounded ring, already encoded as SSE frames; each client keeps
only a cursor into it. Publishing is O(1) per event whatever the number of clients, and a client
sends everything new in one write. A client that falls off the end of the ring is caught up from
the database instead, so a slow browser costs the writer nothing and still sees every reading.

Clients wake together (one publication wakes them all, and each then waits the same coalescing
time), so the commits a tick sends are joined once per cursor and shape and every client at that
cursor writes the same bytes: a tick costs a client O(1), not a pass over every commit in it.

A reading is encoded once per event *shape* (`GET /events?shape=`), and only for the shapes some
connected client asked for: the hub counts its clients per shape. A client whose shape was not
built for a commit connected after that commit was stored, so it read the commit's rows from the
database when it started (edge/stream/subscriber.py relies on, and still checks, exactly that).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from edge.fdrest import iso
from edge.stream.wire import SHAPES, UNKNOWN_QUALITY, frame, reading_frame


@dataclass(frozen=True, slots=True)
class Event:
    id: int  # row id for readings; the causing reading's id for alarms
    machine: str
    kind: str  # "reading" | "alarm"
    wires: Mapping[str, bytes]  # shape -> the encoded SSE frame, built once for every client of it

    @classmethod
    def reading(cls, id_: int, time: str, machine: str, x: list, y: list, shapes: tuple[str, ...],
                quality: Sequence[Any] = UNKNOWN_QUALITY, model_version: str | None = None) -> Event:
        """`time` as stored (`YYYY-MM-DD HH:MM:SS`, UTC); one frame per shape in `shapes`; `quality`
        the stored (status, score, reasons), `model_version` the store version that scored it."""
        when = iso(time)
        return cls(id_, machine, "reading", {s: reading_frame(s, id_, when, machine, x, y, quality, model_version)
                                             for s in shapes})

    @classmethod
    def make(cls, id_: int, machine: str, kind: str, data: str | bytes) -> Event:
        """An event whose frame is the same for every shape (alarms). Alarm events carry no SSE
        id: they must never move a client's reading resume point."""
        wire = frame(kind, data, id_ if kind == "reading" else None)
        return cls(id_, machine, kind, dict.fromkeys(SHAPES, wire))


@dataclass(frozen=True, slots=True)
class Published:
    """One commit's events, plus their frames joined once per shape: a client without a machine
    filter sends its shape's as it is. A shape nobody listened to when the commit was published
    is absent."""

    events: list[Event]
    wires: dict[str, bytes]
    first_reading: int  # smallest reading id in it (0: none)
    last_reading: int  # largest reading id in it (0: none)


@dataclass(frozen=True, slots=True)
class Joined:
    """Every commit from a cursor on, in one shape, as one chunk."""

    wire: bytes
    next_seq: int  # the cursor after it
    first_reading: int  # smallest reading id in it (0: none)
    last_reading: int  # largest reading id in it (0: none)


class Hub:
    def __init__(self, size: int = 4096) -> None:
        # Bounded by events, not commits: one commit can hold a whole 10,000-reading batch, and
        # 512 such commits would be gigabytes. The newest commit always stays, whatever its size.
        self.size = size
        self.events = 0  # events held in the ring
        self.ring: deque[Published] = deque()
        self.next_seq = 0  # sequence number the next published commit gets
        self.clients: dict[str, int] = dict.fromkeys(SHAPES, 0)  # connected clients per shape
        self._shapes: tuple[str, ...] = ()
        self._changed = asyncio.Event()
        self.closed = False  # the server is shutting down: every stream ends cleanly
        self._joined: dict[tuple[int, str], Joined] = {}  # valid until the next publication

    def __len__(self) -> int:
        return sum(self.clients.values())

    def subscribe(self, shape: str) -> None:
        """A client of `shape` connects: from now on every commit is encoded in its shape too.
        Runs on the event loop; the writer thread only reads `shapes()`."""
        self.clients[shape] += 1
        self._shapes = tuple(s for s in SHAPES if self.clients[s])

    def unsubscribe(self, shape: str) -> None:
        self.clients[shape] -= 1
        self._shapes = tuple(s for s in SHAPES if self.clients[s])

    def shapes(self) -> tuple[str, ...]:
        """The shapes some connected client wants (empty: nobody listens, encode nothing)."""
        return self._shapes

    @property
    def first_seq(self) -> int:
        return self.next_seq - len(self.ring)

    def publish(self, events: list[Event], shapes: tuple[str, ...] = SHAPES) -> None:
        """Runs on the event loop; never awaits. `shapes`: those every event has a frame for."""
        if not events:
            return
        readings = [e.id for e in events if e.kind == "reading"]
        wires = {s: b"".join(e.wires[s] for e in events) for s in shapes}
        self.ring.append(Published(events, wires, min(readings, default=0), max(readings, default=0)))
        self.events += len(events)
        while self.events > self.size and len(self.ring) > 1:
            self.events -= len(self.ring.popleft().events)
        self.next_seq += 1
        self._joined.clear()
        self._wake()

    def close(self) -> None:
        """Wake every client to end its stream (runs on the event loop)."""
        self.closed = True
        self._wake()

    def _wake(self) -> None:
        """Wake every waiting client at once; later waiters wait for the next change."""
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def wait_beyond(self, cursor: int) -> None:
        """Until a commit beyond `cursor` is published, or the hub closes."""
        while self.next_seq <= cursor and not self.closed:
            await self._changed.wait()

    def since(self, cursor: int) -> list[Published] | None:
        """Commits from `cursor` on, or None when the client fell off the end of the ring."""
        if cursor < self.first_seq:
            return None
        skip = cursor - self.first_seq
        return [self.ring[i] for i in range(skip, len(self.ring))]

    def joined(self, cursor: int, shape: str) -> Joined | None:
        """Every commit from `cursor` on in `shape`, joined once for all the clients at `cursor`.
        None when the client fell off the ring, there is nothing new, or a commit lacks the shape
        (the caller then goes through the commits one by one)."""
        key = (cursor, shape)
        hit = self._joined.get(key)
        if hit is not None:
            return hit
        published = self.since(cursor)
        if not published or any(shape not in batch.wires for batch in published):
            return None
        firsts = [batch.first_reading for batch in published if batch.first_reading]
        hit = Joined(b"".join([batch.wires[shape] for batch in published]), self.next_seq,
                     min(firsts, default=0), max(batch.last_reading for batch in published))
        self._joined[key] = hit
        return hit
