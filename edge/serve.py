"""`fdedge serve`: build the appliance (fail fast, clearly), then hand it to uvicorn."""

from __future__ import annotations

import importlib.util
import logging
import sys

import uvicorn

from edge import memory
from edge.appliance import Appliance
from edge.errors import StartupError
from edge.http.app import create_app
from edge.http.head_limit import BoundedHttpToolsProtocol
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
    # http: uvicorn's httptools protocol, with a bound on the request head (431 past 64 KiB)
    uvicorn.run(app, host=settings.host, port=settings.port, loop=loop, http=BoundedHttpToolsProtocol,
                log_level=settings.log_level, access_log=settings.access_log, server_header=False,
                timeout_keep_alive=30, timeout_graceful_shutdown=5)
    return 0
