"""Operational routes: liveness, readiness, Prometheus metrics, model manifest, pages."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response

from edge.appliance import Appliance
from edge.errors import NotFound, Unavailable
from edge.store import reading_queries as queries

MIN_FREE_BYTES = 16 * 1024 * 1024
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; object-src 'none'; "
                               "base-uri 'none'; frame-ancestors 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def _app(request: Request) -> Appliance:
    return request.app.state.appliance


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


CAP_SLACK_PAGES = 16  # fewer free pages than this under --max-db-mb: the next batch will not fit


def _probe(conn: sqlite3.Connection) -> str | None:
    conn.execute("BEGIN IMMEDIATE")  # takes the write lock: proves the database is writable now
    conn.execute("ROLLBACK")
    # fetchall: never leave a statement open on the writer's connection
    cap = conn.execute("PRAGMA max_page_count").fetchall()[0][0]
    used = conn.execute("PRAGMA page_count").fetchall()[0][0] - conn.execute("PRAGMA freelist_count").fetchall()[0][0]
    if cap - used < CAP_SLACK_PAGES:
        return "the database reached its size cap (--max-db-mb): ingest answers 503 until retention makes room"
    return None


async def readyz(request: Request) -> Response:
    app = _app(request)
    problems: list[str] = []
    if not app.writer.alive:
        problems.append("the writer thread is not running")
    else:
        writer = app.writer
        try:
            full = await asyncio.wait_for(writer.call(_probe), 3.0)
            if not full and writer.max_bytes and await writer.call(lambda conn: writer.wal_over_cap()):
                full = ("the database and its WAL reached the size cap (--max-db-mb): a reader keeps the WAL "
                        "from being checkpointed; ingest answers 503 until it is released")
            if full:
                problems.append(full)
        except TimeoutError:
            problems.append("the database did not answer within 3 s")
        except Unavailable as exc:
            problems.append(exc.message)
    if app.integrity is not None and app.integrity.problem:
        problems.append(app.integrity.problem)
    free = app.writer.reserve.usable_bytes()
    if free is None:
        problems.append(f"cannot stat the data directory {app.settings.db_path.parent}")
    elif free < MIN_FREE_BYTES:
        paused = " (ingest is paused)" if app.writer.reserve.given_up else ""
        problems.append(f"only {free // 1024} KiB free on the database's disk{paused}")
    if problems:
        return JSONResponse({"status": "unavailable", "problems": problems}, status_code=503)
    answer: dict[str, object] = {"status": "ready", "model": app.model.name, "version": app.model.version}
    if app.integrity is not None:
        answer["integrity"] = app.integrity.state
    if app.mqtt is not None:  # reported, never a reason to be unready: HTTP ingest works without it
        answer["mqtt"] = app.mqtt.report()
    return JSONResponse(answer)


async def metrics(request: Request) -> Response:
    return Response(_app(request).metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")


async def storage(request: Request) -> Response:
    """What the database costs the card: sizes, bytes written per reading and per day, the card's
    estimated life, the integrity check and the rollups."""
    app = _app(request)
    path = app.settings.db_path
    answer = await app.readers.run(queries.storage)
    answer["database"] = str(path)
    answer["file_bytes"] = _size(path)
    answer["wal_bytes"] = _size(Path(str(path) + "-wal"))
    answer["cap_bytes"] = app.writer.max_bytes or None
    answer["wear"] = app.wear.report() if app.wear is not None else None
    answer["integrity"] = ({"state": app.integrity.state, "detail": app.integrity.detail}
                           if app.integrity is not None else None)
    return JSONResponse(answer)


async def uplink(request: Request) -> Response:
    """Where the uplink stands: connected or not, its cursor, how far behind (rows, seconds)."""
    link = _app(request).uplink
    return JSONResponse(link.status() if link is not None else {"enabled": False})


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


async def model(request: Request) -> Response:
    return JSONResponse(_app(request).model_info())


def page(filename: str):
    async def endpoint(request: Request) -> Response:
        path: Path = _app(request).settings.web_dir / filename
        if not path.is_file():
            raise NotFound(f"page {filename} is not installed in {_app(request).settings.web_dir}")
        return FileResponse(path, media_type="text/html; charset=utf-8", headers=PAGE_HEADERS)
    endpoint.__name__ = filename.replace(".", "_")
    return endpoint
