"""Servers under test as subprocesses on free loopback ports, each with its own temporary
data directory, always cleaned up (context manager + atexit)."""

from __future__ import annotations

import atexit
import http.client
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import DURABLE_LOG, REPO, BenchError, free_port

_LIVE: set[Server] = set()


def _cleanup_all() -> None:
    for server in list(_LIVE):
        server.stop()


atexit.register(_cleanup_all)


# The interpreter `python -m edge serve` runs under. The development venv carries the build and
# test extras, whose imports some runtime libraries pick up (engineio's client takes `requests`
# when it is installed: 5 MB of RSS); `--runtime-python` points at a runtime-only install, which
# is what the containers ship, so memory figures are the appliance's.
RUNTIME_PYTHON = [sys.executable]


def use_runtime_python(path: str) -> None:
    RUNTIME_PYTHON[0] = path


def child_env() -> dict[str, str]:
    """The caller's environment without FDEDGE_* settings (a token would turn every request into 401)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FDEDGE_")}
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def http_get(port: int, path: str, timeout: float = 2.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def http_post(port: int, path: str, body: bytes, content_type: str = "application/json",
              timeout: float = 30.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", path, body=body, headers={"Content-Type": content_type})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


class Server:
    """One server process. `kind` is "edge" (`python -m edge serve`), "bare" or "bare-durable"
    (bench/bare_app.py's `app` and `durable`)."""

    def __init__(self, kind: str, root: Path, *, model_dir: Path | None = None, sync: str = "full",
                 data_dir: Path | None = None, name: str | None = None, tree: Path = REPO,
                 args: tuple[str, ...] = ()) -> None:
        self.kind, self.sync, self.model_dir = kind, sync, model_dir
        self.args = args  # more `fdedge serve` flags
        self.tree = tree  # the checkout whose `python -m edge` runs (cwd comes first on sys.path)
        self.name = name or (kind if kind != "edge" else f"edge-{sync}")
        self.root = root
        self.data_dir = data_dir or Path(tempfile.mkdtemp(prefix=f"{self.name}-", dir=root))
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.log_path = root / f"{self.name}-{self.port}.log"
        self.started_at = 0.0
        self.ready_seconds: float | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        if self.kind != "edge":
            # The same uvicorn settings as `fdedge serve` (edge/serve.py): one worker, uvloop,
            # httptools, no access log, no server header.
            app = "bench.bare_app:durable" if self.kind == "bare-durable" else "bench.bare_app:app"
            return [sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1",
                    "--port", str(self.port), "--workers", "1", "--loop", "uvloop", "--http", "httptools",
                    "--no-access-log", "--no-server-header", "--log-level", "warning",
                    "--timeout-keep-alive", "30"]
        assert self.model_dir is not None
        return [RUNTIME_PYTHON[0], "-m", "edge", "serve", "--host", "127.0.0.1", "--port", str(self.port),
                "--data-dir", str(self.data_dir), "--model-dir", str(self.model_dir), "--sync", self.sync,
                "--log-level", "warning", *self.args]

    def start(self, timeout: float = 60.0) -> Server:
        self.log = open(self.log_path, "ab")
        self.started_at = time.perf_counter()
        env = child_env()
        if self.kind == "bare-durable":
            env[DURABLE_LOG] = str(self.data_dir / "durable.log")
        cwd = self.tree if self.kind == "edge" else REPO
        self.proc = subprocess.Popen(self.command(), cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                     stdout=self.log, stderr=subprocess.STDOUT)
        _LIVE.add(self)
        probe = "/readyz" if self.kind == "edge" else "/"  # the bare apps have no GET route
        deadline = self.started_at + timeout
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"{self.name} exited with code {self.proc.returncode}:\n{self.log_tail()}")
            try:
                status, _ = http_get(self.port, probe, timeout=1.0)
                if status == 200 or (self.kind != "edge" and status in (404, 405)):
                    self.ready_seconds = time.perf_counter() - self.started_at
                    return self
            except OSError:
                pass
            time.sleep(0.01)
        self.stop()
        raise BenchError(f"{self.name} was not ready within {timeout:.0f} s:\n{self.log_tail()}")

    def log_tail(self, chars: int = 3000) -> str:
        try:
            self.log.flush()
            return self.log_path.read_text(errors="replace")[-chars:]
        except (OSError, ValueError, AttributeError):
            return ""

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def status(self) -> dict[str, int]:
        """VmRSS / VmHWM in bytes from /proc/<pid>/status."""
        out: dict[str, int] = {}
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "Threads"):
                parts = value.split()
                out[key] = int(parts[0]) * (1024 if len(parts) > 1 and parts[1] == "kB" else 1)
        return out

    def cpu_seconds(self) -> float:
        """user + system CPU time of the server process so far."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        _LIVE.discard(self)
        if getattr(self, "log", None) and not self.log.closed:
            self.log.close()

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


class Workspace:
    """A temporary directory for data dirs and logs, removed at the end unless --keep."""

    def __init__(self, keep: bool = False, parent: Path | None = None) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="fdedge-bench-", dir=parent))
        self.keep = keep

    def __enter__(self) -> Path:
        return self.path

    def __exit__(self, *exc: Any) -> None:
        _cleanup_all()
        if not self.keep:
            shutil.rmtree(self.path, ignore_errors=True)
