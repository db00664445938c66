"""Broker URLs as operators write them, and the Mosquitto the plant tests run against."""

from __future__ import annotations

import pytest

from edge.plant.broker import BrokerURL, parse_url, tls_context


def test_urls_parse_with_defaults_and_escapes():
    assert parse_url("mqtt://broker.plant.local") == BrokerURL("mqtt", "broker.plant.local", 1883)
    url = parse_url("mqtts://edge%40line1:p%3Ass@10.0.0.5")
    assert (url.scheme, url.host, url.port) == ("mqtts", "10.0.0.5", 8883)
    assert (url.username, url.password) == ("edge@line1", "p:ss")
    assert parse_url("mqtt://[::1]:1884").port == 1884


def test_the_password_never_shows():
    url = parse_url("mqtt://user:secret@host:1883")
    assert "secret" not in str(url) and "secret" not in repr(url)
    assert str(url) == "mqtt://user:***@host:1883"


@pytest.mark.parametrize("text, says", [
    ("http://host", "scheme"), ("host:1883", "scheme"), ("mqtt://", "no host"),
    ("mqtt://host:99999", "not a broker URL"), ("mqtt://host/plant/+", "no path"),
])
def test_bad_urls_say_what_is_wrong(text, says):
    with pytest.raises(ValueError, match=says):
        parse_url(text)


def test_tls_only_for_mqtts(tmp_path):
    assert tls_context(parse_url("mqtt://h"), None, None, None) is None
    with pytest.raises(ValueError, match="not mqtts"):
        tls_context(parse_url("mqtt://h"), tmp_path / "ca.pem", None, None)
    assert tls_context(parse_url("mqtts://h"), None, None, None) is not None


def test_a_real_broker_carries_a_message(mosquitto):
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    got: list[bytes] = []
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    client.on_message = lambda c, u, m: got.append(m.payload)
    client.connect("127.0.0.1", mosquitto.port)
    client.subscribe("t/#", qos=1)
    client.loop_start()
    try:
        client.publish("t/x", b"hello", qos=1).wait_for_publish(5)
        import time
        deadline = time.monotonic() + 5
        while not got and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        client.loop_stop()
        client.disconnect()
    assert got == [b"hello"]
