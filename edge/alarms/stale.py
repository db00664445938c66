"""Stale machines: an alarm of kind `stale` when a machine falls silent, cleared by its next reading.

Silence is measured on the appliance's clock from the machine's last *arrival*
(fdedge_machines.last_seen), never from its readings' times: a sensor's clock may be years off.
A machine is stale once silent for longer than its threshold, max(--stale-after, 3 x its usual
interval) (edge.store.machine_state.stale_threshold).

Raising happens on a timer (`watch`), in the writer thread through `Writer.call`, so the alarm
and its webhook outbox rows are stored in one transaction like every other alarm; clearing
happens in the writer's ingest transaction of the reading that broke the silence (the engine's
`evaluate`), so "cleared" commits with that reading. State is journaled like the engine's runs:
`commit()`/`rollback()` after the writer's COMMIT/ROLLBACK.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from edge.alarms.tables import ALARMS, COLUMNS, INSERT, alarm_json
from edge.fdrest import epoch_seconds, format_time, iso
from edge.store import machine_state

if TYPE_CHECKING:
    from edge.alarms.engine import AlarmChange

log = logging.getLogger(__name__)

KIND = FAULT = "stale"  # the alarm's kind, and what its `fault` field says
CATEGORY = "No readings (machine silent)"
MIN_CHECK_S, MAX_CHECK_S = 0.2, 30.0


def check_interval(stale_after: float) -> float:
    """How often the timer looks: a tenth of --stale-after, within 0.2-30 s (one scan of at
    most --max-machines rows of fdedge_machines each time)."""
    return min(max(stale_after / 10, MIN_CHECK_S), MAX_CHECK_S)


def _text(epoch: float) -> str:
    return format_time(datetime.fromtimestamp(epoch, UTC))


class StaleAlarms:
    """The active stale alarms by machine. Written by the writer thread only; `machines` (a
    frozenset replaced at each commit) may be read from any thread."""

    def __init__(self, stale_after: float) -> None:
        self.stale_after = stale_after
        self.active: dict[str, dict[str, Any]] = {}
        self.machines: frozenset[str] = frozenset()
        self.started = time.time()
        self._undo: dict[str, dict[str, Any]] | None = None

    def load(self, recs: list[dict[str, Any]]) -> None:
        """At start: the stale alarms the table holds active (a restart raises none twice)."""
        self.active = {rec["machine"]: rec for rec in recs}
        self.machines = frozenset(self.active)
        self.started = time.time()

    def _journal(self) -> None:
        if self._undo is None:
            self._undo = dict(self.active)

    def commit(self) -> None:
        if self._undo is not None:
            self._undo = None
            self.machines = frozenset(self.active)

    def rollback(self) -> None:
        if self._undo is not None:
            self.active, self._undo = self._undo, None

    def due(self, conn: sqlite3.Connection, now: float) -> list[tuple[str, float, int]]:
        """(machine, last arrival, last reading id) of machines past their threshold and not
        alarmed yet. Silence counts from the later of the last arrival and this start-up: while
        the appliance was down it could not hear anyone, so after a restart every machine gets
        its threshold to speak before its stale alarm (a machine that was alarmed stays so)."""
        if self.stale_after <= 0:
            return []
        out = []
        for name, seen, interval, last_id in machine_state.silence(conn):
            if name in self.active or seen is None:
                continue
            if now - max(seen, self.started) > machine_state.stale_threshold(interval, self.stale_after):
                out.append((name, seen, last_id or 0))
        return out

    def raise_due(self, conn: sqlite3.Connection, now: float, record: Callable[..., None],
                  change: Callable[..., AlarmChange]) -> list[AlarmChange]:
        """Inside an open transaction: one `stale` alarm per machine found by `due`."""
        changes: list[AlarmChange] = []
        at = _text(now)
        for name, seen, last_id in self.due(conn, now):
            silent = round(now - seen, 3)
            rec: dict[str, Any] = {
                "id": None, "machine": name, "fault": FAULT, "category": CATEGORY, "severity": "warning",
                "raised_severity": "warning", "since": _text(seen), "raised_at": at, "raised_reading": last_id,
                "raised_value": silent, "peak": silent, "peak_at": at, "peak_reading": last_id,
                "escalated_at": None, "escalated_reading": None, "cleared_at": None, "cleared_reading": None,
                "acked_at": None, "acked_by": None, "ack_note": None, "kind": KIND, "detail": None,
            }
            rec["id"] = conn.execute(INSERT, [rec[k] for k in COLUMNS[1:]]).lastrowid
            self._journal()
            self.active[name] = rec
            record(conn, change("raise", alarm_json(rec), last_id, iso(at)), changes)
        return changes

    def clear_heard(self, conn: sqlite3.Connection, rows: list[tuple[int, str, str, list[float]]],
                    writes: Callable[[sqlite3.Connection], None], record: Callable[..., None],
                    change: Callable[..., AlarmChange], changes: list[AlarmChange]) -> int:
        """Inside the writer's transaction: clear the stale alarm of every machine in `rows`
        (id, time, machine, faults) that has one; `peak` becomes the whole silence in seconds.
        Returns how many were cleared. Call only when `active` is not empty."""
        first: dict[str, int] = {}
        active = self.active
        for rid, _, name, _ in rows:
            if name in active and name not in first:
                first[name] = rid
        if not first:
            return 0
        now = time.time()
        at = _text(now)
        writes(conn)
        self._journal()
        for name, rid in first.items():
            rec = {**active.pop(name), "cleared_at": at, "cleared_reading": rid, "peak_at": at}
            rec["peak"] = max(rec["peak"], round(now - epoch_seconds(rec["since"]), 3))
            conn.execute(f"UPDATE {ALARMS} SET cleared_at = ?, cleared_reading = ?, peak = ?, peak_at = ? "
                         "WHERE id = ?", (at, rid, rec["peak"], at, rec["id"]))
            record(conn, change("clear", alarm_json(rec), rid, iso(at)), changes)
        return len(first)

    def acked(self, rec: dict[str, Any]) -> None:
        """An ack was committed (between transactions): the active copy carries it too."""
        current = self.active.get(rec["machine"])
        if current is not None and current["id"] == rec["id"]:
            self.active[rec["machine"]] = {**current, "acked_at": rec["acked_at"], "acked_by": rec["acked_by"],
                                           "ack_note": rec["ack_note"]}


async def watch(call: Callable[[Callable[[sqlite3.Connection], Any]], Awaitable[Any]],
                check: Callable[[sqlite3.Connection], list[AlarmChange]],
                publish: Callable[[list[AlarmChange]], None], every: float) -> None:
    """The timer: `check` (AlarmEngine.check_stale) run in the writer thread through `call`
    (Writer.call) every `every` seconds, at once at start (a restart after a long outage finds
    the machines that were silent); what it raised is published like any alarm change."""
    failing = False
    while True:
        try:
            changes = await call(check)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a full disk, a locked file: tried again next time
            if not failing:
                log.warning("stale-machine check failed (%s); retrying every %.1f s", exc, every)
            failing = True
        else:
            failing = False
            if changes:
                publish(changes)
        await asyncio.sleep(every)
