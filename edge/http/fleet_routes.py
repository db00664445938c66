"""GET /api/fleet: every machine's state for the fleet overview (/machines) in one request.

Why: the page shows 200 machines; one request per machine for its newest reading and its
alarms would be 400 requests on every load. This is one read of fdedge_machines, one
primary-key read per machine for its newest row, and the active alarms."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from edge.alarms.tables import active_alarms, alarm_json
from edge.fdrest import FAULTS
from edge.http.params import int_param
from edge.store import machine_state
from edge.store import reading_queries as queries

SPARK_POINTS = (2, 240)  # a tile's sparkline: a few dozen points is all 200 tiles have room for
SPARK_SECONDS = (60, 7 * 86400)


def sparkline(conn: sqlite3.Connection, machine: str, last_time: str | None, seconds: int,
              points: int) -> dict[str, Any] | None:
    """The largest fault per bucket, `points` buckets over the `seconds` that end a second after
    the machine's newest reading (its own clock: a machine silent for a year still shows how it
    ended); null for an empty bucket, so the page draws a gap. From the rollups (/api/series)."""
    if last_time is None:
        return None
    end = datetime.fromisoformat(last_time) + timedelta(seconds=1)
    start = end - timedelta(seconds=seconds)
    got = queries.series(conn, start, end, list(FAULTS), machine, points)
    bucket = got["bucket_seconds"]
    t0 = start.timestamp()
    peak: list[float | None] = [None] * points
    for i, t in enumerate(got["time"]):
        k = min(max(round((t - t0) / bucket - 0.5), 0), points - 1)
        values = [v for f in FAULTS if (v := got["series"][f][i]) is not None]
        if values:
            peak[k] = max(values) if peak[k] is None else max(peak[k], *values)
    return {"start": got["start"], "bucket_s": bucket, "peak": peak}


def fleet(conn: sqlite3.Connection, stale_after: float, spark: tuple[int, int] | None = None) -> list[dict[str, Any]]:
    """Each machine of /api/machines with its newest reading (`latest`) and its active alarms
    (`alarms`: count, `unacked`, `severity`: the worst of them, or null); with `spark` (points,
    seconds) also its sparkline (`spark`, see sparkline())."""
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
        if spark is not None:
            m["spark"] = sparkline(conn, m["machine"], m["last_time"], spark[1], spark[0])
        out.append(m)
    return out


async def fleet_endpoint(request: Request) -> Response:
    app = request.app.state.appliance
    stale_after = app.settings.stale_after
    params = request.query_params
    points = int_param(params, "spark", None, *SPARK_POINTS)
    seconds = int_param(params, "spark_s", 3600, *SPARK_SECONDS)
    spark = None if points is None else (points, seconds)
    listed = await app.readers.run(fleet, stale_after, spark)
    for machine in listed:
        machine["drift"] = app.drift.of(machine["machine"]) if app.drift is not None else None
    return JSONResponse({"machines": listed, "stale_after_s": stale_after})
