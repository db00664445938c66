"""A shadow model against the model that answered, over the readings both scored: the evidence an
engineer promotes with (`GET /api/models/{version}/compare`)."""

from __future__ import annotations

import sqlite3
from typing import Any

import numpy as np

from edge.fdrest import FAULTS
from edge.store import shadow_table

MAX_ROWS = 200_000  # the newest readings compared at most (a bounded read, in the read pool)


def compare(conn: sqlite3.Connection, version: str, warning: float, alarm: float, *, start: str | None = None,
            end: str | None = None, machine: str | None = None, top: int = 10, limit: int = MAX_ROWS
            ) -> dict[str, Any]:
    rows = shadow_table.pairs(conn, version, start, end, machine, limit)
    n = len(rows)
    head: dict[str, Any] = {"version": version, "readings": n, "truncated": n >= limit,
                            "thresholds": {"warning": warning, "alarm": alarm}, "faults": list(FAULTS)}
    if not n:
        return {**head, "first_id": None, "last_id": None, "per_fault": [], "alarm_agreement": None,
                "disagreements": []}
    ids = np.array([r[0] for r in rows], dtype=np.int64)
    active = np.array([r[3:11] for r in rows], dtype=np.float64)
    shadow = np.array([r[11:19] for r in rows], dtype=np.float64)
    diff = np.abs(shadow - active)
    same = ((active >= warning) == (shadow >= warning)) & ((active >= alarm) == (shadow >= alarm))
    per_fault = [{"fault": f, "mean_abs_diff": float(np.nanmean(diff[:, j])),
                  "max_abs_diff": float(np.nanmax(diff[:, j])),
                  "alarm_agreement": float(same[:, j].mean()),
                  "active_mean": float(np.nanmean(active[:, j])), "shadow_mean": float(np.nanmean(shadow[:, j]))}
                 for j, f in enumerate(FAULTS)]
    worst = np.nanmax(diff, axis=1)
    order = np.argsort(-worst, kind="stable")[:top]
    disagreements = [{"id": int(ids[i]), "time": rows[i][1], "machine": rows[i][2], "max_abs_diff": float(worst[i]),
                      "fault": FAULTS[int(np.nanargmax(diff[i]))], "active": active[i].tolist(),
                      "shadow": shadow[i].tolist()} for i in order.tolist()]
    return {**head, "first_id": int(ids.min()), "last_id": int(ids.max()), "per_fault": per_fault,
            "alarm_agreement": float(same.all(axis=1).mean()), "disagreements": disagreements}
