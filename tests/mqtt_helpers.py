"""A real Mosquitto (Debian's) on a free loopback port, for the MQTT tests.

`Mosquitto(dir).start()` writes its config, starts the broker and waits until it accepts
connections; `stop()` ends it (SIGTERM, then SIGKILL), and `start()` again brings it back on the
same port (a broker outage). With `users={"name": "password"}` anonymous clients are refused."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.harness import free_port

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


class Mosquitto:
    def __init__(self, directory: Path, *, users: dict[str, str] | None = None, port: int | None = None) -> None:
        self.directory = directory
        self.port = port or free_port()
        self.users = users
        self.process: subprocess.Popen | None = None
        directory.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def _config(self) -> Path:
        # Started as root, mosquitto drops to the `mosquitto` user, which cannot read the password
        # file in pytest's private tmp dir: stay the user the tests run as.
        lines = [f"user {pwd.getpwuid(os.getuid()).pw_name}",
                 f"listener {self.port} 127.0.0.1", "persistence false", "log_dest stderr",
                 "log_type error", "log_type warning", "max_queued_messages 100000"]
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
