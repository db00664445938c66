"""The yardsticks: a bare Starlette endpoint that only parses the same JSON body, and the same
endpoint made durable.

The runtime's single-reading throughput is reported as a ratio to `app`, measured in the same
run on the same machine, so the figure means something on a noisy shared host. `durable` adds
the least that any server must do before it may answer "stored" with `--sync full`'s promise:
append the body to a file and wait for an fdatasync, one per group of requests that arrived
together (the group commit FD-Edge does, without scoring or SQLite). Its ratio to `app` is the
ceiling for a power-cut-safe ingest on this machine and disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import queue
import threading
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bench.common import DURABLE_LOG

ANSWER = json.dumps([{f"fault{i}": 0.0 for i in range(8)}]).encode()


async def send(request: Request) -> Response:
    json.loads(await request.body())
    return Response(ANSWER, media_type="application/json")


app = Starlette(routes=[Route("/send", send, methods=["POST"])])


class GroupSync:
    """Bodies gathered in one event-loop iteration go to a thread as one write + one fdatasync;
    their requests are answered after it, as edge.store.writer and edge.store.walsync do for readings."""

    def __init__(self, path: str, loop: asyncio.AbstractEventLoop) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        self.loop = loop
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self.gathered: list[tuple[bytes, asyncio.Future]] = []
        self.thread = threading.Thread(target=self._run, name="bench-groupsync", daemon=True)
        self.thread.start()

    async def append(self, body: bytes) -> None:
        future = self.loop.create_future()
        self.gathered.append((body, future))
        if len(self.gathered) == 1:
            self.loop.call_soon(self._hand_over)
        await future

    def _hand_over(self) -> None:
        gathered, self.gathered = self.gathered, []
        self.queue.put(gathered)

    def _run(self) -> None:
        while True:
            groups = [self.queue.get()]
            while True:
                try:
                    groups.append(self.queue.get_nowait())
                except queue.Empty:
                    break
            if None in groups:
                return
            os.write(self.fd, b"".join(body for group in groups for body, _ in group))
            os.fdatasync(self.fd)
            self.loop.call_soon_threadsafe(_answer, [future for group in groups for _, future in group])

    def close(self) -> None:
        self.queue.put(None)
        self.thread.join(timeout=10)
        os.close(self.fd)


def _answer(futures: list[asyncio.Future]) -> None:
    for future in futures:
        if not future.done():
            future.set_result(None)


@contextlib.asynccontextmanager
async def _durable_lifespan(application: Starlette) -> AsyncIterator[None]:
    application.state.sync = GroupSync(os.environ[DURABLE_LOG], asyncio.get_running_loop())
    try:
        yield
    finally:
        application.state.sync.close()


async def send_durable(request: Request) -> Response:
    body = await request.body()
    json.loads(body)
    await request.app.state.sync.append(body)
    return Response(ANSWER, media_type="application/json")


durable = Starlette(routes=[Route("/send", send_durable, methods=["POST"])], lifespan=_durable_lifespan)
