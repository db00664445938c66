"""MQTT ingest against a real Mosquitto and a real `fdedge serve`: payloads are what POST /send
takes, stored through the same writer, acknowledged only once committed, never stored twice."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest

from edge.settings import Settings
from tests.harness import REPO, Server, reading
from tests.mqtt_helpers import Central, Pki

T0 = "2024-05-01 08:00:00"


def stamp(i: int) -> str:
    return f"2024-05-01 {8 + i // 3600:02d}:{i // 60 % 60:02d}:{i % 60:02d}"


class Client:
    """A plain MQTT 5 client (paho's own): publishes at QoS 1 and waits for the broker's PUBACK,
    and collects what arrives on the topics it subscribed to."""

    def __init__(self, port: int, username: str | None = None, password: str | None = None,
                 tls: Pki | None = None) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.messages: list[tuple[str, bytes]] = []
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        if username:
            self.client.username_pw_set(username, password)
        self.client.on_message = lambda c, u, m: self.messages.append((m.topic, m.payload))
        if tls:
            self.client.tls_set(ca_certs=str(tls.ca), certfile=str(tls.client), keyfile=str(tls.client_key))
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def publish(self, topic: str, payload: object, qos: int = 1) -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.client.publish(topic, data, qos=qos).wait_for_publish(10)

    def subscribe(self, topic: str) -> None:
        done = threading.Event()
        self.client.on_subscribe = lambda *args: done.set()
        self.client.subscribe(topic, qos=1)
        assert done.wait(10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def clients():
    made: list[Client] = []

    def make(port: int, username: str | None = None, password: str | None = None, tls: Pki | None = None) -> Client:
        made.append(Client(port, username, password, tls))
        return made[-1]

    yield make
    for client in made:
        client.close()


def eventually(check: Callable[[], Any], timeout: float = 20, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what or check}")
        time.sleep(0.05)


def mqtt_state(server: Server) -> dict:
    status, body = server.request("GET", "/readyz")
    assert status == 200, body
    return body["mqtt"]


def connected(server: Server) -> dict:
    return eventually(lambda: mqtt_state(server)["state"] == "connected" and mqtt_state(server),
                      what=f"subscribed: {server.read_log()}")


def metric(server: Server, name: str, **labels: str) -> float:
    with urllib.request.urlopen(server.url + "/metrics", timeout=10) as r:
        text = r.read().decode()
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = re.escape(name) + (r"\{" + re.escape(wanted) + r"\}" if labels else "") + r" (\S+)"
    found = re.search("^" + pattern + "$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def rows(server: Server) -> list[tuple[str, str]]:
    with sqlite3.connect(f"file:{server.data_dir / 'sensor_data.db'}?mode=ro", uri=True) as conn:
        return conn.execute("SELECT time, machine FROM sensor_data ORDER BY id").fetchall()


def start(server_factory, linear_model, broker_url: str, *args: str, **kwargs) -> Server:
    return server_factory(linear_model[0], args=["--mqtt-url", broker_url, *args], **kwargs).start()


def test_a_published_reading_is_stored_like_the_same_reading_sent_over_http(
        mosquitto, clients, server_factory, linear_model):
    server = start(server_factory, linear_model, mosquitto.url)
    state = connected(server)
    assert state["broker"] == mosquitto.url and state["topic"] == "fdedge/+/reading"
    publisher = clients(mosquitto.port)
    publisher.publish("fdedge/anything/reading", reading(7, Time=T0, machine="via-mqtt"))
    server.send(reading(7, Time=T0, machine="via-http"))
    over_mqtt = eventually(lambda: server.get("/api/latest", machine="via-mqtt")["readings"])[0]
    over_http = server.latest("via-http")
    for row in (over_mqtt, over_http):
        row.pop("id"), row.pop("machine")
    assert over_mqtt == over_http
    assert metric(server, "fdedge_mqtt_messages_received_total") == 1
    assert metric(server, "fdedge_mqtt_connected") == 1


def test_the_machine_comes_from_its_topic_level_unless_the_reading_names_one(
        mosquitto, clients, server_factory, linear_model):
    server = start(server_factory, linear_model, mosquitto.url,
                   "--mqtt-ingest-topic", "plant/+/+/reading", "--mqtt-machine-level", "2")
    connected(server)
    publisher = clients(mosquitto.port)
    publisher.publish("plant/hall-1/press-7/reading", reading(1, Time=T0))
    publisher.publish("plant/hall-1/press-8/reading", [reading(2, Time=stamp(1)), reading(3, Time=stamp(2)),
                                                       reading(4, Time=stamp(3), machine="named")])
    eventually(lambda: len(rows(server)) == 4)
    assert rows(server) == [(T0, "press-7"), (stamp(1), "press-8"), (stamp(2), "press-8"), (stamp(3), "named")]


def test_the_default_filter_takes_the_machine_from_its_wildcard(mosquitto, clients, server_factory, linear_model):
    server = start(server_factory, linear_model, mosquitto.url)
    connected(server)
    clients(mosquitto.port).publish("fdedge/lathe-2/reading", reading(1, Time=T0))
    eventually(lambda: rows(server) == [(T0, "lathe-2")])


def test_bad_payloads_are_counted_republished_acknowledged_and_the_subscription_goes_on(
        mosquitto, clients, server_factory, linear_model):
    args = ("--mqtt-error-topic", "fdedge-errors/in", "--max-body-bytes", "4096", "--max-batch-rows", "2")
    server = start(server_factory, linear_model, mosquitto.url, *args)
    connected(server)
    watcher = clients(mosquitto.port)
    watcher.subscribe("fdedge-errors/#")
    publisher = clients(mosquitto.port)
    incomplete = reading(1, Time=T0)
    del incomplete["Temperature"]
    publisher.publish("fdedge/m1/reading", b"not json \xff")
    publisher.publish("fdedge/m1/reading", incomplete)
    publisher.publish("fdedge/m1/reading", reading(2, Time=T0, note="x" * 5000))
    publisher.publish("fdedge/m1/reading", [reading(i, Time=stamp(i)) for i in range(3)])
    publisher.publish("fdedge/m1/reading", reading(9, Time=stamp(9)))
    eventually(lambda: rows(server) == [(stamp(9), "m1")])
    assert metric(server, "fdedge_mqtt_rejected_total", reason="invalid_json") == 1
    assert metric(server, "fdedge_mqtt_rejected_total", reason="invalid_reading") == 1
    assert metric(server, "fdedge_mqtt_rejected_total", reason="payload_too_large") == 2
    assert metric(server, "fdedge_mqtt_messages_received_total") == 5
    eventually(lambda: len(watcher.messages) == 4)
    errors = [json.loads(payload) for _, payload in watcher.messages]
    assert [e["reason"] for e in errors] == ["invalid_json", "invalid_reading", "payload_too_large",
                                             "payload_too_large"]
    assert all(e["topic"] == "fdedge/m1/reading" for e in errors)
    assert "Temperature" in errors[1]["error"] and "4096" in errors[2]["error"]
    assert errors[0]["payload_base64"] and errors[1]["payload"].startswith("{")
    assert errors[2]["truncated"] is True and errors[2]["payload_bytes"] > 5000
    # acknowledged: a restart (same persistent session) gets none of them again
    server.stop()
    server.start()
    connected(server)
    publisher.publish("fdedge/m1/reading", reading(10, Time=stamp(10)))
    eventually(lambda: len(rows(server)) == 2)
    assert metric(server, "fdedge_mqtt_messages_received_total") == 1


def test_a_broker_outage_is_reported_leaves_http_ingest_alone_and_ends_in_a_reconnect(
        mosquitto, clients, server_factory, linear_model):
    server = start(server_factory, linear_model, mosquitto.url)
    connected(server)
    mosquitto.stop()
    eventually(lambda: mqtt_state(server)["state"] != "connected")
    assert metric(server, "fdedge_mqtt_connected") == 0
    server.send(reading(1, Time=T0, machine="http"))  # and /readyz answered 200 throughout
    mosquitto.start()
    connected(server)
    clients(mosquitto.port).publish("fdedge/after/reading", reading(2, Time=stamp(1)))
    eventually(lambda: rows(server) == [(T0, "http"), (stamp(1), "after")])
    said = [line for line in server.read_log().splitlines() if "MQTT" in line]
    assert 2 <= len(said) <= 8, said  # one line per change of state, no traceback
    assert "Traceback" not in server.read_log()


def test_a_broker_that_is_absent_at_start_up_does_not_stop_it(server_factory, linear_model):
    from tests.harness import free_port

    server = start(server_factory, linear_model, f"mqtt://127.0.0.1:{free_port()}")
    assert mqtt_state(server)["state"] in ("connecting", "disconnected")
    server.send(reading(1, Time=T0))


def test_a_broker_with_users_takes_the_password_from_the_url(mosquitto_factory, clients, server_factory,
                                                              linear_model, tmp_path):
    broker = mosquitto_factory("auth", users={"edge": "s3cret", "sensor": "pw"})
    wrong = start(server_factory, linear_model, f"mqtt://edge:wrong@127.0.0.1:{broker.port}",
                  data_dir=tmp_path / "wrong")
    eventually(lambda: mqtt_state(wrong)["state"] == "refused")
    assert "s3cret" not in wrong.read_log() and "wrong" not in json.dumps(mqtt_state(wrong))
    wrong.stop()
    server = start(server_factory, linear_model, f"mqtt://edge:s3cret@127.0.0.1:{broker.port}")
    connected(server)
    clients(broker.port, "sensor", "pw").publish("fdedge/m/reading", reading(1, Time=T0))
    eventually(lambda: rows(server) == [(T0, "m")])


def test_an_mqtts_broker_with_the_plants_ca_and_client_certificates_carries_readings_both_ways(
        mosquitto_factory, clients, server_factory, linear_model, tmp_path):
    pki = Pki(tmp_path / "pki")
    broker = mosquitto_factory("tls", tls=pki)
    central = Central(broker, "central/#")
    try:
        server = start(server_factory, linear_model, broker.url, "--mqtt-ca", str(pki.ca),
                       "--mqtt-cert", str(pki.client), "--mqtt-key", str(pki.client_key),
                       "--uplink-url", broker.url, "--uplink-ca", str(pki.ca), "--uplink-cert", str(pki.client),
                       "--uplink-key", str(pki.client_key), "--uplink-topic-prefix", "central", "--appliance-id", "tls")
        assert connected(server)["broker"] == broker.url
        clients(broker.port, tls=pki).publish("fdedge/m/reading", reading(1, Time=T0))
        eventually(lambda: rows(server) == [(T0, "m")], what="the reading published over TLS stored")
        eventually(lambda: central.readings(), what=f"the reading up the TLS uplink: {server.read_log()}")
    finally:
        central.close()


def test_an_mqtts_broker_whose_certificate_the_appliance_cannot_verify_is_refused_not_trusted(
        mosquitto_factory, server_factory, linear_model, tmp_path):
    pki = Pki(tmp_path / "pki")
    broker = mosquitto_factory("tls", tls=pki)
    # the system's CAs (no --mqtt-ca, no --uplink-ca): the plant's own CA is unknown to them
    server = start(server_factory, linear_model, broker.url, "--mqtt-cert", str(pki.client),
                   "--mqtt-key", str(pki.client_key), "--uplink-url", broker.url, "--appliance-id", "tls")
    state = eventually(lambda: "TLS" in mqtt_state(server).get("detail", "") and mqtt_state(server),
                       what=f"the reason on /readyz: {mqtt_state(server)}")
    assert state["state"] == "disconnected" and "certificate was not accepted" in state["detail"]
    uplink = eventually(lambda: "TLS" in (server.get("/api/uplink")["last_error"] or "") and server.get("/api/uplink"))
    assert uplink["connected"] is False and "--uplink-ca" in uplink["last_error"]
    log = server.read_log()
    assert log.count("certificate was not accepted") == 2, log  # once each for MQTT in and the uplink, not per retry
    server.send(reading(1, Time=T0))  # HTTP ingest is not affected
    assert [time for time, _machine in rows(server)] == [T0]


def test_a_message_published_while_the_appliance_is_down_is_stored_once_it_is_back(
        mosquitto, clients, server_factory, linear_model):
    server = start(server_factory, linear_model, mosquitto.url)
    connected(server)
    server.stop()
    clients(mosquitto.port).publish("fdedge/m/reading", reading(1, Time=T0))
    server.start()
    eventually(lambda: rows(server) == [(T0, "m")])


def test_the_same_message_twice_is_stored_once(mosquitto, clients, server_factory, linear_model):
    server = start(server_factory, linear_model, mosquitto.url)
    connected(server)
    publisher = clients(mosquitto.port)
    publisher.publish("fdedge/m/reading", reading(1, Time=T0))
    publisher.publish("fdedge/m/reading", reading(1, Time=T0))  # a redelivery: same topic, same payload
    # a key in the payload makes one message of the same readings on two topics; other readings
    # under that key (here: another machine, from the topic) are refused, as /send refuses them
    first = reading(2, Time=stamp(1), machine="p", idempotency_key="sensor-9:17")
    publisher.publish("fdedge/a/reading", first)
    publisher.publish("fdedge/b/reading", json.dumps(first, indent=1).encode())
    publisher.publish("fdedge/c/reading", {**first, "machine": None})
    publisher.publish("fdedge/m/reading", reading(3, Time=stamp(2)))
    eventually(lambda: len(rows(server)) == 3 and metric(server, "fdedge_mqtt_messages_received_total") == 6)
    assert rows(server) == [(T0, "m"), (stamp(1), "p"), (stamp(2), "m")]
    assert metric(server, "fdedge_mqtt_duplicates_total") == 2
    assert metric(server, "fdedge_mqtt_rejected_total", reason="idempotency_key_reused") == 1


def test_every_message_is_stored_exactly_once_across_a_kill_and_restart(
        mosquitto, clients, server_factory, linear_model):
    n = 300
    server = start(server_factory, linear_model, mosquitto.url)
    connected(server)
    publisher = clients(mosquitto.port)

    def publish_all() -> None:
        for i in range(n):
            publisher.publish(f"fdedge/m{i % 3}/reading", reading(i, Time=stamp(i)))
            time.sleep(0.002)

    thread = threading.Thread(target=publish_all)
    thread.start()
    try:
        eventually(lambda: len(rows(server)) >= n // 4)
        server.kill()
        server.start()
    finally:
        thread.join()
    stored = eventually(lambda: len(rows(server)) >= n and rows(server), timeout=30)
    time.sleep(0.5)  # anything stored twice would be stored by now
    stored = rows(server)
    assert len(stored) == n and len(set(stored)) == n
    assert set(stored) == {(stamp(i), f"m{i % 3}") for i in range(n)}


@pytest.mark.parametrize("args, says", [
    (["--mqtt-error-topic", "fdedge/errors/reading"], "would come back"),
    (["--mqtt-machine-level", "5"], "not a level"),
    (["--mqtt-ca", "/etc/ca.pem"], "mqtts://"),
    (["--mqtt-qos", "2"], "0 or 1"),
])
def test_mqtt_settings_that_cannot_work_stop_start_up(capsys, args, says):
    with pytest.raises(SystemExit):
        Settings.from_args(["--mqtt-url", "mqtt://127.0.0.1", *args], environ={})
    assert says in capsys.readouterr().err


def test_without_mqtt_url_paho_is_never_imported(tmp_path, linear_model):
    code = f"""
import sys
from pathlib import Path
from edge.appliance import Appliance
from edge.http.app import create_app
from edge.settings import Settings
settings = Settings.from_args(["--data-dir", {str(tmp_path / "data")!r}, "--model-dir", {str(linear_model[0])!r}])
app = create_app(settings, Appliance.build(settings))
print(sorted(m for m in ("paho", "aiomqtt", "edge.plant.mqtt_ingest") if m in sys.modules))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_a_message_is_acknowledged_only_once_its_reading_is_committed(
        mosquitto, clients, server_factory, linear_model):
    """While another process locks the database the message is held, not acknowledged: killed
    then, the appliance gets it again from the broker after its restart and stores it."""
    server = start(server_factory, linear_model, mosquitto.url)
    connected(server)
    holder = sqlite3.connect(server.data_dir / "sensor_data.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        clients(mosquitto.port).publish("fdedge/m/reading", reading(1, Time=T0))
        eventually(lambda: "message held" in server.read_log(), what="the writer to meet the lock")
        assert metric(server, "fdedge_mqtt_unacknowledged") == 1
        server.kill()
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    server.start()
    eventually(lambda: rows(server) == [(T0, "m")])
    eventually(lambda: metric(server, "fdedge_mqtt_unacknowledged") == 0)
    assert metric(server, "fdedge_mqtt_duplicates_total") == 0
