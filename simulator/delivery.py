"""The sending loop: outbox -> POST /send, in order, at least once, stored exactly once.

Why it is shaped like this:
- One keep-alive HTTP connection (stdlib http.client, no dependency), replaced on any error.
  A keep-alive connection the server has closed meanwhile fails on reuse; that one failure
  is retried at once on a fresh connection instead of being counted as an outage.
- Transient failures (no connection, timeout, 408, 429, 5xx) retry the *same* claim with the
  same Idempotency-Key, with exponential backoff and full jitter, so a server that committed a
  request whose answer was lost answers the stored result instead of storing it twice, and a
  fleet of sensors does not hammer an appliance that is coming back up in lock-step.
- Any other 4xx is a verdict on the readings, not on the moment: they go to the dead-letter
  table and the queue moves on. A 422 names its row, so only that reading is set aside;
  a 413 halves the batch before giving up on a single reading.
"""

from __future__ import annotations

import http.client
import json
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from simulator.outbox import Claim, Outbox

RETRY_STATUSES = frozenset({408, 429}) | frozenset(range(500, 600))
TRANSIENT_ERRORS = (OSError, http.client.HTTPException)  # refused, reset, timeout, bad status line
STALE_ERRORS = (ConnectionResetError, ConnectionAbortedError, BrokenPipeError)  # incl. RemoteDisconnected


@dataclass
class Stats:
    """Counters shown in the progress line; written by one thread each, read by the reporter."""

    generated: int = 0
    dropped: int = 0  # oldest readings dropped because the outbox hit --max-buffer
    sent: int = 0  # readings whose request went out, retries included
    acked: int = 0  # readings the server answered 200 for
    replayed: int = 0  # of those, answered from an earlier commit (X-FDEdge-Replayed)
    dead: int = 0  # readings refused for good in this run
    attempt: int = 0  # failed attempts of the current request; 0 = not retrying
    retry_at: float = 0.0  # time.monotonic() of the next attempt
    last_error: str = ""
    last_faults: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    headers: dict[str, str]

    def message(self) -> str:
        """The server's JSON `message` (FD-Edge and FD-REST errors), else the start of the body."""
        try:
            data = json.loads(self.body)
            if isinstance(data, dict) and data.get("message"):
                return str(data["message"])
        except ValueError:
            pass
        return self.body[:200].decode("utf-8", "replace").strip() or http.client.responses.get(self.status, "")

    def json(self) -> object:
        try:
            return json.loads(self.body)
        except ValueError:
            return None


class Connection:
    """A keep-alive connection to the appliance's POST /send."""

    def __init__(self, url: str, token: str | None = None, timeout: float | None = 10.0) -> None:
        parts = urlsplit(url if "://" in url else "http://" + url)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise ValueError(f"--url must look like http://host:port, got {url!r}")
        self.scheme, self.host, self.port = parts.scheme, parts.hostname, parts.port
        self.path = parts.path.rstrip("/") + "/send"  # behind a reverse proxy under a prefix
        self.timeout = timeout
        self.headers = {"Content-Type": "application/json", "User-Agent": "fdedge-simulate"}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        self._conn: http.client.HTTPConnection | None = None
        self._used = False  # the connection has answered before: it may have gone stale
        self.written = 0  # requests whose body went out (for the `sent` counter)

    def post(self, body: bytes, key: str) -> Answer:
        fresh_retry = self._conn is not None and self._used
        try:
            return self._post(body, key)
        except STALE_ERRORS:
            self.close()
            if not fresh_retry:
                raise
            return self._post(body, key)  # the server closed the idle connection: once more, new one
        except TRANSIENT_ERRORS:
            self.close()
            raise

    def _post(self, body: bytes, key: str) -> Answer:
        if self._conn is None:
            cls = http.client.HTTPSConnection if self.scheme == "https" else http.client.HTTPConnection
            self._conn = cls(self.host, self.port, timeout=self.timeout)
            self._used = False
        self._conn.request("POST", self.path, body=body, headers={**self.headers, "Idempotency-Key": key})
        self.written += 1
        resp = self._conn.getresponse()
        data = resp.read()
        self._used = True
        if resp.will_close:
            self.close()
        return Answer(resp.status, data, {k.lower(): v for k, v in resp.getheaders()})

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def request_body(bodies: list[str], batch: int) -> bytes:
    """`--batch 1`: FD-REST's body, one JSON object. Otherwise always a JSON array."""
    if batch == 1 and len(bodies) == 1:
        return bodies[0].encode()
    return ("[" + ",".join(bodies) + "]").encode()


def backoff(attempt: int, base: float, cap: float, rng: random.Random) -> float:
    """Full jitter: uniform in [0, min(cap, base * 2**attempt)], at least 50 ms."""
    return max(0.05, rng.uniform(0.0, min(cap, base * 2 ** min(attempt, 30))))


class Sender:
    """Drains an `Outbox` into one appliance; `run()` in a thread, `stop` to end it.

    `flushing` is set once generation has ended: batches no longer wait to fill, and the loop
    returns when the outbox is empty.
    """

    def __init__(self, outbox: Outbox, conn: Connection, stats: Stats, *, batch: int = 1, linger: float = 1.0,
                 base_delay: float = 0.25, max_delay: float = 30.0, log: Callable[..., None] | None = None,
                 seed: int | None = None) -> None:
        self.outbox, self.conn, self.stats = outbox, conn, stats
        self.batch, self.linger = batch, linger
        self.base_delay, self.max_delay = base_delay, max_delay
        self.log = log or (lambda message, error=False: None)  # log(message, error=False)
        self.rng = random.Random(seed)
        self.stop = threading.Event()  # finish the request in flight, then return
        self.flushing = threading.Event()
        self.wake = threading.Event()  # set by the generator after each put
        self._limit = batch  # lowered after a 413
        self._last_refusal: tuple[int, str, float] | None = None

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                self.wake.clear()
                flushing = self.flushing.is_set()
                claim = self.outbox.claim(self._limit, min_rows=1 if flushing else self._limit, max_wait=self.linger)
                if claim is None:
                    if flushing and len(self.outbox) == 0:
                        return
                    self.wake.wait(0.05 if flushing else min(self.linger, 0.5) or 0.05)
                    continue
                self._deliver(claim)
        finally:
            self.conn.close()

    def _deliver(self, claim: Claim) -> None:
        body = request_body(claim.bodies, self.batch)
        written = self.conn.written
        try:
            answer = self.conn.post(body, claim.key)
        except TRANSIENT_ERRORS as exc:
            self.stats.sent += len(claim) * (self.conn.written - written)
            self._retry_later(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
            return
        self.stats.sent += len(claim) * (self.conn.written - written)
        if 200 <= answer.status < 300:
            self.outbox.ack(claim)
            self.stats.acked += len(claim)
            if answer.headers.get("x-fdedge-replayed") == "true":
                self.stats.replayed += len(claim)
            faults = answer.json()
            if isinstance(faults, list) and faults and isinstance(faults[-1], dict):
                self.stats.last_faults = faults[-1]
            if self.stats.attempt:
                self.log(f"delivered again after {self.stats.attempt} failed attempt(s)")
            self.stats.attempt, self.stats.last_error = 0, ""
        elif answer.status == 413 and len(claim) > 1:
            self._limit = max(1, len(claim) // 2)
            self.log(f"HTTP 413 for {len(claim)} readings ({answer.message()}); sending {self._limit} per request")
            self.outbox.release()
        elif 400 <= answer.status < 500 and answer.status not in RETRY_STATUSES:
            self._refuse(claim, answer)
        else:  # 408, 429, 5xx; also 1xx/3xx: a wrong --url or a proxy, not the readings' fault
            self._retry_later(f"HTTP {answer.status}: {answer.message()}", answer.headers.get("retry-after"))

    def _refuse(self, claim: Claim, answer: Answer) -> None:
        details = answer.json()
        row = details.get("row") if isinstance(details, dict) and answer.status == 422 else None
        ids = [claim.ids[row]] if isinstance(row, int) and 0 <= row < len(claim) else claim.ids
        message = answer.message()
        self.outbox.reject(claim, ids, answer.status, message)
        self.stats.dead += len(ids)
        self.stats.attempt = 0
        now = time.monotonic()
        last = self._last_refusal
        if last is None or last[:2] != (answer.status, message) or now - last[2] > 10:
            self.log(f"refused, HTTP {answer.status}: {message} -> {len(ids)} reading(s) moved to the dead-letter "
                     f"table of {self.outbox.path} (not retried; {self.stats.dead} so far)", error=True)
            self._last_refusal = (answer.status, message, now)

    def _retry_later(self, error: str, retry_after: str | None = None) -> None:
        self.conn.close()
        delay = backoff(self.stats.attempt, self.base_delay, self.max_delay, self.rng)
        if retry_after and retry_after.strip().isdigit():
            delay = max(delay, min(float(retry_after), self.max_delay))
        self.stats.attempt += 1
        self.stats.retry_at, self.stats.last_error = time.monotonic() + delay, error
        if self.stats.attempt in (1, 3) or self.stats.attempt % 10 == 0:
            self.log(f"{error}; retrying in {delay:.1f} s (attempt {self.stats.attempt}), readings stay buffered")
        self.stop.wait(delay)
