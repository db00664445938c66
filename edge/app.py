"""The app factory: routes, one error mapping, and a lifespan that loads the model and opens
the database once per process."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import AsyncIterator

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from edge import alarm_routes, events, ingest, openapi, ops, reads, retention
from edge.appliance import Appliance
from edge.auth import TokenAuth
from edge.responses import EXCEPTION_HANDLERS
from edge.settings import Settings

log = logging.getLogger("fdedge")


def create_app(settings: Settings, appliance: Appliance | None = None) -> Starlette:
    """`appliance` may be pre-built (fdedge serve does, to fail fast with a clear message)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        built = appliance or Appliance.build(settings)
        built.start(asyncio.get_running_loop())
        built.tasks.append(asyncio.create_task(retention.run(built)))
        app.state.appliance = built
        if settings.token is None:
            log.warning("FDEDGE_TOKEN is not set: anyone who can reach port %d can post readings", settings.port)
        try:
            yield
        finally:
            built.stop()

    spec = None

    async def openapi_json(request: Request) -> Response:
        nonlocal spec
        if spec is None:
            spec = openapi.build(request.app.state.appliance.model.version or "1")
        return JSONResponse(spec)

    routes = [
        Route("/send", ingest.send, methods=["POST"]),
        Route("/history", reads.history),
        Route("/generate_csv", reads.generate_csv),
        Route("/events", events.events),
        Route("/api/latest", reads.latest),
        Route("/api/machines", reads.machines),
        Route("/api/series", reads.series),
        Route("/api/count", reads.count),
        Route("/api/alarms", alarm_routes.alarms),
        Route("/api/alarms/{alarm_id:int}", alarm_routes.alarm),
        Route("/api/alarms/{alarm_id:int}/ack", alarm_routes.ack, methods=["POST"]),
        Route("/api/model", ops.model),
        Route("/healthz", ops.healthz),
        Route("/readyz", ops.readyz),
        Route("/metrics", ops.metrics),
        Route("/openapi.json", openapi_json),
        Route("/", ops.page("index.html")),
        Route("/report", ops.page("report.html")),
        Route("/dashboard", ops.page("dashboard.html")),
        Mount("/static", app=StaticFiles(directory=settings.web_dir / "static", check_dir=False), name="static"),
    ]
    return Starlette(
        debug=False,
        routes=routes,
        # Without tokens the middleware would only cost time on every request.
        middleware=([Middleware(TokenAuth, token=settings.token, read_token=settings.read_token)]
                    if settings.token or settings.read_token else []),
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )
