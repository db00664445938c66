"""Shared fixtures: a tiny linear ONNX model with a known answer, settings on a temporary
database, the Starlette test client, and a real uvicorn server on a free port."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from edge.fdrest import CATALOGUE, FAULTS, FEATURES

REPO = Path(__file__).resolve().parent.parent
BUNDLED = REPO / "models" / "default"
FDREST = Path(os.environ.get("FDREST_DIR", REPO.parent.parent / "shared" / "fdrest"))
if not FDREST.exists():
    FDREST = REPO.parent / "shared" / "fdrest"


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


@pytest.fixture(scope="session")
def linear_model(tmp_path_factory) -> tuple[Path, dict[str, np.ndarray]]:
    directory = tmp_path_factory.mktemp("linear-model")
    return directory, make_linear_model(directory)


@pytest.fixture
def settings(tmp_path, linear_model):
    from edge.settings import Settings
    return Settings(data_dir=tmp_path / "data", model_dir=linear_model[0], retention_interval=3600)


def reading(seed: int = 0, **extra) -> dict:
    rng = np.random.default_rng(seed)
    body = {name: round(float(v), 4) for name, v in zip(FEATURES, rng.normal(size=35))}
    body.update(extra)
    return body


@pytest.fixture
def client(settings):
    from starlette.testclient import TestClient
    from edge.http.app import create_app
    with TestClient(create_app(settings)) as c:
        yield c


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`python -m edge serve` as a real subprocess on loopback."""

    def __init__(self, data_dir: Path, model_dir: Path, port: int | None = None, env: dict | None = None,
                 args: list[str] | None = None) -> None:
        self.data_dir, self.model_dir = data_dir, model_dir
        self.port = port or free_port()
        self.env = {**os.environ, **(env or {})}
        self.args = args or []
        self.proc: subprocess.Popen | None = None
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> "Server":
        self.log = open(self.data_dir.parent / f"server-{self.port}.log", "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edge", "serve", "--host", "127.0.0.1", "--port", str(self.port),
             "--data-dir", str(self.data_dir), "--model-dir", str(self.model_dir), *self.args],
            env=self.env, stdout=self.log, stderr=subprocess.STDOUT, cwd=REPO)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self.read_log()}")
            try:
                with urllib.request.urlopen(self.url + "/readyz", timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"server not ready in {timeout}s: {self.read_log()}")

    def read_log(self) -> str:
        self.log.flush()
        return (self.data_dir.parent / f"server-{self.port}.log").read_text(errors="replace")[-3000:]

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if getattr(self, "log", None):
            self.log.close()


@pytest.fixture
def server_factory(tmp_path):
    servers: list[Server] = []

    def make(model_dir: Path, **kwargs) -> Server:
        server = Server(tmp_path / "data", model_dir, **kwargs)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()
