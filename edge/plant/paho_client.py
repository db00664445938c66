"""paho's client, remembering why its last connection attempt failed.

paho's network thread catches the OSError of a failed connect and calls `on_connect_fail` with
nothing more, so a broker whose certificate the appliance cannot verify looked exactly like one
that is down: "cannot connect", retried for ever. The exception is kept here and told by
`broker.failure`. Imported only when an MQTT setting is on (it imports paho)."""

from __future__ import annotations

import paho.mqtt.client as mqtt


class Client(mqtt.Client):
    last_failure: OSError | None = None

    def reconnect(self) -> mqtt.MQTTErrorCode:
        try:
            code = super().reconnect()
        except OSError as exc:
            self.last_failure = exc
            raise
        self.last_failure = None
        return code
