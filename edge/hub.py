"""Fan-out of committed readings to live SSE clients without ever slowing ingest.

Events go once into a shared, bounded ring, already encoded as SSE frames; each client keeps
only a cursor into it. Publishing is O(1) per event whatever the number of clients, and a client
sends everything new in one write. A client that falls off the end of the ring is caught up from
the database instead, so a slow browser costs the writer nothing and still sees every reading.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass

from sse_starlette.event import ServerSentEvent


@dataclass(frozen=True, slots=True)
class Event:
    id: int  # row id for readings; the causing reading's id for alarms
    machine: str
    kind: str  # "reading" | "alarm"
    wire: bytes  # the encoded SSE frame, built once for every client

    @classmethod
    def make(cls, id_: int, machine: str, kind: str, data: str) -> "Event":
        # Alarm events carry no SSE id: they must never move a client's reading resume point.
        frame = ServerSentEvent(data=data, event=kind, id=str(id_) if kind == "reading" else None)
        return cls(id_, machine, kind, frame.encode())


@dataclass(frozen=True, slots=True)
class Published:
    """One commit's events, plus their frames joined once: a client without a machine filter
    sends the whole thing as it is."""

    events: list[Event]
    wire: bytes
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
        self.clients = 0
        self._changed = asyncio.Event()

    def __len__(self) -> int:
        return self.clients

    @property
    def first_seq(self) -> int:
        return self.next_seq - len(self.ring)

    def publish(self, events: list[Event]) -> None:
        """Runs on the event loop; never awaits."""
        if not events:
            return
        readings = [e.id for e in events if e.kind == "reading"]
        self.ring.append(Published(events, b"".join(e.wire for e in events),
                                   min(readings, default=0), max(readings, default=0)))
        self.events += len(events)
        while self.events > self.size and len(self.ring) > 1:
            self.events -= len(self.ring.popleft().events)
        self.next_seq += 1
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def wait_beyond(self, cursor: int) -> None:
        while self.next_seq <= cursor:
            await self._changed.wait()

    def since(self, cursor: int) -> list[Published] | None:
        """Commits from `cursor` on, or None when the client fell off the end of the ring."""
        if cursor < self.first_seq:
            return None
        skip = cursor - self.first_seq
        return [self.ring[i] for i in range(skip, len(self.ring))]
