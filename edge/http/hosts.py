"""An optional allow-list for the Host header: the defence against DNS rebinding.

Without a read token, a web page that someone on the plant network opens could point a domain
name of its own at the appliance's address and read the appliance as if it were the page's own
origin (the browser's same-origin rule compares names, not addresses). A request made that way
still carries the page's name in `Host`. With `--allowed-hosts`, such a request is answered
400 (`bad_host`) before any route or token check runs. Off by default: FD-REST answered any
name, and a sensor addressing the appliance by a name nobody listed would stop working.

Loopback names always pass: the container health check and tools on the appliance use them.
"""

from __future__ import annotations

import re

from starlette.types import ASGIApp, Receive, Scope, Send

from edge.errors import BadRequest

LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1"})


class BadHost(BadRequest):
    code = "bad_host"


def parse(text: str) -> tuple[frozenset[str], tuple[str, ...]]:
    """`a.example, 10.0.0.5, *.plant.local` -> exact names and `.suffix`es, lower-cased."""
    names = [n.strip().lower().removesuffix(".") for n in text.split(",") if n.strip()]
    exact = frozenset(n for n in names if not n.startswith("*."))
    suffixes = tuple(n[1:] for n in names if n.startswith("*."))
    return exact, suffixes


# RFC 9110 `Host = uri-host [ ":" port ]`: a bracketed IPv6 literal, or a name / IPv4 address.
# Anything else (`[::1]evil.example`, `localhost:5000@evil.example`) is no host at all.
_HOST = re.compile(r"(?:\[(?P<v6>[0-9a-f:.]+)\]|(?P<name>(?:[a-z0-9_-]+\.)*[a-z0-9_-]+\.?))"
                   r"(?::(?P<port>[0-9]{1,5}))?", re.ASCII)


def split_host(text: str) -> tuple[str, int | None] | None:
    """`Name.Example.:5000` -> ("name.example", 5000): lower-case, the root's trailing dot dropped
    (a fully qualified name is the same host); None if it is not a valid Host value."""
    match = _HOST.fullmatch(text.strip().lower())
    if match is None:
        return None
    name = match["v6"] or match["name"].removesuffix(".")
    port = int(match["port"]) if match["port"] else None
    return name, port


def host_name(scope: Scope) -> str | None:
    """The name in the Host header without its port (`[::1]:5000` -> `::1`); None if absent or
    malformed."""
    for name, value in scope.get("headers", ()):
        if name == b"host":
            parsed = split_host(value.decode("latin-1"))
            return parsed[0] if parsed else None
    return None


class HostCheck:
    """ASGI middleware; `edge.http.app.App` also asks `allowed()` on its POST /send shortcut."""

    def __init__(self, app: ASGIApp, allowed_hosts: str) -> None:
        self.app = app
        self.exact, self.suffixes = parse(allowed_hosts)
        self.exact |= LOOPBACK

    def allowed(self, scope: Scope) -> bool:
        host = host_name(scope)
        if host is None:
            return False
        return host in self.exact or any(host.endswith(s) for s in self.suffixes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not self.allowed(scope):
            from edge.http.responses import error_response

            host = host_name(scope)
            message = ("the request has no Host header" if host is None else
                       f"Host {host[:100]!r} is not a name this appliance answers to (--allowed-hosts)")
            await error_response(BadHost(message, field="Host"))(scope, receive, send)
            return
        await self.app(scope, receive, send)
