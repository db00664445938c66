"""MQTT ingest: readings from a broker's topics, stored exactly as POST /send stores them.

Why paho's threaded client and not aiomqtt: aiomqtt 2.5 acknowledges a QoS 1 message as soon as
it is handed over; paho's `manual_ack` lets the PUBACK wait for the commit, so an acknowledged
message is on disk (and with --sync full, synced). paho's network thread parses each payload
(bodies.parse, the same validation and errors as /send) and hands the batch to the writer on the
event loop; the acknowledgements go back in the order the messages came, as MQTT asks.

Exactly once: the broker keeps a persistent session (clean start off, a week's session expiry), so
what is published while the appliance is down or reconnecting arrives later; a message that was
stored but not yet acknowledged when the link or the process died comes again, and its
idempotency key (the payload's `idempotency_key`, else a digest of topic and payload) is answered
from the writer's key table instead of being stored twice.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import hashlib
import logging
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions
from prometheus_client import CollectorRegistry, Counter, Gauge

from edge.errors import BadRequest, FDEdgeError, Gone, PayloadTooLarge, Unavailable
from edge.ingest.bodies import Batch, parse, parse_machine
from edge.plant import paho_client
from edge.plant.broker import failure, tls_context
from edge.settings import Settings
from edge.store.writer import Writer

log = logging.getLogger(__name__)

KEY_FIELD = "idempotency_key"  # a payload's own key for itself, as /send's Idempotency-Key header
SESSION_EXPIRY_S = 7 * 24 * 3600  # how long the broker keeps queueing for an appliance that is away
RECEIVE_MAXIMUM = 1000  # unacknowledged messages the broker may send ahead of the commits
BACKOFF_MIN_S, BACKOFF_MAX_S = 1, 30  # reconnect delays: doubling from the first to the cap
KEEPALIVE_S = 30
ERROR_PAYLOAD_BYTES = 1024  # what an error-topic message keeps of the payload it refused
# Storage that cannot take readings right now: the message is held (not acknowledged) and retried,
# so the broker keeps it. Any other refusal is the message's own fault: acknowledged and reported.
RETRIED = frozenset({"disk_full", "database_locked", "read_only", "storage_error", "sync_failed",
                     "database_corrupt"})


def default_client_id(settings: Settings) -> str:
    """Stable across restarts (the broker's session is found by it), distinct per host and
    database; 23 characters, the most MQTT 3.1 brokers must accept."""
    seed = f"{socket.gethostname()}\0{settings.db_path.resolve()}"
    return "fdedge-" + hashlib.sha256(seed.encode()).hexdigest()[:16]


def machine_level(settings: Settings) -> int | None:
    """The topic level naming the machine: as set, else the filter's first `+`; None for none."""
    level = settings.mqtt_machine_level
    if level is None:
        levels = settings.mqtt_ingest_topic.split("/")
        return levels.index("+") if "+" in levels else None
    return None if level < 0 else level


@dataclass
class _Held:
    """A QoS 1 message not yet acknowledged; `session` ties its packet id to one connection."""

    mid: int
    qos: int
    session: int
    done: bool = False


class MqttIngest:
    def __init__(self, settings: Settings, writer: Writer, registry: CollectorRegistry) -> None:
        url = settings.mqtt_url
        assert url is not None
        self.url, self.settings, self.writer = url, settings, writer
        self.topic = settings.mqtt_ingest_topic
        self.level = machine_level(settings)
        self.qos = settings.mqtt_qos
        self.client_id = settings.mqtt_client_id or default_client_id(settings)
        self.received = Counter("fdedge_mqtt_messages_received", "MQTT messages received on the ingest topic",
                                registry=registry)
        self.rejected = Counter("fdedge_mqtt_rejected", "MQTT messages refused (acknowledged, not stored), "
                                "by reason", ["reason"], registry=registry)
        self.duplicates = Counter("fdedge_mqtt_duplicates", "MQTT messages whose idempotency key was stored "
                                  "before (a redelivery): answered, not stored again", registry=registry)
        self.connected = Gauge("fdedge_mqtt_connected", "1 while subscribed to the MQTT broker", registry=registry)
        Gauge("fdedge_mqtt_unacknowledged", "MQTT messages received and not yet acknowledged (being stored)",
              registry=registry).set_function(lambda: len(self._held))
        self.state, self.detail, self.since = "connecting", "", time.time()
        self._lock = threading.Lock()
        self._held: deque[_Held] = deque()
        self._session = 0
        self._stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[concurrent.futures.Future] = set()
        self.client = self._client()

    def _client(self) -> paho_client.Client:
        client = paho_client.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=mqtt.MQTTv5,
                             manual_ack=True)
        if self.url.username is not None:
            client.username_pw_set(self.url.username, self.url.password)
        context = tls_context(self.url, self.settings.mqtt_ca, self.settings.mqtt_cert, self.settings.mqtt_key)
        if context is not None:
            client.tls_set_context(context)
        client.reconnect_delay_set(BACKOFF_MIN_S, BACKOFF_MAX_S)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        return client

    # -- event-loop side ----------------------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Never blocks nor fails on the broker: paho's thread connects, and reconnects, on its own."""
        self._loop = loop
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = SESSION_EXPIRY_S
        properties.ReceiveMaximum = RECEIVE_MAXIMUM
        self.client.connect_async(self.url.host, self.url.port, keepalive=KEEPALIVE_S, clean_start=False,
                                  properties=properties)
        self.client.loop_start()
        log.info("MQTT ingest: connecting to %s for %s as %s", self.url, self.topic, self.client_id)

    def stop(self) -> None:
        """Unacknowledged messages stay with the broker's session, delivered again at the next start."""
        self._stopping = True
        self.client.disconnect()
        self.client.loop_stop()
        for task in list(self._tasks):
            task.cancel()
        self.connected.set(0)
        log.info("MQTT ingest: stopped; the broker keeps the session %s for %d days", self.client_id,
                 SESSION_EXPIRY_S // 86400)

    def report(self) -> dict[str, Any]:
        """What /readyz says: MQTT being down is reported, never a reason to be unready."""
        return {"state": self.state, "broker": str(self.url), "topic": self.topic, "client_id": self.client_id,
                "since": round(self.since, 3), **({"detail": self.detail} if self.detail else {})}

    # -- connection state (paho's thread) -------------------------------------------------------

    def _change(self, state: str, detail: str = "") -> None:
        """One log line per change of state, none for the same failure again and again."""
        if (state, detail) == (self.state, self.detail):
            return
        self.state, self.detail, self.since = state, detail, time.time()
        self.connected.set(1 if state == "connected" else 0)
        if state == "connected":
            log.info("MQTT ingest: subscribed to %s on %s", self.topic, self.url)
        else:
            log.warning("MQTT ingest: %s from %s%s; retrying every %d-%d s", state, self.url,
                        f" ({detail})" if detail else "", BACKOFF_MIN_S, BACKOFF_MAX_S)

    def _new_session(self) -> None:
        """Packet ids of the connection that ended mean nothing on the next: those messages come again."""
        with self._lock:
            self._session += 1
            self._held.clear()

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        self._new_session()
        if reason.is_failure:
            self._change("refused", str(reason))
            return
        client.subscribe(self.topic, options=SubscribeOptions(qos=self.qos, retainHandling=1))

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reasons: list, properties: Any) -> None:
        failed = [r for r in reasons if r.is_failure]
        if failed:
            self._change("refused", f"subscribe {self.topic}: {failed[0]}")
        else:
            self._change("connected")

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        if self.state != "refused":  # the same reason again is no news (`_change` says nothing)
            self._change("disconnected", failure(getattr(client, "last_failure", None)))

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        self._new_session()
        if not self._stopping and self.state != "refused":
            self._change("disconnected", "connection lost" if reason.is_failure else str(reason))

    # -- messages -------------------------------------------------------------------------------

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        """paho's thread: parsed here, stored on the event loop. Never raises: paho would stop."""
        held = None
        try:
            self.received.inc()
            if message.qos:
                with self._lock:
                    held = _Held(message.mid, message.qos, self._session)
                    self._held.append(held)
            topic, payload = message.topic, bytes(message.payload)
            try:
                batch, key = self._parse(topic, payload)
            except FDEdgeError as exc:
                self._refuse(topic, payload, exc)
                self._done(held)
                return
            assert self._loop is not None
            future = asyncio.run_coroutine_threadsafe(self._store(topic, payload, batch, key, held), self._loop)
            self._tasks.add(future)
            future.add_done_callback(self._tasks.discard)
        except Exception:
            log.exception("MQTT ingest: unexpected error on a message from %s", message.topic)
            self._done(held)

    def _parse(self, topic: str, payload: bytes) -> tuple[Batch, str]:
        settings = self.settings
        if len(payload) > settings.max_body_bytes:
            raise PayloadTooLarge(f"payload of {len(payload)} bytes exceeds the limit of {settings.max_body_bytes} "
                                  "bytes (--max-body-bytes)", limit=settings.max_body_bytes)
        machine = None
        if self.level is not None:
            levels = topic.split("/")
            if self.level < len(levels):
                machine = parse_machine(levels[self.level])
        limit = settings.max_batch_rows
        batch = parse("application/json", payload, max_rows=limit, machine=machine)
        if len(batch) > limit:
            raise PayloadTooLarge(f"{len(batch)} readings exceed the limit of {limit} per message "
                                  "(--max-batch-rows)", limit=limit)
        return batch, _key(topic, payload)

    async def _store(self, topic: str, payload: bytes, batch: Batch, key: str, held: _Held | None) -> None:
        delay = 0.5
        while True:
            try:
                stored = await self.writer.ingest(batch, key, batch.digest())
            except Gone:
                self.duplicates.inc()  # stored before, since removed by retention: not stored again
            except Unavailable as exc:
                if exc.details.get("reason") in RETRIED and (held is None or held.session == self._session):
                    log.warning("MQTT ingest: storage unavailable, message held for %.1f s: %s", delay, exc.message)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, BACKOFF_MAX_S)
                    continue
                if exc.details.get("reason") not in RETRIED:
                    self._refuse(topic, payload, exc)
            except FDEdgeError as exc:  # the model's or a reused key's refusal: the message's own
                self._refuse(topic, payload, exc)
            else:
                if stored.replayed:
                    self.duplicates.inc()
            self._done(held)
            return

    def _done(self, held: _Held | None) -> None:
        """Acknowledge, in the order received, every message up to the first still being stored."""
        if held is None:
            return
        with self._lock:
            held.done = True
            while self._held and self._held[0].done:
                first = self._held.popleft()
                if first.session == self._session:
                    self.client.ack(first.mid, first.qos)

    def _refuse(self, topic: str, payload: bytes, exc: FDEdgeError) -> None:
        reason = str(exc.details.get("reason", exc.code))
        self.rejected.labels(reason=reason).inc()
        log.warning("MQTT ingest: refused a message on %s (%s): %s", topic[:200], reason, exc.message[:300])
        if self.settings.mqtt_error_topic is not None:
            self.client.publish(self.settings.mqtt_error_topic, _error_report(topic, reason, exc, payload), qos=1)


def _key(topic: str, payload: bytes) -> str:
    """The payload's own `idempotency_key`, else one bound to topic and payload: a redelivered
    message has both unchanged."""
    if KEY_FIELD.encode() in payload:
        body = orjson.loads(payload)  # parse() has read it already: valid JSON
        own = body.get(KEY_FIELD) if isinstance(body, dict) else None
        if own is not None:
            if not isinstance(own, str) or not 0 < len(own) <= 200:
                raise BadRequest(f"{KEY_FIELD} must be text of 1-200 characters", field=KEY_FIELD)
            return own
    return "mqtt:" + hashlib.sha256(topic.encode() + b"\0" + payload).hexdigest()


def _error_report(topic: str, reason: str, exc: FDEdgeError, payload: bytes) -> bytes:
    """JSON for the error topic: what was refused and why, with the payload's start (text if it is
    UTF-8, else base64)."""
    kept = payload[:ERROR_PAYLOAD_BYTES]
    report: dict[str, Any] = {"topic": topic, "reason": reason, "error": exc.message,
                              "payload_bytes": len(payload), "truncated": len(payload) > len(kept)}
    try:
        report["payload"] = kept.decode()
    except UnicodeDecodeError:
        report["payload_base64"] = base64.b64encode(kept).decode()
    return orjson.dumps(report)

