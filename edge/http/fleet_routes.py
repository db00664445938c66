"""GET /api/fleet: every machine's state for the fleet overview (/machines) in one request.

Why: the page shows 200 machines; one request per machine for its newest reading and its
alarms would be 400 requests on every load. This is one read of fdedge_machines, one
primary-key read per machine for its newest row, and the active alarms."""

from __future__ import annotations

import sqlite3
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from edge.alarms.tables import active_alarms, alarm_json
from edge.store import machine_state
from edge.store import reading_queries as queries


def fleet(conn: sqlite3.Connection, stale_after: float) -> list[dict[str, Any]]:
    """Each machine of /api/machines with its newest reading (`latest`) and its active alarms
    (`alarms`: count, `unacked`, `severity`: the worst of them, or null)."""
    newest = queries.newest_rows(conn)
    by_machine: dict[str, list[dict[str, Any]]] = {}
    for rec in active_alarms(conn):
        by_machine.setdefault(rec["machine"], []).append(alarm_json(rec))
    out = []
    for m in machine_state.listing(conn, stale_after):
        alarms = by_machine.get(m["machine"], [])
        severities = {a["severity"] for a in alarms}
        m["latest"] = newest.get(m["machine"])
        m["alarms"] = {"count": len(alarms), "unacked": sum(not a["acked"] for a in alarms),
                       "severity": "alarm" if "alarm" in severities else ("warning" if severities else None),
                       "faults": sorted({a["fault"] for a in alarms})}
        out.append(m)
    return out


async def fleet_endpoint(request: Request) -> Response:
    app = request.app.state.appliance
    stale_after = app.settings.stale_after
    listed = await app.readers.run(fleet, stale_after)
    for machine in listed:
        machine["drift"] = app.drift.of(machine["machine"]) if app.drift is not None else None
    return JSONResponse({"machines": listed, "stale_after_s": stale_after})
