"""Where an MQTT broker is and how to reach it: `mqtt://user:pass@host:1883` or `mqtts://...`.

Parsed once as a setting, so a bad URL stops start-up with the setting's name; the password never
reaches a log line (`str()` hides it)."""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}


@dataclass(frozen=True)
class BrokerURL:
    scheme: str
    host: str
    port: int
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    @property
    def tls(self) -> bool:
        return self.scheme == "mqtts"

    def __str__(self) -> str:
        user = f"{self.username}:***@" if self.password is not None else (f"{self.username}@" if self.username else "")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{user}{host}:{self.port}"


def parse_url(text: str) -> BrokerURL:
    """`mqtt[s]://[user[:password]@]host[:port]`; percent-escapes in the user and password are decoded."""
    try:
        parts = urlsplit(text.strip())
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"not a broker URL ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise ValueError(f"the scheme must be mqtt:// or mqtts://, not {parts.scheme or 'none'}")
    if not parts.hostname:
        raise ValueError("the URL names no host")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError("a broker URL has no path, query or fragment (topics are their own settings)")
    return BrokerURL(scheme, parts.hostname, port or DEFAULT_PORTS[scheme],
                     unquote(parts.username) if parts.username is not None else None,
                     unquote(parts.password) if parts.password is not None else None)


def tls_context(url: BrokerURL, ca: Path | None, cert: Path | None, key: Path | None) -> ssl.SSLContext | None:
    """The TLS context for an `mqtts://` broker: the system's CAs unless `ca` names the plant's,
    and a client certificate when the broker wants one. None for plain `mqtt://`."""
    if not url.tls:
        if ca or cert or key:
            raise ValueError(f"CA or client certificate given for {url}, which is not mqtts://")
        return None
    context = ssl.create_default_context(cafile=str(ca) if ca else None)
    if cert:
        context.load_cert_chain(str(cert), str(key) if key else None)
    elif key:
        raise ValueError("a client key without its certificate")
    return context


def failure(exc: OSError | None) -> str:
    """Why a connection attempt failed, in a few words for /readyz and the log (no secrets: an
    OSError names the address at most)."""
    if exc is None:
        return "cannot connect"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS: the broker's certificate was not accepted ({exc.verify_message}); check --mqtt-ca / --uplink-ca"
    if isinstance(exc, ssl.SSLError):
        return f"TLS: {exc.reason or exc}"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError):
        return "timed out"
    return exc.strerror or type(exc).__name__


def topic_filter(text: str) -> str:
    """A subscription filter (`plant/+/+/reading`, `fdedge/#`): `+` and `#` stand alone in their
    level, `#` only last. Checked as a setting, so a typo stops start-up instead of subscribing to nothing."""
    levels = _levels(text, "topic filter")
    for index, level in enumerate(levels):
        if ("+" in level or "#" in level) and level not in ("+", "#"):
            raise ValueError(f"level {index} ({level!r}): + and # must be a whole level, as in plant/+/reading")
        if level == "#" and index != len(levels) - 1:
            raise ValueError("# must be the last level (plant/#)")
    return text


def topic_name(text: str) -> str:
    """A topic to publish to: no wildcards."""
    if "+" in _levels(text, "topic") or any("+" in level or "#" in level for level in text.split("/")):
        raise ValueError("a topic to publish to has no + or # wildcards")
    return text


def _levels(text: str, what: str) -> list[str]:
    if not text or "\0" in text or len(text.encode()) > 65535:
        raise ValueError(f"a {what} is 1-65535 bytes of UTF-8 without NUL")
    return text.split("/")
