"""Data-quality alarms: one alarm of kind `quality` per machine while its readings cannot be trusted.

A reading whose verdict (edge.scoring.quality) is suspect or invalid says the sensor or the model
is the problem, not the machine: the engine keeps it from raising or clearing fault alarms (the
rules' `suspect` policy) and hands it here. `consecutive` such readings in a row raise a
`quality` alarm naming the feature and the reason of the reading that raised it (`detail`, and
its score as `raised_value`); `clear_consecutive` ok readings clear it. Unknown verdicts (a model
without training statistics) count for neither. Runs inside the writer's transaction like the
fault alarms, journaled per transaction (`commit()`/`rollback()` after the writer's).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from edge.alarms.rules import QualityRule
from edge.alarms.tables import COLUMNS, INSERT, alarm_json, update_alarm
from edge.fdrest import iso

if TYPE_CHECKING:
    from edge.alarms.engine import AlarmChange

KIND = FAULT = "quality"  # the alarm's kind, and what its `fault` field says
CATEGORY = "Data quality (sensor or model)"


class QualityAlarms:
    """Per machine: its active quality alarm, its run of suspect readings, its run of ok ones after
    an alarm. Only machines in a run or with an alarm are held. Writer thread only."""

    def __init__(self, rule: QualityRule) -> None:
        self.rule = rule
        self.active: dict[str, dict[str, Any]] = {}
        self.bad_run: dict[str, tuple[int, str]] = {}  # machine -> (suspect readings in a row, first's time)
        self.ok_run: dict[str, int] = {}  # machine -> ok readings in a row while its alarm is active
        self._undo: tuple[dict, dict, dict] | None = None

    def load(self, recs: list[dict[str, Any]]) -> None:
        """At start: the quality alarms the table holds active."""
        self.active = {rec["machine"]: rec for rec in recs}
        self.bad_run, self.ok_run, self._undo = {}, {}, None

    def watching(self, machine: str) -> bool:
        """An ok reading of this machine changes something (a run to break, an alarm to clear)."""
        return machine in self.bad_run or machine in self.active

    def _journal(self) -> None:
        if self._undo is None:
            self._undo = (dict(self.active), dict(self.bad_run), dict(self.ok_run))

    def commit(self) -> None:
        self._undo = None

    def rollback(self) -> None:
        if self._undo is not None:
            (self.active, self.bad_run, self.ok_run), self._undo = self._undo, None

    def step(self, conn: sqlite3.Connection, rid: int, t: str, machine: str,
             bad: tuple[str | None, float | None] | None, writes: Callable[[sqlite3.Connection], None],
             record: Callable[..., None], change: Callable[..., AlarmChange], changes: list[AlarmChange]) -> int:
        """One reading (`bad`: its reasons text and score when suspect or invalid, None when ok).
        Returns the change in active alarms (+1 raised, -1 cleared, 0)."""
        self._journal()
        rec = self.active.get(machine)
        if bad is not None:
            self.ok_run.pop(machine, None)
            count, since = self.bad_run.get(machine, (0, t))
            count += 1
            if rec is not None or not self.rule.alarm or count < self.rule.consecutive:
                self.bad_run[machine] = (count, since)
                return 0
            self.bad_run.pop(machine, None)
            reasons, score = bad
            value = float(score) if score is not None else 0.0
            rec = {
                "id": None, "machine": machine, "fault": FAULT, "category": CATEGORY, "severity": "warning",
                "raised_severity": "warning", "since": since, "raised_at": t, "raised_reading": rid,
                "raised_value": value, "peak": value, "peak_at": t, "peak_reading": rid,
                "escalated_at": None, "escalated_reading": None, "cleared_at": None, "cleared_reading": None,
                "acked_at": None, "acked_by": None, "ack_note": None, "kind": KIND, "detail": reasons,
            }
            writes(conn)
            rec["id"] = conn.execute(INSERT, [rec[k] for k in COLUMNS[1:]]).lastrowid
            self.active[machine] = rec
            record(conn, change("raise", alarm_json(rec), rid, iso(t)), changes)
            return 1
        self.bad_run.pop(machine, None)
        if rec is None:
            return 0
        count = self.ok_run.get(machine, 0) + 1
        if count < self.rule.clear_consecutive:
            self.ok_run[machine] = count
            return 0
        self.ok_run.pop(machine, None)
        del self.active[machine]
        rec = {**rec, "cleared_at": t, "cleared_reading": rid}
        writes(conn)
        update_alarm(conn, rec["id"], cleared_at=t, cleared_reading=rid)
        record(conn, change("clear", alarm_json(rec), rid, iso(t)), changes)
        return -1

    def acked(self, rec: dict[str, Any]) -> None:
        """An ack was committed (between transactions): the active copy carries it too."""
        current = self.active.get(rec["machine"])
        if current is not None and current["id"] == rec["id"]:
            self.active[rec["machine"]] = {**current, "acked_at": rec["acked_at"], "acked_by": rec["acked_by"],
                                           "ack_note": rec["ack_note"]}
