"""What the server's log says about clients: one line for a client that went away or stopped
reading, each error's traceback once, and no flood from a repeated error.

Why filters and not try/except in the routes: the tracebacks come from uvicorn ("Exception in
ASGI application") after a response has started, where no route can answer any more; uvicorn
closes the connection either way. A full log on an SD card is its own outage: 1,500 SSE clients
that stopped reading once wrote 21 MB of tracebacks, and one bad query parameter 4.7 MB/s.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import anyio
from sse_starlette.sse import SendTimeoutError
from starlette.requests import ClientDisconnect

DISCONNECTS: tuple[type[BaseException], ...] = (
    SendTimeoutError,  # an SSE client stopped reading for --send-timeout
    ClientDisconnect,
    ConnectionError,  # reset, broken pipe, aborted
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    TimeoutError,  # a streamed response whose client stopped reading for --send-timeout
)
LOGGED = "_fdedge_logged"  # set on an exception whose traceback the app has logged already
WINDOW_S, BURST = 60.0, 5  # per distinct message: at most BURST records per WINDOW_S


def is_disconnect(exc: BaseException | None) -> bool:
    """True for a client going away, also when anyio wrapped it in exception groups."""
    if isinstance(exc, BaseExceptionGroup):
        return all(is_disconnect(e) for e in exc.exceptions)
    return isinstance(exc, DISCONNECTS)


def mark_logged(exc: BaseException | None) -> None:
    if exc is not None:
        setattr(exc, LOGGED, True)


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for e in exc.exceptions for leaf in _leaves(e)]
    return [exc]


def describe(exc: BaseException) -> str:
    """The exception type names, without the groups anyio wraps them in."""
    return ", ".join(sorted({type(leaf).__name__ for leaf in _leaves(exc)}))


class ClientErrors(logging.Filter):
    """On uvicorn's error logger: a disconnect becomes one INFO line without a traceback; an
    exception the app has logged already (edge.http.responses) is not logged a second time."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is None:
            return True
        if any(getattr(leaf, LOGGED, False) for leaf in _leaves(exc)):
            return False
        if is_disconnect(exc):
            record.msg, record.args = "a client went away or stopped reading (%s); connection closed", (
                describe(exc),)
            record.exc_info = record.exc_text = None
            record.levelno, record.levelname = logging.INFO, "INFO"
            return record.levelno >= logging.getLogger(record.name).getEffectiveLevel()
        return True


class RateLimit(logging.Filter):
    """On a handler: the same warning or error (logger, message template, exception type) at most
    BURST times per WINDOW_S. The first one let through after a quiet spell says how many
    were dropped, so the log still shows that it happened and how often."""

    def __init__(self, window_s: float = WINDOW_S, burst: int = BURST,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.window_s, self.burst, self.clock = window_s, burst, clock
        self._seen: dict[tuple, list] = {}  # key -> [window start, count in window, dropped]
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        exc = record.exc_info[1] if record.exc_info else None
        key = (record.name, record.levelno, str(record.msg), type(exc).__name__ if exc else None)
        now = self.clock()
        with self._lock:
            state = self._seen.get(key)
            if state is None or now - state[0] >= self.window_s:
                dropped = state[2] if state else 0
                self._seen[key] = [now, 1, 0]
                if len(self._seen) > 1000:  # forget old keys: the table itself stays bounded
                    self._seen = {k: v for k, v in self._seen.items() if now - v[0] < self.window_s}
                if dropped:
                    record.msg = f"{record.msg} [{dropped} more like this were not logged in the last " \
                                 f"{self.window_s:.0f} s]"
                return True
            state[1] += 1
            if state[1] <= self.burst:
                return True
            state[2] += 1
            return False


def install(*, rate_limit: RateLimit | None = None) -> None:
    """Call once logging is configured (uvicorn.Config configures its own loggers)."""
    uvicorn_error = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, ClientErrors) for f in uvicorn_error.filters):
        uvicorn_error.addFilter(ClientErrors())
    limit = rate_limit or RateLimit()
    for name in ("", "uvicorn"):
        for handler in logging.getLogger(name).handlers:
            if not any(isinstance(f, RateLimit) for f in handler.filters):
                handler.addFilter(limit)
