"""The plant tests' broker: a real Mosquitto per test, stopped at teardown."""

from __future__ import annotations

import pytest

from tests.mqtt_helpers import Mosquitto


@pytest.fixture
def mosquitto(tmp_path):
    broker = Mosquitto(tmp_path / "mosquitto").start()
    yield broker
    broker.stop()


@pytest.fixture
def mosquitto_factory(tmp_path):
    """mosquitto_factory(name, **Mosquitto options) -> Mosquitto, started; all stopped at teardown."""
    brokers: list[Mosquitto] = []

    def make(name: str = "broker", **kwargs) -> Mosquitto:
        broker = Mosquitto(tmp_path / name, **kwargs).start()
        brokers.append(broker)
        return broker

    yield make
    for broker in brokers:
        broker.stop()
