"""Bearer-token access, decided in one place by path and method.

Ingest needs the ingest token; data reads need the read token (or the ingest token). Pages and
static files hold no data and are always served, so a browser can ask for the token.
"""

from __future__ import annotations

import hmac
from http.cookies import SimpleCookie
from urllib.parse import parse_qs

from starlette.types import ASGIApp, Receive, Scope, Send

from edge.errors import Unauthorized

COOKIE = "fdedge_token"
OPEN_PATHS = frozenset({"/", "/report", "/dashboard", "/healthz", "/readyz", "/openapi.json", "/api/model",
                        "/favicon.ico"})


SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def required(method: str, path: str) -> str | None:
    """'ingest', 'read' or None (open). Every method that can change something is a write, so a
    future PUT or DELETE route needs the ingest token without anyone remembering to add it here."""
    if method not in SAFE_METHODS:
        return "ingest"
    if path in OPEN_PATHS or path.startswith("/static/"):
        return None
    return "read"


def presented(scope: Scope, cookie_ok: bool = True) -> str | None:
    """The Authorization header wins over the cookie, wherever each sits in the request. Writes
    take the header only: a cookie rides along on requests other sites make (CSRF)."""
    cookie: str | None = None
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token:
                return token.strip()
        elif name == b"cookie" and cookie is None and cookie_ok:
            jar: SimpleCookie = SimpleCookie()
            try:
                jar.load(value.decode("latin-1"))
            except Exception:  # a malformed cookie is simply no token
                continue
            if COOKIE in jar:
                cookie = jar[COOKIE].value
    return cookie


def query_token(scope: Scope) -> str | None:
    """`?token=` (the last one given)."""
    values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token")
    return values[-1] if values else None


def drop_query_token(scope: Scope) -> None:
    """Take `token=` out of the query once it has been checked: uvicorn's access log writes the
    scope's query, and a token must never reach the log."""
    query = scope.get("query_string", b"")
    if b"token=" in query:
        scope["query_string"] = b"&".join(p for p in query.split(b"&") if not p.startswith(b"token="))


def matches(given: str | None, expected: str) -> bool:
    # compare_digest on bytes of equal-time compare; never short-circuits on the first mismatch
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


class TokenAuth:
    """ASGI middleware so no route can forget to check; failures go to the JSON error handler."""

    def __init__(self, app: ASGIApp, token: str | None, read_token: str | None) -> None:
        self.app = app
        self.token = token
        self.read_token = read_token

    def allowed(self, scope: Scope) -> bool:
        need = required(scope["method"], scope["path"])
        if need is None:
            return True
        given = presented(scope, cookie_ok=need == "read")
        if need == "ingest":
            return self.token is None or matches(given, self.token)
        if self.read_token is None:
            return True
        return matches(given, self.read_token) or (self.token is not None and matches(given, self.token))

    def may_read(self, scope: Scope) -> bool:
        """A read outside the routes (Socket.IO, edge.plant.socketio_bridge), whatever its method:
        the header, the cookie, or a `token=` query parameter, which is all a browser's WebSocket
        or a Socket.IO script's URL can carry."""
        if self.read_token is None:
            return True
        given = presented(scope) or query_token(scope)
        return matches(given, self.read_token) or (self.token is not None and matches(given, self.token))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not self.allowed(scope):
            from edge.http.responses import error_response
            response = error_response(Unauthorized("a valid bearer token is required for this path "
                                                   "(Authorization: Bearer <token>)"))
            response.headers["WWW-Authenticate"] = 'Bearer realm="fdedge"'
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)
