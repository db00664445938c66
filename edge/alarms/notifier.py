"""Webhook delivery from the persistent outbox: nothing lost, in order per webhook, never in the
way of ingest.

The alarm engine writes one outbox row per (change, webhook) in the same transaction as the
change. Here one thread per webhook posts its rows oldest first and marks them delivered;
a failure blocks only that webhook, which retries the same row with exponential backoff (capped)
until its receiver answers 2xx, so a receiver that is down for an hour gets the hour's
notifications, in order, when it comes back. Delivery is at least once: a receiver dedupes on
`X-FDEdge-Delivery` (the outbox id, never reused).

Threads rather than asyncio tasks: a DNS lookup or TLS handshake blocks, and a stuck receiver
must not stall the event loop or another receiver. Each thread has its own SQLite connection
and holds the write lock only for one short UPDATE.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import logging
import random
import sqlite3
import ssl
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from edge.alarms.rules import Webhook
from edge.alarms.tables import OUTBOX, UPLINK_HOOK
from edge.fdrest import TIME_FORMAT, now_text
from edge.store.database import connect

log = logging.getLogger(__name__)

USER_AGENT = "FD-Edge-Webhook/1"
MAX_RESPONSE_BYTES = 64 * 1024
WARN_EVERY = 10  # while a receiver stays down, log every 10th failed attempt (not every one)
PRUNE_INTERVAL_S = 3600.0


def signature(secret: str, body: bytes) -> str:
    """The `X-FDEdge-Signature` value: HMAC-SHA256 of the raw body, hex."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def headers(hook: Webhook, delivery: int, event: str, body: bytes) -> dict[str, str]:
    out = {"Content-Type": "application/json", "User-Agent": USER_AGENT,
           "X-FDEdge-Event": event, "X-FDEdge-Delivery": str(delivery)}
    if hook.secret:
        out["X-FDEdge-Signature"] = signature(hook.secret, body)
    return out


def post(hook: Webhook, delivery: int, event: str, body: bytes) -> str | None:
    """POST one notification; None when the receiver answered 2xx, else a short reason that never
    contains the URL (its path may be a credential). Redirects are not followed."""
    parts = urlsplit(hook.url)
    host = parts.hostname or ""  # never empty: the rules file refuses a URL without a host
    if parts.scheme == "https":
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(
            host, parts.port, timeout=hook.timeout_s, context=ssl.create_default_context())
    else:
        conn = http.client.HTTPConnection(host, parts.port, timeout=hook.timeout_s)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        conn.request("POST", target, body=body, headers=headers(hook, delivery, event, body))
        response = conn.getresponse()
        response.read(MAX_RESPONSE_BYTES)
        if 200 <= response.status < 300:
            return None
        return f"HTTP {response.status}"
    except (OSError, http.client.HTTPException) as exc:
        return f"{type(exc).__name__}: {exc}"[:200]
    finally:
        conn.close()


class Notifier:
    """`start()` one delivery thread per webhook, `wake()` after committing outbox rows (any
    thread), `stop()` at shutdown. Rows are also picked up by polling every `poll_s`."""

    def __init__(self, db_path: Path, webhooks: tuple[Webhook, ...] | list[Webhook], *, metrics: Any = None,
                 poll_s: float = 5.0, backoff_s: float = 2.0, backoff_cap_s: float = 300.0,
                 keep_days: float = 7.0) -> None:
        self.db_path = Path(db_path)
        self.webhooks = tuple(webhooks)
        self.metrics = metrics  # edge.metrics.Metrics with `webhook_deliveries`, or None
        self.poll_s, self.backoff_s, self.backoff_cap_s, self.keep_days = poll_s, backoff_s, backoff_cap_s, keep_days
        self._stop = threading.Event()
        self._wakeups = {hook.key: threading.Event() for hook in self.webhooks}
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        self._stop.clear()
        for i, hook in enumerate(self.webhooks):
            thread = threading.Thread(target=self._run, args=(hook, i == 0), name=f"fdedge-webhook-{i}",
                                      daemon=True)
            thread.start()
            self._threads.append(thread)
        if self.webhooks:
            log.info("delivering alarm notifications to %s", ", ".join(h.label for h in self.webhooks))

    def wake(self) -> None:
        """New outbox rows were committed: deliver now rather than at the next poll."""
        for event in self._wakeups.values():
            event.set()

    def stop(self, timeout: float = 5.0) -> None:
        """A POST in flight finishes or times out on its own; its row is retried at the next start."""
        self._stop.set()
        self.wake()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._threads.clear()

    # -- one thread per webhook ---------------------------------------------------------------------

    def _run(self, hook: Webhook, report_orphans: bool) -> None:
        wakeup = self._wakeups[hook.key]
        conn: sqlite3.Connection | None = None
        failures = 0
        pruned = 0.0
        try:
            conn = connect(self.db_path, busy_ms=5000)
            if report_orphans:
                self._report_orphans(conn)
            while not self._stop.is_set():
                wakeup.clear()
                try:
                    delay, failures = self._attempt(conn, hook, failures)
                    if time.monotonic() - pruned > PRUNE_INTERVAL_S:
                        self._prune(conn, hook)
                        pruned = time.monotonic()
                except sqlite3.Error as exc:  # database locked or full: try again later, keep the thread
                    log.warning("webhook %s: outbox unavailable (%s); retrying", hook.label, exc)
                    delay = self.poll_s
                if delay is None:
                    wakeup.wait(self.poll_s)
                elif delay > 0:
                    self._stop.wait(delay)  # backing off: a wake-up must not hammer a dead receiver
        except Exception:  # logged; the other webhooks keep going
            log.exception("webhook %s: delivery thread failed", hook.label)
        finally:
            if conn is not None:
                conn.close()

    def _attempt(self, conn: sqlite3.Connection, hook: Webhook, failures: int) -> tuple[float | None, int]:
        """Try the oldest undelivered row. Returns (None = idle | seconds to wait | 0 = go on, failures)."""
        row = conn.execute(f"SELECT id, event, body, attempts, next_try FROM {OUTBOX} "
                           "WHERE hook = ? AND delivered_at IS NULL ORDER BY id LIMIT 1", (hook.key,)).fetchone()
        if row is None:
            return None, failures
        delivery, event, body, attempts, next_try = row
        wait = next_try - time.time()
        if 0 < wait <= self.backoff_cap_s * 1.25:  # a wall clock set back by NTP must not park a row
            return wait, failures
        error = post(hook, delivery, event, body.encode())
        if error is None:
            conn.execute(f"UPDATE {OUTBOX} SET delivered_at = ?, attempts = attempts + 1, last_error = NULL "
                         "WHERE id = ?", (now_text(), delivery))
            self._count("delivered")
            if failures:
                log.info("webhook %s: delivered again after %d failed attempt(s)", hook.label, failures)
            return 0.0, 0
        backoff = min(self.backoff_cap_s, self.backoff_s * 2.0 ** min(attempts, 30)) * random.uniform(0.8, 1.0)
        conn.execute(f"UPDATE {OUTBOX} SET attempts = attempts + 1, next_try = ?, last_error = ? WHERE id = ?",
                     (time.time() + backoff, error, delivery))
        self._count("failed")
        failures += 1
        if failures == 1 or failures % WARN_EVERY == 0:
            log.warning("webhook %s: delivery %d (%s) failed: %s; attempt %d, retrying in %.0f s",
                        hook.label, delivery, event, error, attempts + 1, backoff)
        return backoff, failures

    def _prune(self, conn: sqlite3.Connection, hook: Webhook) -> None:
        cutoff = (datetime.now(UTC) - timedelta(days=self.keep_days)).strftime(TIME_FORMAT)
        conn.execute(f"DELETE FROM {OUTBOX} WHERE hook = ? AND delivered_at IS NOT NULL AND delivered_at < ?",
                     (hook.key, cutoff))

    def _report_orphans(self, conn: sqlite3.Connection) -> None:
        keys = [h.key for h in self.webhooks] + [UPLINK_HOOK]  # the uplink's rows are its own
        n = conn.execute(f"SELECT count(*) FROM {OUTBOX} WHERE delivered_at IS NULL "
                         f"AND hook NOT IN ({','.join('?' * len(keys))})", keys).fetchone()[0]
        if n:
            log.warning("%d undelivered notification(s) belong to webhooks no longer in the rules file; "
                        "they stay in %s and go out if the webhook is configured again", n, OUTBOX)

    def _count(self, result: str) -> None:
        if self.metrics is not None:
            self.metrics.webhook_deliveries.labels(result=result).inc()
