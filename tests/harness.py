"""The test suite's harness (plain helpers; the fixtures built on them are in tests/conftest.py).

- `Server`: FD-Edge under real uvicorn on a free loopback port with its own database. The one
  server harness of the suite, in two modes: a subprocess (`python -m edge serve`, or another
  command such as an installed `fdedge`), or in process (the app, or any ASGI app, under uvicorn
  in a thread of the test process) for tests that reach into the running appliance or
  monkeypatch it. Fixture: `server_factory`; module-scoped fixtures use it as a context manager.
- `AppClient`: the Starlette test client the `make_client` and `client` fixtures hand out.
- `SSE`: GET /events through an `AppClient`, read until a condition holds.
- a tiny linear ONNX model with a known answer, and readings to send it.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from starlette.testclient import TestClient

from edge.fdrest import CATALOGUE, FAULTS, FEATURES

REPO = Path(__file__).resolve().parent.parent
BUNDLED = REPO / "models" / "default"
FDREST = Path(os.environ.get("FDREST_DIR", REPO.parent.parent / "shared" / "fdrest"))
if not FDREST.exists():
    FDREST = REPO.parent / "shared" / "fdrest"


# -- the model and its readings ---------------------------------------------------------------------

def make_linear_model(directory: Path, seed: int = 0) -> dict[str, np.ndarray]:
    """y = ((x * xs + xo) @ W + b) * ys + yo, written in the converted-artifact format."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    params = {
        "W": rng.normal(size=(35, 8)).astype(np.float32),
        "b": rng.normal(size=8).astype(np.float32),
        "x_scale": rng.uniform(0.5, 2, 35), "x_offset": rng.normal(size=35),
        "y_scale": rng.uniform(5, 20, 8), "y_offset": rng.uniform(0, 10, 8),
    }
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["features", "W"], ["h"]), helper.make_node("Add", ["h", "b"], ["out"])],
        "linear",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 35])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", 8])],
        initializer=[numpy_helper.from_array(params["W"], "W"), numpy_helper.from_array(params["b"], "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    directory.mkdir(parents=True, exist_ok=True)
    onnx.save(model, directory / "model.onnx")
    np.savez(directory / "scalers.npz", **{k: params[k] for k in ("x_scale", "x_offset", "y_scale", "y_offset")})
    (directory / "manifest.json").write_text(json.dumps({
        "format": 1, "name": "linear-test", "version": "test", "onnx": "model.onnx", "scalers": "scalers.npz",
        "input_name": "features", "output_name": "out", "opset": 17, "features": list(FEATURES),
        "faults": list(FAULTS), "catalogue": list(CATALOGUE),
    }))
    return params


def linear_expected(params: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    scaled = (x * params["x_scale"] + params["x_offset"]).astype(np.float32)
    return (scaled @ params["W"] + params["b"]).astype(np.float64) * params["y_scale"] + params["y_offset"]


def model_archive(directory: Path, *extra: tuple[Any, bytes]) -> bytes:
    """A tar.gz of a converted model directory as `POST /api/models` takes it (under `model/`),
    with extra (TarInfo, data) members added after it."""
    import io
    import tarfile
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        tar.add(directory, arcname="model")
        for info, data in extra:
            tar.addfile(info, io.BytesIO(data) if data else None)
    return out.getvalue()


def reading(seed: int = 0, **extra) -> dict:
    rng = np.random.default_rng(seed)
    body = {name: round(float(v), 4) for name, v in zip(FEATURES, rng.normal(size=35), strict=True)}
    body.update(extra)
    return body


# -- the server -------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """FD-Edge under real uvicorn on a free loopback port, with its own database.

    Subprocess (the default): `python -m edge serve --data-dir DATA_DIR --model-dir MODEL_DIR ARGS`
    (or `command` instead of `python -m edge`), output appended to DATA_DIR/../server-PORT.log.
    `stop()` is a SIGTERM (SIGKILL if it does not end in 10 s), `kill()` a SIGKILL (a power cut:
    committed rows are on disk), and so is `stop()` with `power_cut=True`; `start()` again
    restarts it on the same port and database.

    In process (`settings=` or `app=`): create_app(settings), or the ASGI `app` itself, under
    uvicorn (httptools, asyncio; `uvicorn=` adds or overrides config options) in a thread of the
    test process, so a test can reach into the running appliance (`appliance`, `call`) or patch
    knobs a subprocess cannot reach, while its clients use real sockets.

    Either way a context manager (`with Server(...) as server:` starts it unless it is running,
    and stops it), and the `server_factory` fixture stops every server it made at teardown.
    """

    def __init__(self, data_dir: Path | None = None, model_dir: Path | None = None, *, port: int | None = None,
                 args: Sequence[str] = (), env: dict[str, str] | None = None, clean_env: bool = False,
                 command: Sequence[str] | None = None, cwd: Path = REPO,
                 settings: Any = None, app: Any = None, uvicorn: dict[str, Any] | None = None,
                 power_cut: bool = False) -> None:
        self.in_process = settings is not None or app is not None
        if settings is not None and data_dir is None:
            data_dir = settings.data_dir
        if not self.in_process and (data_dir is None or model_dir is None):
            raise TypeError("a subprocess server needs data_dir and model_dir")
        self.data_dir, self.model_dir = data_dir, model_dir
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = list(args)
        base = {k: v for k, v in os.environ.items() if not (clean_env and k.startswith("FDEDGE_"))}
        self.env = {**base, **(env or {})}
        self.command = list(command) if command is not None else [sys.executable, "-m", "edge"]
        self.cwd = cwd
        self.settings, self.app, self.uvicorn_options = settings, app, dict(uvicorn or {})
        self.proc: subprocess.Popen | None = None
        self._log = None
        self._uvicorn = None
        self._thread: threading.Thread | None = None
        self._given_app = app
        self.power_cut = power_cut

    # -- both modes ------------------------------------------------------------------------------

    def start(self, timeout: float = 30, probe: str = "/readyz") -> Server:
        """Started once `probe` answers 200 (`/healthz` for a server that must come up unready)."""
        if self.in_process:
            self._start_thread(timeout)
        else:
            self._start_process(timeout, probe)
        return self

    def stop(self) -> None:
        if self.power_cut:
            self.kill()
            return
        if self.in_process:
            self._stop_thread()
            return
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._close_log()

    def kill(self) -> None:
        """SIGKILL (in process: uvicorn's forced exit, no graceful shutdown)."""
        if self.in_process:
            self._stop_thread(force=True)
            return
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._close_log()

    @property
    def running(self) -> bool:
        if self.in_process:
            return self._thread is not None and self._thread.is_alive()
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self) -> Server:
        return self if self.running else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- subprocess ------------------------------------------------------------------------------

    @property
    def log_path(self) -> Path:
        return Path(self.data_dir).parent / f"server-{self.port}.log"

    def _cmdline(self) -> list[str]:
        return [*self.command, "serve", "--host", "127.0.0.1", "--port", str(self.port),
                "--data-dir", str(self.data_dir), "--model-dir", str(self.model_dir), *self.args]

    def _spawn(self) -> subprocess.Popen:
        self._close_log()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")
        return subprocess.Popen(self._cmdline(), env=self.env, stdout=self._log, stderr=subprocess.STDOUT,
                                cwd=self.cwd)

    def _start_process(self, timeout: float, probe: str = "/readyz") -> None:
        self.proc = self._spawn()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self.read_log()}")
            try:
                with urllib.request.urlopen(self.url + probe, timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"server not ready in {timeout}s: {self.read_log()}")

    def refused_start(self, timeout: float = 60) -> tuple[int, str]:
        """Start a server that must refuse to: its exit code and what it printed."""
        if self.in_process:
            raise TypeError("refused_start runs `fdedge serve` as a subprocess")
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        self.proc = self._spawn()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"the server started although it should have refused: {self.read_log()}") from None
        finally:
            self._close_log()
        return self.proc.returncode, self.log_path.read_bytes()[offset:].decode(errors="replace")

    def read_log(self) -> str:
        """The end of the subprocess's output (stdout and stderr)."""
        try:
            return self.log_path.read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    # -- in process ------------------------------------------------------------------------------

    def _start_thread(self, timeout: float) -> None:
        import uvicorn
        if self._given_app is None:
            from edge.http.app import create_app
            self.app = create_app(self.settings)  # a fresh app on every start, as a restart would
        options = {"loop": "asyncio", "http": "httptools", "log_level": "warning", "access_log": False,
                   "lifespan": "on", **self.uvicorn_options}
        self._uvicorn = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port, **options))
        self._thread = threading.Thread(target=self._uvicorn.run, name="uvicorn-test", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._uvicorn.started and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        if not self._uvicorn.started:
            self._stop_thread(force=True)
            raise RuntimeError(f"the in-process server did not start in {timeout}s")

    def _stop_thread(self, force: bool = False) -> None:
        if self._uvicorn is not None:
            self._uvicorn.force_exit = self._uvicorn.force_exit or force
            self._uvicorn.should_exit = True
        if self._thread is not None:
            self._thread.join(15)
        self._uvicorn = self._thread = None

    @property
    def appliance(self):
        """The running appliance (in process only)."""
        return self.app.state.appliance

    def call(self, fn: Callable[[], Any], timeout: float = 10) -> Any:
        """Run fn on the in-process server's event loop (for its asyncio objects); its result."""
        async def run():
            return fn()
        return asyncio.run_coroutine_threadsafe(run(), self.appliance.loop).result(timeout)

    # -- HTTP, for tests that only need JSON back --------------------------------------------------

    def request(self, method: str, path: str, body: object = None, headers: dict | None = None):
        """(status, parsed JSON body) of one request; a JSON body is sent as such."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json", **(headers or {})})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")

    def get(self, path: str, **params) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        status, body = self.request("GET", path + query)
        assert status == 200, (path, status, body)
        return body

    def send(self, reading: dict) -> dict[str, float]:
        status, body = self.request("POST", "/send", reading)
        assert status == 200, (status, body)
        return body[0]

    def latest(self, machine: str | None = None) -> dict:
        params = {"limit": 1, **({"machine": machine} if machine else {})}
        return self.get("/api/latest", **params)["readings"][0]


# -- the app client ---------------------------------------------------------------------------------

class AppClient(TestClient):
    """Starlette's test client, started (lifespan and all) when the `make_client` fixture hands
    it out; `with make_client(...) as client:` closes it at the end of the block (a restart of
    the appliance), and the fixture closes whatever is still open at teardown."""

    def __enter__(self) -> AppClient:
        if getattr(self, "portal", None) is None:
            super().__enter__()
        return self


class SSE:
    """GET /events on an AppClient's own event loop (the one the writer publishes to), parsed into
    events, until `want(events)` holds; then the client disconnects. The test client itself
    cannot read an endless response. `status` is the answer's status; a non-200 ends at once."""

    def __init__(self, client: TestClient, path: str, headers: dict | None = None,
                 want: Callable[[list[dict]], bool] = lambda events: False, timeout: float = 10):
        self.client, self.path, self.want, self.timeout = client, path, want, timeout
        sent = {"accept": "text/event-stream", **(headers or {})}
        self.headers = [(k.lower().encode(), v.encode()) for k, v in sent.items()]
        self.status: int | None = None
        self.events: list[dict] = []
        self.body = b""
        self.started = threading.Event()  # the first bytes (hello, or an error) arrived
        self.future = client.portal.start_task_soon(self._run)
        assert self.started.wait(timeout), f"no answer from {path} in {timeout} s"

    async def _run(self) -> None:
        import anyio
        done = anyio.Event()
        rest = b""

        async def receive():
            await done.wait()
            return {"type": "http.disconnect"}

        async def send(message):
            nonlocal rest
            if message["type"] == "http.response.start":
                self.status = message["status"]
                if self.status != 200:
                    self.started.set()
                return
            self.body += message.get("body", b"")
            rest += message.get("body", b"")
            *frames, rest = rest.split(b"\r\n\r\n")
            for text in frames:
                fields = dict(line.split(": ", 1) for line in text.decode().split("\r\n") if not line.startswith(":"))
                if "data" in fields:
                    fields["data"] = json.loads(fields["data"])
                self.events.append(fields)
            if self.events:
                self.started.set()
            if self.status != 200 or self.want(self.events):
                done.set()

        path, _, query = self.path.partition("?")
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
                 "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": query.encode(),
                 "root_path": "", "headers": self.headers, "client": ("127.0.0.1", 1), "server": ("test", 80)}
        with anyio.fail_after(self.timeout):
            await self.client.app(scope, receive, send)

    def result(self) -> list[dict]:
        self.future.result(timeout=self.timeout + 5)
        return self.events

    def readings(self) -> list[dict]:
        return [e for e in self.result() if e.get("event") == "reading"]


def readings_at_least(n: int) -> Callable[[list[dict]], bool]:
    return lambda events: sum(e.get("event") == "reading" for e in events) >= n


def first_event(events: list[dict]) -> bool:
    return bool(events)
