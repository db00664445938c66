"""Fan-out of committed readings to live SSE clients without ever blocking ingest.

Each client has a bounded queue. Publishing never waits: a client whose queue is full is marked
lagging and its stream re-reads what it missed from the database, so a slow browser costs the
writer nothing and still sees every reading.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Event:
    id: int
    machine: str
    kind: str  # "reading" | "alarm"
    data: str  # JSON, serialised once for every client


@dataclass(eq=False)
class Subscriber:
    machine: str | None
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)
    lagging: bool = False


class Hub:
    def __init__(self, queue_size: int = 1000) -> None:
        self.queue_size = queue_size
        self.subscribers: set[Subscriber] = set()

    def __len__(self) -> int:
        return len(self.subscribers)

    def subscribe(self, machine: str | None = None) -> Subscriber:
        sub = Subscriber(machine=machine, queue=asyncio.Queue(self.queue_size))
        self.subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        self.subscribers.discard(sub)

    def publish(self, events: list[Event]) -> None:
        """Runs on the event loop; O(events x clients), never awaits."""
        for sub in self.subscribers:
            if sub.lagging:
                continue
            for event in events:
                if sub.machine is not None and event.machine != sub.machine:
                    continue
                try:
                    sub.queue.put_nowait(event)
                except asyncio.QueueFull:
                    sub.lagging = True
                    break
