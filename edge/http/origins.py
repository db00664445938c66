"""Cross-site writes: a web page on another site must not be able to post readings or acknowledge
alarms through an operator's browser.

Why both checks: a browser sends a "simple" cross-site POST (no Content-Type, text/plain or a
form type) without asking first, and adds `Origin` to it. Requiring a JSON, NDJSON or CSV type
makes the browser ask first (CORS preflight), which this server never grants; refusing a foreign
`Origin` also stops what a preflight does not cover. Sensors and curl send no `Origin`, so they
are unaffected; the appliance's own pages send their own origin.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from edge.errors import Forbidden
from edge.http import hosts

DEFAULT_PORTS = {"http": 80, "https": 443}


def parse_origins(text: str | None) -> frozenset[str]:
    """`--allowed-origins`: comma-separated `scheme://host[:port]`, normalised as `origin_key`."""
    out = set()
    for item in (text or "").split(","):
        item = item.strip()
        if not item:
            continue
        key = origin_key(item)
        if key is None:
            raise ValueError(f"{item!r} is not an origin like https://scada.plant.local:8443")
        out.add(key)
    return frozenset(out)


def origin_key(origin: str) -> str | None:
    """`scheme://host:port`, lower-case, with the scheme's default port made explicit; None if
    it is not an http(s) origin ("null" from a sandboxed frame or a file:// page included)."""
    try:
        parts = urlsplit(origin.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname or parts.path not in ("", "/") \
            or parts.query or parts.username is not None:
        return None
    name = parts.hostname.lower().removesuffix(".")
    return f"{parts.scheme}://{name}:{port or DEFAULT_PORTS[parts.scheme]}"


def _same_host(origin_key_text: str, host: str) -> bool:
    """The origin names the host (and port) the request came to. Schemes are not compared: behind a
    TLS proxy the page is https and the request to us plain http. (A rebound name passes here; that
    attack is what --allowed-hosts is for.)"""
    parsed = hosts.split_host(host)
    if parsed is None:
        return False
    name, port = parsed
    _, _, origin_host = origin_key_text.partition("://")
    origin_name, _, origin_port = origin_host.rpartition(":")
    # A Host without a port is a default port: 80, or 443 when a TLS proxy forwards to us
    return origin_name == name and int(origin_port) in ((port,) if port else (80, 443))


def allowed_origin(origin: str, host: str | None, allowed: frozenset[str] = frozenset()) -> bool:
    """`origin` is this server itself (the `Host` the request came to) or listed in `allowed`."""
    key = origin_key(origin)
    return key is not None and (key in allowed or _same_host(key, host or ""))


def check(origin: str | None, host: str | None, allowed: frozenset[str] = frozenset()) -> None:
    """Raise Forbidden unless `origin` is absent, this server itself or listed in `allowed`."""
    if origin is None or allowed_origin(origin, host, allowed):
        return
    raise Forbidden(f"writes from another site are refused (Origin {origin[:100]!r}); "
                    "a page on another host needs --allowed-origins", reason="cross_origin",
                    field="Origin")
