"""Bearer-token access, decided in one place by path and method (edge.http.roles' table).

Pages and static files hold no data and are always served, so a browser can ask for the token.
"""

from __future__ import annotations

import hmac
from http.cookies import SimpleCookie
from urllib.parse import parse_qs

from starlette.types import ASGIApp, Receive, Scope, Send

from edge.errors import FDEdgeError, Forbidden, Unauthorized
from edge.http import origins, roles
from edge.store.tokens import Tokens

COOKIE = "fdedge_token"
OPEN_PATHS = roles.OPEN_PATHS
SAFE_METHODS = roles.SAFE_METHODS


def required(method: str, path: str) -> str | None:
    """The permission a request needs (edge.http.roles' table), or None (open)."""
    return roles.needed(method, path)


def presented(scope: Scope, cookie_ok: bool = True) -> str | None:
    """The Authorization header wins over the cookie, wherever each sits in the request. Writes
    take the header only (a cookie rides along on requests other sites make: CSRF), except the
    operator actions of roles.COOKIE_WRITES with this server's own Origin (TokenAuth.decide)."""
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
    """ASGI middleware so no route can forget to check; failures go to the JSON error handler.

    Who a token is: the shared --token (a sensor that may also read and acknowledge, as before
    roles), the shared --read-token (a viewer), or a named token from edge.store.tokens. A
    permission is guarded once any named token exists; before that as it always was: reads by the
    read token, everything else by the ingest token, nothing when neither is set."""

    def __init__(self, app: ASGIApp, token: str | None, read_token: str | None,
                 named: Tokens | None = None, allowed_origins: frozenset[str] = frozenset(),
                 admin_token: str | None = None) -> None:
        self.app = app
        self.token = token
        self.read_token = read_token
        self.admin_token = admin_token
        self.shared = [(t, role) for t, role in ((token, roles.SHARED_SENSOR), (read_token, roles.SHARED_VIEWER),
                                                 (admin_token, roles.SHARED_ADMIN))
                       if t is not None]
        self.named = named
        self.allowed_origins = allowed_origins

    def guarded(self, perm: str) -> bool:
        if self.named is not None and self.named.any():
            return True
        return (self.read_token if perm == "read" else self.token) is not None

    def who(self, given: str | None, scope: Scope) -> str | None:
        """The role of a presented token, None if it is no token of ours."""
        if given is None:
            return None
        for secret, role in self.shared:
            if matches(given, secret):
                return role
        token = self.named.lookup(given) if self.named is not None else None
        if token is None:
            return None
        scope["fdedge_token"] = token
        return token.role

    def models_on(self) -> bool:
        """Model management over HTTP needs an admin token to exist: --admin-token or a named one."""
        return self.admin_token is not None or (self.named is not None and self.named.has_role("admin"))

    def decide(self, scope: Scope) -> FDEdgeError | None:
        perm = roles.needed(scope["method"], scope["path"])
        if roles.is_models(scope["path"]):
            if not self.models_on():  # always guarded: never open, whatever other tokens are set
                return Forbidden("model management over HTTP is off: no admin token is configured (--admin-token, "
                                 "FDEDGE_ADMIN_TOKEN, --admin-token-file or `fdedge token add --role admin`); "
                                 "use `fdedge model` on the appliance", reason="models_http_off")
        elif perm is None or not self.guarded(perm):
            return None
        given = presented(scope, cookie_ok=perm == "read" or (perm in roles.COOKIE_WRITES and self._same_site(scope)))
        role = self.who(given, scope)
        if role is None:
            return Unauthorized("a valid bearer token is required for this path (Authorization: Bearer <token>)")
        if perm not in roles.ROLES[role]:
            return Forbidden(f"a {role} token may not {perm} ({scope['method']} {scope['path'][:80]})",
                             reason="role", role=role, needs=perm)
        return None

    def same_site(self, scope: Scope) -> bool:
        return self._same_site(scope)

    def _same_site(self, scope: Scope) -> bool:
        """A cookie write needs an Origin of this server (or --allowed-origins): browsers send one
        with every POST, and it must not come from another site."""
        origin = host = None
        for name, value in scope.get("headers", ()):
            if name == b"origin":
                origin = value.decode("latin-1")
            elif name == b"host":
                host = value.decode("latin-1")
        return origin is not None and origins.allowed_origin(origin, host, self.allowed_origins)

    def allowed(self, scope: Scope) -> bool:
        return self.decide(scope) is None

    def may_read(self, scope: Scope) -> bool:
        """A read outside the routes (Socket.IO, edge.plant.socketio_bridge), whatever its method:
        the header, the cookie, or a `token=` query parameter, which is all a browser's WebSocket
        or a Socket.IO script's URL can carry."""
        if not self.guarded("read"):
            return True
        role = self.who(presented(scope) or query_token(scope), scope)
        return role is not None and "read" in roles.ROLES[role]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        error = self.decide(scope) if scope["type"] == "http" else None
        if error is not None:
            from edge.http.responses import error_response
            response = error_response(error)
            if isinstance(error, Unauthorized):
                response.headers["WWW-Authenticate"] = 'Bearer realm="fdedge"'
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)
