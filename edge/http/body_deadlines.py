"""Body read deadlines for slow clients."""

from __future__ import annotations

import asyncio

BODY_TIMEOUT = 30.0  # a client trickling its body (slowloris) is cut off


class BodyDeadlines:
    """Cuts off clients that trickle their body (slowloris) without a timer per request:
    requests register while reading, and one sweep a second cancels the overdue ones."""

    def __init__(self, seconds: float = BODY_TIMEOUT) -> None:
        self.seconds = seconds
        self.reading: dict[asyncio.Task, float] = {}
        self.expired: set[asyncio.Task] = set()

    async def sweep_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(1.0)
            now = loop.time()
            for task, started in list(self.reading.items()):
                if now - started > self.seconds:
                    self.expired.add(task)
                    task.cancel()
