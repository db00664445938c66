"""The report page shows where the uplink stands: connected or not, how far behind."""

from __future__ import annotations

import pytest

from tests.harness import Server
from tests.mqtt_helpers import Mosquitto
from tests.web.browser_helpers import expect

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    with Mosquitto(tmp_path_factory.mktemp("uplink-broker")) as b:
        yield b


@pytest.fixture(scope="module")
def server(tmp_path_factory, model_dir, scenario, broker):
    base = tmp_path_factory.mktemp("uplink-server")
    args = [*scenario["args"], "--uplink-url", broker.url, "--appliance-id", "line-3", "--no-access-log"]
    with Server(base / "data", model_dir, args=args, power_cut=True) as srv:
        yield srv


def test_the_report_page_shows_the_uplinks_state_and_lag(server, scenario, broker, open_context):
    for r in scenario["healthy"][:5]:
        server.send(r)
    ctx, _ = open_context()
    page = ctx.new_page()
    page.goto(server.url + "/report")
    line = page.locator("#storage dd", has_text="line-3")
    expect(line).to_contain_text(f"connected to mqtt://127.0.0.1:{broker.port} as line-3; nothing waiting")
    broker.stop()
    server.send(scenario["healthy"][0])
    page.reload()
    expect(line).to_contain_text("readings behind")
    broker.start()
