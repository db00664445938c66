"""HTTP routes for alarms: the list (active and history), one alarm, and acknowledgement.

Reads run on the per-thread read connections; an ack is a write, so it goes through the writer
thread like everything else that writes (one writer, no lock contention with ingest).
"""

from __future__ import annotations

import csv
import functools
import io
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from edge.alarms.engine import AlarmChange
from edge.alarms.tables import STATES, get_alarm, list_alarms
from edge.errors import BadRequest, NotFound
from edge.fdrest import format_time
from edge.http import origins
from edge.http.json_bodies import json_body, require_json
from edge.http.params import instant_param, int_param
from edge.store.export import safe_cell

MAX_LIMIT = 1000
MAX_ID = 2**63 - 1  # SQLite's INTEGER; a larger path id would not even bind


def _alarm_id(request: Request) -> int:
    alarm_id = request.path_params["alarm_id"]
    if not 0 < alarm_id <= MAX_ID:
        raise NotFound(f"no alarm with id {str(alarm_id)[:24]}", field="id")
    return alarm_id


async def alarms(request: Request) -> Response:
    """GET /api/alarms?state=active|cleared|all&machine=&fault=&kind=fault|stale&limit=100&before=<id>
    -> newest first."""
    params = request.query_params
    state = params.get("state") or "all"
    if state not in STATES:
        raise BadRequest(f"state must be one of {', '.join(STATES)}", field="state", valid=list(STATES))
    limit = int_param(params, "limit", 100, 1, MAX_LIMIT)
    return JSONResponse({"alarms": await _listed(request, state, limit)})


async def _listed(request: Request, state: str, limit: int) -> list[dict[str, Any]]:
    """The alarms the query's filters keep (the list and its CSV take the same ones)."""
    params = request.query_params
    machine, fault = params.get("machine") or None, params.get("fault") or None
    before = int_param(params, "before", None, 1, MAX_ID)
    start, end = _instant(params, "start"), _instant(params, "end")
    if start is not None and end is not None and end <= start:
        raise BadRequest("end must be after start", field="end")
    acked_text = params.get("acked") or None
    if acked_text not in (None, "true", "false"):
        raise BadRequest(f"acked must be true or false, got {acked_text[:20]!r}", field="acked")
    readers = request.app.state.appliance.readers
    return await readers.run(functools.partial(
        list_alarms, state=state, machine=machine, fault=fault, limit=limit, before=before,
        kind=params.get("kind") or None, start=start, end=end,
        acked=None if acked_text is None else acked_text == "true"))


def _instant(params: Any, key: str) -> str | None:
    """An ISO 8601 or epoch time as the stored format (UTC), None when absent."""
    if not params.get(key):
        return None
    return format_time(instant_param(params, key, datetime.now(UTC)))


CSV_COLUMNS = ("id", "kind", "machine", "fault", "category", "severity", "state", "since", "raised_at",
               "raised_severity", "escalated_at", "peak", "peak_at", "cleared_at", "acked_at", "acked_by",
               "ack_note", "raised_reading", "cleared_reading")
CSV_LIMIT = 100_000


async def alarms_csv(request: Request) -> Response:
    """GET /api/alarms.csv with /api/alarms's filters: the alarm log for a spreadsheet, newest
    first, times in ISO 8601 UTC (with their Z), text cells a spreadsheet would run neutralised."""
    params = request.query_params
    state = params.get("state") or "all"
    if state not in STATES:
        raise BadRequest(f"state must be one of {', '.join(STATES)}", field="state", valid=list(STATES))
    rows = await _listed(request, state, int_param(params, "limit", CSV_LIMIT, 1, CSV_LIMIT))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for a in rows:
        writer.writerow([safe_cell(a.get(c)) if a.get(c) is not None else "" for c in CSV_COLUMNS])
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return Response(buffer.getvalue(), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="fdedge-alarms-{stamp}.csv"'})


async def alarm(request: Request) -> Response:
    """GET /api/alarms/{alarm_id} -> one alarm, 404 if unknown."""
    alarm_id = _alarm_id(request)
    readers = request.app.state.appliance.readers
    return JSONResponse({"alarm": await readers.run(get_alarm, alarm_id)})


async def ack(request: Request) -> Response:
    """POST /api/alarms/{alarm_id}/ack with {"by": "...", "note": "..."} -> {"alarm": ..., "replayed": bool}."""
    app = request.app.state.appliance
    alarm_id = _alarm_id(request)
    origins.check(request.headers.get("origin"), request.headers.get("host"),
                  app.settings.allowed_origins or frozenset())
    require_json(request, "an acknowledgement")
    body = await json_body(request)
    if not isinstance(body, dict):
        raise BadRequest('the body must be a JSON object like {"by": "operator name", "note": "..."}')
    unknown = sorted(set(body) - {"by", "note"})
    if unknown:
        raise BadRequest(f"unknown field {unknown[0][:40]!r}; valid fields: by, note", field=unknown[0][:40])
    by, note = body.get("by"), body.get("note")
    engine = app.alarms
    result = await app.writer.call(lambda conn: engine.ack(conn, alarm_id, by, note))
    if not result["replayed"]:
        app.publish_alarms([AlarmChange.for_ack(result["alarm"])])
    return JSONResponse(result)
