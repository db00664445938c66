"""Shared fixtures: a tiny linear ONNX model with a known answer, settings on a temporary
database, the app-client factory (`make_client`, and `client` for the default settings) and the
server factory (`server_factory`: the real server under uvicorn on a free loopback port).

The helpers behind them (and the readings to send) are plain functions and classes in
tests/harness.py; import those from there, never from a conftest or a test module. The
reliability report plugin (the `report` fixture, test-output/reliability.*) is loaded here for
the whole suite.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from tests.harness import AppClient, Server, make_linear_model

pytest_plugins = ["tests.conftest_reliability"]


@pytest.fixture(scope="session")
def linear_model(tmp_path_factory) -> tuple[Path, dict[str, np.ndarray]]:
    directory = tmp_path_factory.mktemp("linear-model")
    return directory, make_linear_model(directory)


@pytest.fixture
def settings(tmp_path, linear_model):
    from edge.settings import Settings
    return Settings(data_dir=tmp_path / "data", model_dir=linear_model[0], retention_interval=3600)


@pytest.fixture
def make_client(request):
    """make_client(settings=None, *, app=None, raise_server_exceptions=True, **overrides) -> AppClient

    Starlette's test client, started, on create_app(settings with `overrides` replaced) — by
    default the `settings` fixture's (temporary database, the linear model) — or on any ASGI
    `app`. `with make_client(...) as client:` closes it at the end of the block; whatever is
    still open is closed at teardown."""
    clients: list[AppClient] = []

    def make(settings=None, *, app=None, raise_server_exceptions: bool = True, **overrides) -> AppClient:
        if app is None:
            from edge.http.app import create_app
            base = settings if settings is not None else request.getfixturevalue("settings")
            app = create_app(replace(base, **overrides) if overrides else base)
        elif settings is not None or overrides:
            raise TypeError("settings are for create_app; an ASGI app brings its own")
        client = AppClient(app, raise_server_exceptions=raise_server_exceptions).__enter__()
        clients.append(client)
        return client

    yield make
    for client in reversed(clients):
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client):
    return make_client()


@pytest.fixture
def server_factory(tmp_path):
    """server_factory(model_dir, *, data_dir=tmp_path/"data", **Server options) -> Server (not started)

    Every server it made is stopped at teardown. The same data directory for every call by
    default: a second server is a restart on the same database (pass `port=` to keep the address).
    With `settings=` or `app=` the server runs in process (see tests/harness.py)."""
    servers: list[Server] = []

    def make(model_dir: Path | None = None, *, data_dir: Path | None = None, **kwargs) -> Server:
        if data_dir is None and kwargs.get("settings") is None and kwargs.get("app") is None:
            data_dir = tmp_path / "data"
        server = Server(data_dir, model_dir, **kwargs)
        servers.append(server)
        return server

    yield make
    for server in reversed(servers):
        server.stop()
