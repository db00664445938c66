"""A real Mosquitto (Debian's) on a free loopback port, for the MQTT tests.

`Mosquitto(dir).start()` writes its config, starts the broker and waits until it accepts
connections; `stop()` ends it (SIGTERM, then SIGKILL), and `start()` again brings it back on the
same port (a broker outage). With `users={"name": "password"}` anonymous clients are refused; with
`persistent=True` sessions and their queued messages survive that restart (as a central broker's do).
With `tls=Pki(dir)` it listens for mqtts:// only, with a server certificate from that test CA,
and refuses clients without a certificate the same CA signed.

`Central`: a paho subscriber playing the central side of the uplink, unpacking its messages."""

from __future__ import annotations

import getpass
import json
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.harness import free_port

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


OPENSSL = shutil.which("openssl") or "/usr/bin/openssl"


class Pki:
    """A plant's own CA, a broker certificate for 127.0.0.1 and a client certificate, made with
    Debian's openssl: what an mqtts:// broker on a plant network presents and wants."""

    def __init__(self, directory: Path) -> None:
        if not Path(OPENSSL).exists():
            pytest.skip("openssl is not installed (apt-get install openssl)")
        directory.mkdir(parents=True, exist_ok=True)
        self.ca, self.ca_key = directory / "ca.pem", directory / "ca.key"
        self.server, self.server_key = directory / "broker.pem", directory / "broker.key"
        self.client, self.client_key = directory / "client.pem", directory / "client.key"
        self._run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=FD-Edge test plant CA",
                  "-keyout", self.ca_key, "-out", self.ca)
        self._sign(directory, "broker", self.server, self.server_key, "subjectAltName=IP:127.0.0.1")
        self._sign(directory, "edge-client", self.client, self.client_key, "extendedKeyUsage=clientAuth")

    def _sign(self, directory: Path, name: str, cert: Path, key: Path, extension: str) -> None:
        request = directory / f"{name}.csr"
        self._run("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", key, "-out", request)
        extfile = directory / f"{name}.ext"
        extfile.write_text(extension + "\n")
        self._run("x509", "-req", "-in", request, "-CA", self.ca, "-CAkey", self.ca_key, "-CAcreateserial",
                  "-days", "2", "-extfile", extfile, "-out", cert)

    @staticmethod
    def _run(*args: object) -> None:
        subprocess.run([OPENSSL, *map(str, args)], check=True, capture_output=True)


class Mosquitto:
    def __init__(self, directory: Path, *, users: dict[str, str] | None = None, port: int | None = None,
                 persistent: bool = False, tls: Pki | None = None) -> None:
        self.tls = tls
        self.directory = directory
        self.port = port or free_port()
        self.users = users
        self.persistent = persistent
        self.process: subprocess.Popen | None = None
        directory.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://127.0.0.1:{self.port}"

    def _config(self) -> Path:
        # Started as root, mosquitto drops to the `mosquitto` user, which can neither read the
        # password file nor write its session file in pytest's private tmp dir: stay the test's user.
        lines = [f"user {getpass.getuser()}", f"listener {self.port} 127.0.0.1", "log_dest stderr",
                 "log_type error", "log_type warning", "max_queued_messages 100000"]
        if self.tls:
            lines += [f"cafile {self.tls.ca}", f"certfile {self.tls.server}", f"keyfile {self.tls.server_key}",
                      "require_certificate true", "tls_version tlsv1.2"]
        if self.persistent:
            lines += ["persistence true", f"persistence_location {self.directory}/", "autosave_interval 1"]
        else:
            lines.append("persistence false")
        if self.users:
            passwords = self.directory / "passwords"
            passwords.write_text("")
            for name, password in self.users.items():
                subprocess.run(["mosquitto_passwd", "-b", str(passwords), name, password], check=True)
            lines += ["allow_anonymous false", f"password_file {passwords}"]
        else:
            lines.append("allow_anonymous true")
        config = self.directory / "mosquitto.conf"
        config.write_text("\n".join(lines) + "\n")
        return config

    def start(self, timeout: float = 10) -> Mosquitto:
        if not Path(MOSQUITTO).exists():
            pytest.skip("Debian's mosquitto is not installed (apt-get install mosquitto)")
        log = open(self.directory / f"mosquitto-{self.port}.log", "ab")
        self.process = subprocess.Popen([MOSQUITTO, "-c", str(self._config())], stdout=log, stderr=log)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mosquitto exited {self.process.returncode}: {self.read_log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not listen on {self.port}: {self.read_log()}")

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def read_log(self) -> str:
        path = self.directory / f"mosquitto-{self.port}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def __enter__(self) -> Mosquitto:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Central:
    """The central side: subscribes `topic` at QoS 1 with a persistent session (what arrives while
    it reconnects is queued for it), and unpacks the uplink's messages as they come."""

    def __init__(self, broker: Mosquitto, topic: str = "#", client_id: str = "central") -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.topic = topic
        self.messages: list[tuple[str, dict]] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda c, u, mid, rc, p: self._subscribed.set()
        self.client.on_message = self._got
        self.client.reconnect_delay_set(1, 1)
        if broker.tls:
            self.client.tls_set(ca_certs=str(broker.tls.ca), certfile=str(broker.tls.client),
                                keyfile=str(broker.tls.client_key))
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()
        assert self._subscribed.wait(10), "the central subscriber was not subscribed in 10 s"

    def _got(self, client, userdata, message) -> None:
        with self._lock:
            self.messages.append((message.topic, json.loads(message.payload)))

    def readings(self) -> list[dict]:
        """Every reading received, in arrival order, with its message's topic and machine."""
        with self._lock:
            messages = list(self.messages)
        return [{**r, "topic": topic, "machine": m["machine"], "model_version": m["model_version"],
                 "model_store_version": m.get("model_store_version")}
                for topic, m in messages if topic.endswith("/readings") for r in m["readings"]]

    def alarms(self) -> list[dict]:
        with self._lock:
            return [m for topic, m in self.messages if topic.endswith("/alarms")]

    def wait_for(self, condition, timeout: float = 30, what: str = "the condition") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition(self):
                return
            time.sleep(0.05)
        raise AssertionError(f"{what} did not hold within {timeout} s ({len(self.messages)} messages)")

    def keys(self) -> set[str]:
        return {r["key"] for r in self.readings()}

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
