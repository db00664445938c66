"""The uplink's connection: one paho client publishing QoS 1, its PUBACKs reported by message id.

paho's network thread connects, and reconnects with capped exponential backoff (1 s doubling to
BACKOFF_MAX_S, reset by a successful connection). Messages not yet acknowledged when the link
drops stay in paho's session and are sent again, in order, once it is back: a message whose
PUBACK was lost arrives twice (same keys), none is lost. One log line per change of state.
paho is imported here only, when the uplink is turned on."""

from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import Callable
from typing import Any

from edge.plant.broker import BrokerURL, failure

log = logging.getLogger("edge.plant.uplink")

BACKOFF_MIN_S, BACKOFF_MAX_S = 1, 30
KEEPALIVE_S = 30


class Link:
    def __init__(self, url: BrokerURL, tls: ssl.SSLContext | None, client_id: str, *, window: int,
                 on_ack: Callable[[int], None], on_change: Callable[[], None]) -> None:
        self.url, self.tls, self.client_id, self.window = url, tls, client_id, window
        self.on_ack, self.on_change = on_ack, on_change
        self.connected = False
        self.state = "starting"
        self.last_error: str | None = None
        self.connects = 0
        self._logged: str | None = None
        self._lock = threading.Lock()
        self._client: Any = None

    def start(self) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        from edge.plant.paho_client import Client

        client = Client(CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=mqtt.MQTTv311,
                             clean_session=True)
        if self.url.username is not None:
            client.username_pw_set(self.url.username, self.url.password)
        if self.tls is not None:
            client.tls_set_context(self.tls)
        client.max_inflight_messages_set(self.window)
        client.max_queued_messages_set(0)
        client.reconnect_delay_set(BACKOFF_MIN_S, BACKOFF_MAX_S)
        client.on_connect = self._connected
        client.on_disconnect = self._disconnected
        client.on_connect_fail = self._failed
        client.on_publish = self._acked
        self._client = client
        client.connect_async(self.url.host, self.url.port, keepalive=KEEPALIVE_S)
        client.loop_start()

    def stop(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        client.disconnect()
        client.loop_stop()
        self.connected = False

    def publish(self, topic: str, payload: bytes) -> int:
        """Queue a QoS 1 message; its id, reported to `on_ack` once the broker acknowledged it."""
        return self._client.publish(topic, payload, qos=1).mid

    # -- paho's network thread ----------------------------------------------------------------------

    def _acked(self, client: Any, userdata: Any, mid: int, reason: Any, properties: Any) -> None:
        self.on_ack(mid)

    def _connected(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            self._note("refused", f"{self.url} refused the connection ({reason}); retrying with backoff "
                       f"up to {BACKOFF_MAX_S} s", str(reason))
            return
        self.connected = True
        self.connects += 1
        self._note("connected", f"connected to {self.url}", None, level=logging.INFO)

    def _disconnected(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        was = self.connected
        self.connected = False
        if self._client is None:
            self._note("stopped", f"disconnected from {self.url}", None, level=logging.INFO)
        elif was:
            self._note("disconnected", f"lost the connection to {self.url} ({reason}); reconnecting with "
                       f"backoff up to {BACKOFF_MAX_S} s, readings wait in the database", str(reason))

    def _failed(self, client: Any, userdata: Any) -> None:
        self.connected = False
        why = failure(client.last_failure)
        self._note("unreachable", f"cannot reach {self.url} ({why}); retrying with backoff up to {BACKOFF_MAX_S} s, "
                   "readings wait in the database", why)

    def _note(self, state: str, text: str, error: str | None, level: int = logging.WARNING) -> None:
        with self._lock:
            self.state = state
            if error is not None:
                self.last_error = error
            # a lost connection followed by failed retries is one outage: one line
            quiet = self._logged == state or (self._logged == "disconnected" and state == "unreachable")
            if not quiet:
                self._logged = state
        if not quiet:
            log.log(level, "uplink: %s", text)
        self.on_change()
