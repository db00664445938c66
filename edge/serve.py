"""`fdedge serve`: build the appliance (fail fast, clearly), then hand it to uvicorn."""

from __future__ import annotations

import importlib.util
import logging
import sys
from types import FrameType

import uvicorn

from edge import memory
from edge.appliance import Appliance
from edge.errors import StartupError
from edge.http import quiet_logs
from edge.http.app import create_app
from edge.http.connections import protocol
from edge.settings import Settings

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    memory.limit_arenas()
    settings = Settings.from_args(argv)
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        appliance = Appliance.build(settings)
    except StartupError as exc:
        print(f"fdedge serve: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # an unforeseen startup failure is still one clear line, exit 2
        log.debug("startup failed", exc_info=True)
        print(f"fdedge serve: cannot start: {type(exc).__name__}: {exc} (--log-level debug shows where)",
              file=sys.stderr)
        return 2
    app = create_app(settings, appliance)
    loop = "uvloop" if importlib.util.find_spec("uvloop") is not None else "asyncio"
    # http: uvicorn's httptools protocol, with a bound on the request head (431 past 64 KiB), a
    # deadline to a complete head and a cap on connections (edge.http.connections)
    http = protocol(settings.head_timeout, settings.max_connections)
    config = uvicorn.Config(app, host=settings.host, port=settings.port, loop=loop, http=http,
                            log_level=settings.log_level, access_log=settings.access_log, server_header=False,
                            timeout_keep_alive=30, timeout_graceful_shutdown=5,
                            # WebSockets are only Socket.IO's (--socketio): its clients send pings, and
                            # compressing each small event for each client would cost a Pi more than it saves
                            ws_max_size=64 * 1024, ws_per_message_deflate=False)
    quiet_logs.install()  # after uvicorn.Config, which configures uvicorn's loggers
    try:
        Server(config, appliance).run()
    except KeyboardInterrupt:  # uvicorn re-raises Ctrl-C once it has shut down: the exit code says it
        return 130
    return 0


class Server(uvicorn.Server):
    """uvicorn's server, except that Ctrl-C or SIGTERM first ends every SSE stream (and Socket.IO
    client) cleanly.

    Otherwise sse-starlette cancels each open stream mid-response and uvicorn logs an ERROR
    ("ASGI callable returned without completing response") for every dashboard connected."""

    def __init__(self, config: uvicorn.Config, appliance: Appliance) -> None:
        super().__init__(config)
        self.appliance = appliance

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        loop = self.appliance.loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self.appliance.closing)  # signal-safe: the loop's self-pipe
        super().handle_exit(sig, frame)
