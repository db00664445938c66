"""Read routes: FD-REST's /history and /generate_csv, and the dashboard's JSON queries.

Queries run in the thread pool on per-thread read connections, so a slow export never
stalls ingest on the event loop.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from functools import partial

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from edge.appliance import Appliance
from edge.errors import BadRequest, NotFound
from edge.http.params import instant_param, int_param
from edge.http.responses import ClosingStreamingResponse
from edge.store import export, labelled_export, model_changes
from edge.store import reading_queries as queries
from edge.store.database import connect


def _close(chunks: Iterator[str], conn: sqlite3.Connection) -> None:
    chunks.close()  # type: ignore[attr-defined]
    conn.close()


MAX_HISTORY = 100_000  # one answer is built in memory; /generate_csv streams any number of rows


def _app(request: Request) -> Appliance:
    return request.app.state.appliance


def _int(request: Request, key: str, default: int, low: int, high: int) -> int:
    return int_param(request.query_params, key, default, low, high)


def _machine(request: Request) -> str | None:
    return request.query_params.get("machine") or None


async def _query(request: Request, fn, *args):
    return await _app(request).readers.run(fn, *args)


async def history(request: Request) -> Response:
    column = queries.metric(request.query_params.get("metric"))
    limit = _int(request, "limit", 100, 1, MAX_HISTORY)
    return JSONResponse(await _query(request, queries.history, column, limit, _machine(request)))


async def latest(request: Request) -> Response:
    limit = _int(request, "limit", 20, 1, 1000)
    return JSONResponse({"readings": await _query(request, queries.latest, _machine(request), limit)})


async def machines(request: Request) -> Response:
    app = _app(request)
    stale_after = app.settings.stale_after
    listed = await _query(request, queries.machines, stale_after)
    for machine in listed:
        machine["drift"] = app.drift.of(machine["machine"]) if app.drift is not None else None
    return JSONResponse({"machines": listed, "stale_after_s": stale_after})


async def model_changes_endpoint(request: Request) -> Response:
    """GET /api/model/changes?start=&end=&machine=: when the scoring model changed (the charts' marks)."""
    params = request.query_params
    start = instant_param(params, "start", datetime.now(UTC)) if params.get("start") else None
    end = instant_param(params, "end", datetime.now(UTC)) if params.get("end") else None
    return JSONResponse({"changes": await _query(request, model_changes.listing, start, end, _machine(request))})


async def series(request: Request) -> Response:
    params = request.query_params
    now = datetime.now(UTC)
    end = instant_param(params, "end", now)
    try:
        hour_before = end - timedelta(hours=1)
    except OverflowError:
        raise BadRequest("end is too early for the default one-hour range; give a start", field="end") from None
    start = instant_param(params, "start", hour_before)
    given = params.get("metrics") or "temperature"
    names = list(dict.fromkeys(n.strip() for n in given.split(",") if n.strip()))  # once each, in order
    if not names:
        raise BadRequest(f"metrics lists no names: {given[:64]!r}; give e.g. metrics=temperature,fault2",
                         field="metrics")
    if len(names) > len(queries.METRICS):
        raise BadRequest("too many metrics", field="metrics")
    columns = [queries.metric(n) for n in names]
    points = _int(request, "points", 600, 10, 5000)
    return JSONResponse(await _query(request, queries.series, start, end, columns, _machine(request), points))


async def count(request: Request) -> Response:
    flt = export.ReportFilter.parse(dict(request.query_params))
    return JSONResponse({"count": await _query(request, export.count, flt)})


async def generate_csv(request: Request) -> Response:
    """Streams from its own connection, so millions of rows cost constant memory."""
    labelled = request.query_params.get("labelled") or "0"
    if labelled not in ("0", "1"):
        raise BadRequest("labelled must be 1 (the labelled readings as training data) or 0", field="labelled")
    if labelled == "1":
        return await _labelled_csv(request)
    flt = export.ReportFilter.parse(dict(request.query_params))
    if not await _query(request, export.first_match, flt):
        what = f" with a fault >= {flt.threshold:g}" if flt.threshold is not None else ""
        zone = f" ({flt.zone.key})" if flt.zone else ""
        raise NotFound(f"no readings between {flt.start} and {flt.end}{zone}{what}")
    db_path = _app(request).settings.db_path
    readers = _app(request).readers

    async def rows() -> AsyncIterator[str]:
        """Each chunk is read in the read pool; the export has a connection of its own."""
        conn = await readers.call(partial(connect, db_path, readonly=True))
        chunks = export.export_csv(conn, flt)
        try:
            while (chunk := await readers.call(next, chunks, None)) is not None:
                yield chunk
        finally:
            await readers.call(_close, chunks, conn)

    name = f"fdedge_{flt.start}_{flt.end}.csv"
    return ClosingStreamingResponse(rows(), media_type="text/csv; charset=utf-8",
                             headers={"Content-Disposition": f'attachment; filename="{name}"'})



async def _labelled_csv(request: Request) -> Response:
    """The labelled readings in FD-REST's data.csv format (edge/store/labelled_export.py)."""
    machine, start, end = labelled_export.bounds(dict(request.query_params))
    if not await _query(request, labelled_export.first_match, machine, start, end):
        raise NotFound("no labelled readings" + (f" of machine {machine[:64]!r}" if machine else "")
                       + (" in those dates" if start or end else ""))
    db_path = _app(request).settings.db_path
    readers = _app(request).readers

    async def rows() -> AsyncIterator[str]:
        conn = await readers.call(partial(connect, db_path, readonly=True))
        chunks = labelled_export.export_csv(conn, machine, start, end)
        try:
            while (chunk := await readers.call(next, chunks, None)) is not None:
                yield chunk
        finally:
            await readers.call(_close, chunks, conn)

    return ClosingStreamingResponse(rows(), media_type="text/csv; charset=utf-8",
                                    headers={"Content-Disposition": 'attachment; filename="fdedge_labelled.csv"'})
