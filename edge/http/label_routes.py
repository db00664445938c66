"""/api/labels: operators' labels on alarms and time ranges (edge/store/labels.py).

Writes need the `label` permission (edge/http/roles.py) and go through the writer thread; the
label's author is the named token's name when one was used, else the body's "by"."""

from __future__ import annotations

from datetime import UTC, datetime

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from edge.errors import NotFound
from edge.fdrest import format_time
from edge.http import origins
from edge.http.json_bodies import json_body, require_json
from edge.http.params import instant_param, int_param
from edge.store import labels

MAX_LIMIT = 1000


async def create(request: Request) -> Response:
    """POST /api/labels -> 201 {"label": ...}."""
    app = request.app.state.appliance
    origins.check(request.headers.get("origin"), request.headers.get("host"),
                  app.settings.allowed_origins or frozenset())
    require_json(request, "a label")
    body = await json_body(request)
    token = request.scope.get("fdedge_token")
    label = labels.parse(body, token.name if token is not None else None)
    stored = await app.writer.call(lambda conn: labels.add(conn, label))
    return JSONResponse({"label": stored}, status_code=201)


async def listing(request: Request) -> Response:
    """GET /api/labels?machine=&start=&end=&alarm=&limit= -> {"labels": [...]}, newest first; a
    label is listed when its span overlaps [start, end]."""
    params = request.query_params
    start = format_time(instant_param(params, "start", datetime.min.replace(tzinfo=UTC))) \
        if params.get("start") else None
    end = format_time(instant_param(params, "end", datetime.max.replace(tzinfo=UTC))) if params.get("end") else None
    alarm = int_param(params, "alarm", None, 1, labels.MAX_ID)
    limit = int_param(params, "limit", 1000, 1, MAX_LIMIT)
    rows = await request.app.state.appliance.readers.run(labels.stored, params.get("machine") or None,
                                                         start, end, alarm, limit)
    return JSONResponse({"labels": rows})


async def remove(request: Request) -> Response:
    """DELETE /api/labels/{label_id} -> {"label": the removed label}; 404 if unknown."""
    app = request.app.state.appliance
    origins.check(request.headers.get("origin"), request.headers.get("host"),
                  app.settings.allowed_origins or frozenset())
    label_id = request.path_params["label_id"]
    if not 0 < label_id <= labels.MAX_ID:
        raise NotFound(f"no label with id {str(label_id)[:24]}", field="id")
    return JSONResponse({"label": await app.writer.call(lambda conn: labels.delete(conn, label_id))})
