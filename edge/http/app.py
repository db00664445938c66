"""The app factory: routes, one error mapping, and a lifespan that loads the model and opens
the database once per process."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

from edge.appliance import Appliance
from edge.errors import FDEdgeError, Unauthorized
from edge.http import (
    alarm_routes,
    event_routes,
    explain_routes,
    fleet_routes,
    ingest_routes,
    label_routes,
    login_routes,
    model_routes,
    openapi,
    ops_routes,
    read_routes,
)
from edge.http.auth import TokenAuth, drop_query_token
from edge.http.hosts import BadHost, HostCheck
from edge.http.responses import EXCEPTION_HANDLERS, error_response, internal_error
from edge.http.send_deadline import SendDeadline
from edge.settings import Settings
from edge.store import backfill, retention
from edge.store.tokens import Tokens

log = logging.getLogger(__name__)
SOCKETIO_PATH = "/socket.io"  # Flask-SocketIO's, which FD-REST's pages connect to


class App(Starlette):
    """Starlette, except that POST /send goes straight to the ingest app, and /socket.io/ (with
    --socketio) straight to edge.plant.socketio_bridge.

    Ingest is the one path sensors hit thousands of times a second; Starlette's error and
    routing layers (two middlewares, a route scan, an exception wrapper) are a measurable share of
    its time in the app.
    The shortcut keeps what those layers do for this path: the host and token checks (a request
    either refuses takes the normal way, which answers 400 or 401) and one JSON error mapping.

    Socket.IO is no route: its polling POSTs are reads (they carry only pings and the namespace
    connect), which the token middleware would take for writes, and its WebSocket never reaches
    Starlette's HTTP layers. The host check and the read token (`may_read`: header, cookie or
    `?token=`, when a session opens) are applied here instead; origins by python-socketio
    (edge.appliance's `socketio_bridge`)."""

    auth: TokenAuth | None = None
    hosts: HostCheck | None = None
    socketio = False  # --socketio: /socket.io/ is served

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] != "http" or scope["path"] != "/send" or scope["method"] != "POST"
                or (self.hosts is not None and not self.hosts.allowed(scope))
                or (self.auth is not None and not self.auth.allowed(scope))):
            if self.socketio and scope["type"] != "lifespan" and (
                    scope["path"] == SOCKETIO_PATH or scope["path"].startswith(SOCKETIO_PATH + "/")):
                await self.socket_io(scope, receive, send)
                return
            await super().__call__(scope, receive, send)
            return
        scope["app"] = self
        try:
            await ingest_routes.send_endpoint(scope, receive, send)
        except FDEdgeError as exc:
            await error_response(exc)(scope, receive, send)
        except Exception:  # as ServerErrorMiddleware: logged, a JSON 500, no traceback out
            await internal_error("POST", "/send")(scope, receive, send)

    async def socket_io(self, scope: Scope, receive: Receive, send: Send) -> None:
        from edge.plant.socketio_bridge import refuse

        if self.hosts is not None and not self.hosts.allowed(scope):
            await refuse(scope, receive, send, BadHost("the Host header is not a name this appliance answers to "
                                                       "(--allowed-hosts)", field="Host"))
            return
        bridge = self.state.appliance.socketio
        assert bridge is not None
        refused = self.auth is not None and not self.auth.may_read(scope) and not bridge.in_session(scope)
        drop_query_token(scope)
        if refused:
            await refuse(scope, receive, send, Unauthorized(
                "a valid read token is required for Socket.IO (Authorization: Bearer <token>, the "
                "fdedge_token cookie or ?token=)"), headers={"WWW-Authenticate": 'Bearer realm="fdedge"'})
            return
        await bridge(scope, receive, send)


async def _flush_token_use(built: Appliance, named: Tokens) -> None:
    """Named tokens' last use, written once a minute through the writer (never per request)."""
    while True:
        await asyncio.sleep(60)
        if named.used:
            await built.writer.call(named.flush_last_used)


def create_app(settings: Settings, appliance: Appliance | None = None) -> Starlette:
    """`appliance` may be pre-built (fdedge serve does, to fail fast with a clear message)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        built = appliance or Appliance.build(settings)
        built.start(asyncio.get_running_loop())
        try:
            await built.open_ports()
        except BaseException:
            built.stop()
            raise
        built.tasks.append(asyncio.create_task(retention.run(built.writer, settings, built.metrics)))
        built.tasks.append(asyncio.create_task(backfill.run(built.writer)))
        built.tasks.append(asyncio.create_task(_flush_token_use(built, named)))
        # What start-up made (modules, the model, the app) lives as long as the process: frozen,
        # the full collections that the SSE ring's long-lived events trigger skip those ~40k
        # objects, which otherwise stall the event loop with 100 clients at full ingest.
        gc.collect()
        gc.freeze()
        app.state.appliance = built
        if settings.token is None:
            log.warning("FDEDGE_TOKEN is not set: anyone who can reach port %d can post readings", settings.port)
        try:
            yield
        finally:
            await built.close_ports()
            built.stop()
            named.close()

    spec = None

    async def openapi_json(request: Request) -> Response:
        nonlocal spec
        if spec is None:
            spec = openapi.build(request.app.state.appliance.model.version or "1")
        return JSONResponse(spec)

    routes = [
        Route("/send", ingest_routes.send_endpoint, methods=["POST"]),
        Route("/history", read_routes.history),
        Route("/generate_csv", read_routes.generate_csv),
        Route("/events", event_routes.events),
        Route("/api/latest", read_routes.latest),
        Route("/api/machines", read_routes.machines),
        Route("/api/fleet", fleet_routes.fleet_endpoint),
        Route("/api/explain", explain_routes.explain_endpoint),
        Route("/api/model/changes", read_routes.model_changes_endpoint),
        Route("/api/series", read_routes.series),
        Route("/api/count", read_routes.count),
        Route("/login", login_routes.login, methods=["POST"]),
        Route("/login", ops_routes.page("login.html")),
        Route("/logout", login_routes.logout, methods=["POST"]),
        Route("/api/alarms", alarm_routes.alarms),
        Route("/api/alarms.csv", alarm_routes.alarms_csv),
        Route("/api/alarms/{alarm_id:int}", alarm_routes.alarm),
        Route("/api/alarms/{alarm_id:int}/ack", alarm_routes.ack, methods=["POST"]),
        Route("/api/labels", label_routes.listing, methods=["GET"]),
        Route("/api/labels", label_routes.create, methods=["POST"]),
        Route("/api/labels/{label_id:int}", label_routes.remove, methods=["DELETE"]),
        Route("/api/model", ops_routes.model),
        Route("/api/models", model_routes.models, methods=["GET"]),
        Route("/api/models", model_routes.upload, methods=["POST"]),
        Route("/api/models/rollback", model_routes.rollback, methods=["POST"]),
        Route("/api/models/{version}/activate", model_routes.activate, methods=["POST"]),
        Route("/api/models/shadow/off", model_routes.shadow_off, methods=["POST"]),
        Route("/api/models/{version}/shadow", model_routes.shadow, methods=["POST"]),
        Route("/api/models/{version}/shadow", model_routes.shadow_off, methods=["DELETE"]),
        Route("/api/models/{version}/compare", model_routes.compare, methods=["GET"]),
        Route("/api/storage", ops_routes.storage),
        Route("/api/uplink", ops_routes.uplink),
        Route("/healthz", ops_routes.healthz),
        Route("/readyz", ops_routes.readyz),
        Route("/metrics", ops_routes.metrics),
        Route("/openapi.json", openapi_json),
        Route("/", ops_routes.page("index.html")),
        Route("/report", ops_routes.page("report.html")),
        Route("/dashboard", ops_routes.page("dashboard.html")),
        Route("/machines", ops_routes.page("machines.html")),
        Route("/alarms", ops_routes.page("alarms.html")),
        Route("/models", ops_routes.page("models.html")),
        Mount("/static", app=StaticFiles(directory=settings.web_dir / "static", check_dir=False), name="static"),
    ]
    # Named tokens can be added while the appliance runs, so the token check is always in place.
    named = Tokens(settings.db_path)
    auth: dict[str, Any] = {"token": settings.token, "read_token": settings.read_token, "named": named,
                            "allowed_origins": settings.allowed_origins or frozenset(),
                            "admin_token": settings.admin_token}
    # Without a host list that middleware would only cost time on every request.
    middleware = [Middleware(SendDeadline, seconds=settings.send_timeout)]
    if settings.allowed_hosts:
        middleware.append(Middleware(HostCheck, allowed_hosts=settings.allowed_hosts))
    middleware.append(Middleware(TokenAuth, **auth))
    app = App(
        debug=False,
        routes=routes,
        middleware=middleware,
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )
    app.auth = TokenAuth(app.router, **auth)
    if settings.allowed_hosts:
        app.hosts = HostCheck(app.router, settings.allowed_hosts)
    app.socketio = settings.socketio
    return app
