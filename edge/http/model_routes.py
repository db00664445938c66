"""Model management over HTTP (`/api/models*`, admin only, off without an admin token): the model
store of edge/scoring/model_store.py, as `fdedge model` works it from the command line.

Unpacking, loading and checking a model take tens to hundreds of milliseconds of CPU, so they run
in a worker thread; the event loop keeps serving ingest. An activation checks the model (its
manifest's parity samples re-run through the runtime path) before it records it active, then
swaps it in on the writer thread between two groups; one model change runs at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from edge.appliance import Appliance
from edge.errors import ModelRejected, NotFound, Unavailable
from edge.fdrest import format_time
from edge.http.ingest_routes import read_body
from edge.http.params import instant_param, int_param
from edge.scoring import model_store, shadow_compare
from edge.scoring.model_store import ModelStore

MAX_UPLOAD_BYTES = 64 * 1024 * 1024  # a request's body (the archive as sent); unpacked: model_store's bound


def _app(request: Request) -> Appliance:
    return request.app.state.appliance


def _store(app: Appliance) -> ModelStore:
    if app.models is None:
        raise Unavailable("this appliance runs without a model store", reason="no_model_store")
    return app.models


def _listing(app: Appliance, store: ModelStore) -> dict[str, Any]:
    running = app.shadow
    return {"versions": store.list(), **store.state(), "scoring": app.model_version,
            "shadow_status": running.status() if running is not None else None}


async def models(request: Request) -> Response:
    """GET /api/models: every kept version, the active, previous and shadow ones, and the one scoring."""
    app = _app(request)
    store = _store(app)
    return JSONResponse(await asyncio.to_thread(_listing, app, store))


def _add(store: ModelStore, data: bytes) -> tuple[str, bool]:
    """The archive written aside in the store's directory and added; (version, new)."""
    before = set(store.versions())
    fd, name = tempfile.mkstemp(dir=store.root, prefix=".upload-", suffix=".tar.gz")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        version = store.add(Path(name))
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)
    return version, version not in before


async def upload(request: Request) -> Response:
    """POST /api/models: a tar.gz of a converted model directory, checked and kept (not activated)."""
    app = _app(request)
    store = _store(app)
    length = request.headers.get("content-length")
    data = await read_body(request.receive, MAX_UPLOAD_BYTES, int(length) if length and length.isdigit() else None,
                           app.deadlines)
    if not data:
        raise ModelRejected("the body must be a tar.gz of a converted model directory (it is empty)",
                            reason="not_archive")
    async with app.model_lock:  # a concurrent activation or removal sees the store whole
        version, new = await asyncio.to_thread(_add, store, data)
        described = await asyncio.to_thread(store.describe, version)
    return JSONResponse({"version": version, "added": new, "model": described}, status_code=201 if new else 200)


def _check_and_record(store: ModelStore, version: str, threads: int) -> tuple[Any, dict[str, Any]]:
    model = store.activate(version, threads)  # loads, checks and replays before it records
    return model, model_store.replay(model)


async def activate(request: Request) -> Response:
    """POST /api/models/{version}/activate: checked, recorded active, switched in; a model that
    fails its check is refused with the reason and the active one keeps scoring."""
    app = _app(request)
    store = _store(app)
    version = request.path_params["version"]
    async with app.model_lock:
        previous = app.model_version
        try:
            model, replayed = await asyncio.to_thread(_check_and_record, store, version, app.settings.threads)
        except ModelRejected as exc:
            if exc.details.get("reason") == "unknown_version":
                raise NotFound(exc.message, reason="unknown_version", version=version[:40]) from None
            raise
        if app.model_version != version:
            await app.swap_model(model, version)
        state = await asyncio.to_thread(store.state)
    return JSONResponse({"active": version, "previous": state["previous"], "was_scoring": previous,
                         "replay": replayed, "name": model.name})


async def rollback(request: Request) -> Response:
    """POST /api/models/rollback: the previous version, checked, active and scoring again."""
    app = _app(request)
    store = _store(app)
    async with app.model_lock:
        version, model = await asyncio.to_thread(store.rollback_model, app.settings.threads)
        if app.model_version != version:
            await app.swap_model(model, version)
        state = await asyncio.to_thread(store.state)
    return JSONResponse({"active": version, "previous": state["previous"], "name": model.name})


def _check_shadow(store: ModelStore, version: str, threads: int) -> tuple[Any, dict[str, Any]]:
    model = store.shadow(version, threads)  # loads, checks and replays before it records
    return model, model_store.replay(model)


async def shadow(request: Request) -> Response:
    """POST /api/models/{version}/shadow: checked as an activation is, recorded as the shadow and
    started: it scores every reading stored from now on beside the active model, answering none."""
    app = _app(request)
    store = _store(app)
    version = request.path_params["version"]
    async with app.model_lock:
        try:
            model, replayed = await asyncio.to_thread(_check_shadow, store, version, 1)
        except ModelRejected as exc:
            if exc.details.get("reason") == "unknown_version":
                raise NotFound(exc.message, reason="unknown_version", version=version[:40]) from None
            raise
        await app.set_shadow(model, version)
    return JSONResponse({"shadow": version, "active": app.model_version, "replay": replayed, "name": model.name})


async def shadow_off(request: Request) -> Response:
    """POST /api/models/shadow/off, or DELETE /api/models/{version}/shadow (that version only): no
    shadow scores any more; its rows stay for comparison until retention removes them."""
    app = _app(request)
    store = _store(app)
    version = request.path_params.get("version")
    async with app.model_lock:
        current = await asyncio.to_thread(lambda: store.state()["shadow"])
        if version is not None and current != version:
            raise NotFound(f"model {version[:40]} is not the shadow", reason="not_shadow", shadow=current)
        was = await asyncio.to_thread(store.shadow_off)
        await app.set_shadow(None, None)
    return JSONResponse({"shadow": None, "was": was})


async def compare(request: Request) -> Response:
    """GET /api/models/{version}/compare: the shadow's faults against the answering model's, over the
    readings both scored (optionally start/end and machine): per fault mean and max absolute
    difference, alarm agreement, and the `top` readings where they disagree most."""
    app = _app(request)
    store = _store(app)
    version = request.path_params["version"]
    try:
        await asyncio.to_thread(store.path, version)
    except ModelRejected as exc:  # a version never kept
        raise NotFound(exc.message, reason="unknown_version", version=version[:40]) from None
    params = request.query_params
    start, end = (format_time(instant_param(params, key, datetime.now(UTC))) if params.get(key) else None
                  for key in ("start", "end"))
    top = int_param(params, "top", 10, 0, 100)
    limit = int_param(params, "limit", shadow_compare.MAX_ROWS, 1, shadow_compare.MAX_ROWS)
    s = app.settings
    result = await app.readers.run(functools.partial(
        shadow_compare.compare, version=version, warning=s.warning_threshold, alarm=s.alarm_threshold,
        start=start, end=end,
        machine=params.get("machine") or None, top=top, limit=limit))
    running = app.shadow
    result["shadow_status"] = running.status() if running is not None and running.version == version else None
    return JSONResponse(result)
