"""Section: what the uplink costs ingest. `fdedge serve --sync full` with `--uplink-url` to a real
Mosquitto (Debian's, on a free loopback port) against the same server without it, interleaved:
single readings and batches; then the same with that broker stopped (ingest must not notice an
outage); and the RSS after storing the plan's readings with the uplink on. A paho subscriber on
the broker counts the readings that arrive, so the figures are for an uplink that keeps up."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from bench.common import BenchError, Plan, batch_body, free_port, median, ratio, single_body
from bench.http import BATCH_CONNECTIONS, _rotate, _with_cpu
from bench.loadgen import Wrk
from bench.resources import ingest
from bench.servers import Server, http_get

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


class Broker:
    """Mosquitto on a free loopback port; `stop()` and `start()` again: an outage, same port."""

    def __init__(self, root: Path) -> None:
        if not Path(MOSQUITTO).exists():
            raise BenchError("the uplink section needs Debian's mosquitto (apt-get install mosquitto)")
        self.port = free_port()
        self.config = root / "mosquitto.conf"
        self.config.write_text(f"listener {self.port} 127.0.0.1\npersistence false\nallow_anonymous true\n"
                               "max_queued_messages 1000000\nlog_dest stderr\nlog_type error\n")
        self.log = root / "mosquitto.log"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> Broker:
        import socket
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.config)], stdout=log, stderr=log)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        raise BenchError(f"mosquitto did not listen on {self.port}: {self.log.read_text()[-500:]}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


class Counter:
    """The central side: counts readings (their keys) as they arrive, without parsing the JSON."""

    def __init__(self, broker: Broker) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.readings = 0
        self._ready = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-central", clean_session=True)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe("fdedge/+/+/readings", qos=1)
        self.client.on_subscribe = lambda c, u, mid, rc, p: self._ready.set()
        self.client.on_message = self._got
        self.client.reconnect_delay_set(1, 2)
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()
        if not self._ready.wait(10):
            raise BenchError("the bench's subscriber could not subscribe")

    def _got(self, client: Any, userdata: Any, message: Any) -> None:
        self.readings += message.payload.count(b'"key":')

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def uplink_state(server: Server) -> dict[str, Any]:
    import json
    status, body = http_get(server.port, "/api/uplink", timeout=10)
    if status != 200:
        raise BenchError(f"{server.name}: /api/uplink answered {status}")
    return json.loads(body)


def caught_up(server: Server, timeout: float = 120) -> tuple[dict[str, Any], float]:
    """Wait until the uplink has nothing left to send; (its status, seconds waited)."""
    start = time.monotonic()
    while True:
        state = uplink_state(server)
        if state["lag_rows"] == 0:
            return state, time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise BenchError(f"{server.name}: the uplink was still {state['lag_rows']} readings behind after "
                             f"{timeout:.0f} s")
        time.sleep(0.1)


def run(plan: Plan, root: Path, model_dir: Path, readings: list[dict[str, Any]],
        log: Callable[[str], None] = print) -> dict[str, Any]:
    broker = Broker(root).start()
    counter = Counter(broker)
    uplink_args = ("--uplink-url", broker.url, "--appliance-id", "bench")
    off = Server("edge", root, model_dir=model_dir, sync="full", name="edge-uplink-off").start()
    on = Server("edge", root, model_dir=model_dir, sync="full", name="edge-uplink-on", args=uplink_args).start()
    pair = [off, on]
    single_wrk = Wrk(root, "uplink-single", single_body(readings))
    batch_wrk = Wrk(root, "uplink-batch", batch_body(readings, plan.batch_rows, placeholder=True),
                    advancing_times=True)
    single: dict[str, list[dict[str, Any]]] = {s.name: [] for s in pair}
    batches: dict[str, list[dict[str, Any]]] = {s.name: [] for s in pair}
    down: dict[str, list[dict[str, Any]]] = {s.name: [] for s in pair}
    waits: list[float] = []
    try:
        for server in pair:
            single_wrk.warm(server.port, plan.warmup, plan.connections)
        for r in range(plan.rounds):
            log(f"  round {r + 1}/{plan.rounds}: single readings and batches, uplink on / off")
            for server in _rotate(pair, r):
                single[server.name].append(_with_cpu(server, partial(
                    single_wrk.run, server.port, plan.duration, plan.connections)))
            for server in _rotate(pair, r):
                result = _with_cpu(server, partial(batch_wrk.run, server.port, plan.duration, BATCH_CONNECTIONS))
                result["readings_per_s"] = result["rps"] * plan.batch_rows
                batches[server.name].append(result)
            waits.append(caught_up(on)[1])
        log("  single readings with the uplink's broker stopped")
        broker.stop()
        for r in range(plan.rounds):
            for server in _rotate(pair, r):
                down[server.name].append(_with_cpu(server, partial(
                    single_wrk.run, server.port, plan.duration, plan.connections)))
        broker.start()
        state, recovered = caught_up(on, timeout=300)
        stored = state["newest_id"]
    finally:
        off.stop()
        on.stop()

    log(f"  storing {plan.stored_readings:,} readings with the uplink on")
    rss = Server("edge", root, model_dir=model_dir, sync="full", name="edge-uplink-rss", args=uplink_args).start()
    try:
        before = counter.readings
        requests = plan.stored_readings // plan.batch_rows
        bodies = (batch_body(readings, plan.batch_rows, first=k * plan.batch_rows) for k in range(requests))
        seconds = ingest(rss, bodies, requests)
        rss_state, rss_wait = caught_up(rss)
        time.sleep(1.0)
        memory = rss.status()
        arrived = counter.readings - before
    finally:
        rss.stop()
        counter.close()
        broker.stop()
    every = every_feature_rss(plan, root, model_dir, readings, log)
    plain = Server("edge", root, model_dir=model_dir, sync="full", name="edge-uplink-rss-off").start()
    try:
        bodies = (batch_body(readings, plan.batch_rows, first=k * plan.batch_rows) for k in range(requests))
        ingest(plain, bodies, requests)
        time.sleep(1.0)
        memory_off = plain.status()
    finally:
        plain.stop()

    def summary(rows: list[dict[str, Any]], key: str) -> float | None:
        return median(r.get(key) for r in rows)

    out: dict[str, Any] = {
        "single": {name: {"rps": summary(rows, "rps"), "p99_ms": summary(rows, "p99_ms"),
                          "server_cpu_us_per_request": summary(rows, "server_cpu_us_per_request"), "rounds": rows}
                   for name, rows in single.items()},
        "batch": {name: {"readings_per_s": summary(rows, "readings_per_s"), "p99_ms": summary(rows, "p99_ms"),
                         "server_cpu_us_per_request": summary(rows, "server_cpu_us_per_request"), "rounds": rows}
                  for name, rows in batches.items()},
        "broker_down_single": {name: {"rps": summary(rows, "rps"), "rounds": rows} for name, rows in down.items()},
        "catch_up_after_round_s": waits,
        "recovered_after_outage_s": round(recovered, 2),
        "readings_sent_in_section": stored,
        "stored_readings": rss_state["newest_id"],
        "arrived_readings": arrived,
        "ingest_readings_per_s_one_connection": plan.stored_readings / seconds if seconds else None,
        "caught_up_after_ingest_s": round(rss_wait, 2),
        "rss_after_bytes": memory.get("VmRSS"),
        "rss_peak_bytes": memory.get("VmHWM"),
        "rss_after_bytes_uplink_off": memory_off.get("VmRSS"),
        "every_feature": every,
    }
    out["single_ratio"] = ratio(out["single"]["edge-uplink-on"]["rps"], out["single"]["edge-uplink-off"]["rps"])
    out["batch_ratio"] = ratio(out["batch"]["edge-uplink-on"]["readings_per_s"],
                               out["batch"]["edge-uplink-off"]["readings_per_s"])
    out["broker_down_single_ratio"] = ratio(out["broker_down_single"]["edge-uplink-on"]["rps"],
                                            out["broker_down_single"]["edge-uplink-off"]["rps"])
    out["slowdown"] = max(1 - (out["single_ratio"] or 0), 1 - (out["batch_ratio"] or 0))
    return out


EVERY_FEATURE = ("--socketio", "--machine-metrics")


def every_feature_rss(plan: Plan, root: Path, model_dir: Path, readings: list[dict[str, Any]],
                      log: Callable[[str], None] = print) -> dict[str, Any]:
    """RSS after the plan's readings with every plant feature on at once (MQTT ingest subscribed,
    uplink, Modbus, Socket.IO, per-machine gauges), each one touched once before the figure is
    taken, so a budget holds for the appliance a plant actually runs, not for one feature at a time."""
    broker = Broker(root).start()
    modbus_port = free_port()
    args = ("--uplink-url", broker.url, "--appliance-id", "bench-all", "--mqtt-url", broker.url,
            "--modbus-port", str(modbus_port), *EVERY_FEATURE)
    log(f"  storing {plan.stored_readings:,} readings with every plant feature on")
    server = Server("edge", root, model_dir=model_dir, sync="full", name="edge-every-feature", args=args).start()
    try:
        requests = plan.stored_readings // plan.batch_rows
        bodies = (batch_body(readings, plan.batch_rows, first=k * plan.batch_rows) for k in range(requests))
        seconds = ingest(server, bodies, requests)
        via_mqtt = _publish_readings(broker, readings[:100])
        state, _ = caught_up(server)
        status, _body = http_get(server.port, "/metrics", timeout=10)
        if status != 200:
            raise BenchError(f"/metrics answered {status}")
        registers = _read_modbus(modbus_port)
        time.sleep(1.0)
        memory = server.status()
    finally:
        server.stop()
        broker.stop()
    return {"args": list(args), "stored_readings": state["newest_id"], "mqtt_published": via_mqtt,
            "modbus_registers_read": registers,
            "ingest_readings_per_s_one_connection": plan.stored_readings / seconds if seconds else None,
            "rss_after_bytes": memory.get("VmRSS"), "rss_peak_bytes": memory.get("VmHWM")}


def _publish_readings(broker: Broker, readings: list[dict[str, Any]]) -> int:
    """The readings as QoS 1 MQTT messages on the default ingest topic, one each, acknowledged."""
    import json

    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-sensor", clean_session=True)
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    try:
        infos = [client.publish("fdedge/bench-mqtt/reading", json.dumps(r), qos=1) for r in readings]
        for info in infos:
            info.wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()
    return len(readings)


def _read_modbus(port: int) -> int:
    """Unit 1's twelve input registers through pymodbus's own client: the server has answered."""
    from pymodbus.client import ModbusTcpClient

    client = ModbusTcpClient("127.0.0.1", port=port, timeout=5)
    try:
        if not client.connect():
            raise BenchError(f"no Modbus server on port {port}")
        answer = client.read_input_registers(0, count=12, device_id=1)
        if answer.isError():
            raise BenchError(f"Modbus read failed: {answer}")
        return len(answer.registers)
    finally:
        client.close()
