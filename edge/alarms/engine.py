"""The alarm engine: one alarm per episode of a fault on a machine, not one per noisy reading.

It runs inside the writer's transaction, so an alarm (and its webhook outbox rows) commits
atomically with the readings that caused it: no alarm without its readings, no readings whose
alarm got lost. Per (machine, fault) it keeps only the lengths of the current runs of readings
above `warning`, above `alarm` and below `clear`, so a restart rebuilds the state exactly from
the alarms table plus the last few stored readings, and a healthy machine costs one `max()` per
reading. The in-memory state is journaled per transaction: the writer calls `commit()` or
`rollback()` after its COMMIT/ROLLBACK, so a failed commit leaves no phantom alarm behind.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from edge.alarms.quality import KIND as QUALITY
from edge.alarms.quality import QualityAlarms
from edge.alarms.rules import EVENTS, Rule, Rules
from edge.alarms.stale import KIND as STALE
from edge.alarms.stale import StaleAlarms
from edge.alarms.tables import (
    ALARMS,
    COLUMNS,
    INSERT,
    INSERT_OUTBOX,
    UPLINK_HOOK,
    active_alarms,
    alarm_json,
    create,
    recent_machines,
    stored_alarm,
)
from edge.errors import BadRequest, Conflict, NotFound
from edge.fdrest import CATALOGUE, FAULTS, TIME_FORMAT, epoch_seconds, iso, now_text
from edge.store.database import transaction
from edge.store.schema import TABLE

log = logging.getLogger(__name__)

N_FAULTS = len(FAULTS)
MAX_BY, MAX_NOTE = 100, 2000
REPLAY_CAP = 200_000  # most stored readings per machine replayed at start (long min_duration rules)
RECENT_S = 86400.0  # at start, runs are rebuilt for machines heard from within this of the newest
REPLAY_MACHINES = 10_000  # and for at most this many of them
IDLE_KEPT = 256  # past this many machines in memory, those with nothing in progress are dropped
CLOCK_SKEW_S = 300.0  # default: a reading dated further ahead of our clock does not move its machine's clock
SKIP_REASONS = ("out_of_order", "evaluation_error")
# explanations per writer group at most (each one onnxruntime call of 36 rows, ~140 µs in the
# writer): a storm of raises beyond it goes out without, and GET /api/explain?id= still answers
EXPLAINED_PER_GROUP = 16

Explainer = Callable[[int, int], "dict[str, Any] | None"]  # (reading id, fault index) -> explanation


@dataclass(frozen=True)
class AlarmChange:
    """One lifecycle step: raise | escalate | peak | clear | ack. `alarm` is the alarm after it.

    `peak` changes are stored and shown live but never sent to webhooks; `reading_id` is the
    reading that caused the change (None for an ack)."""

    kind: str
    alarm: dict[str, Any]
    reading_id: int | None
    time: str | None  # ISO 8601: the reading's time, or the wall-clock time of an ack
    explanation: dict[str, Any] | None = None  # raise/escalate of a fault: what drove it (edge.scoring.explain)

    @property
    def machine(self) -> str:
        return self.alarm["machine"]

    @property
    def fault(self) -> str:
        return self.alarm["fault"]

    @property
    def severity(self) -> str:
        return self.alarm["severity"]

    @property
    def alarm_id(self) -> int:
        return self.alarm["id"]

    @property
    def notify(self) -> bool:
        return self.kind in EVENTS

    def event(self) -> dict[str, Any]:
        """The SSE `alarm` event's data and the webhook body (one shape for both)."""
        out = {"event": self.kind, "time": self.time, "reading_id": self.reading_id, "alarm": self.alarm,
               "source": "fdedge"}
        if self.explanation is not None:
            out["explanation"] = self.explanation
        return out

    def json(self) -> str:
        return json.dumps(self.event(), separators=(",", ":"))

    @classmethod
    def for_ack(cls, alarm: dict[str, Any]) -> AlarmChange:
        return cls("ack", alarm, None, alarm["acked_at"])


class MachineRuns:
    """Run lengths per fault for one machine, as flat lists: the hot path reads plain floats."""

    __slots__ = ("name", "warning_at", "alarm_at", "clear_below", "consecutive", "clear_consecutive",
                 "min_duration_s", "clear_min_duration_s", "hold", "lowest_warning", "last", "busy", "n_active",
                 "warning_run", "warning_since", "run_peak", "alarm_run", "alarm_since", "clear_run",
                 "clear_since", "active")

    def __init__(self, name: str, rules: list[Rule]) -> None:
        inf = float("inf")
        self.name = name
        # A disabled rule never starts a run, so it can never raise or escalate; it can still clear.
        self.warning_at = [r.warning if r.enabled else inf for r in rules]
        self.alarm_at = [r.alarm if r.enabled else inf for r in rules]
        self.clear_below = [r.clear for r in rules]
        self.consecutive = [r.consecutive for r in rules]
        self.clear_consecutive = [r.clear_consecutive for r in rules]
        self.min_duration_s = [r.min_duration_s for r in rules]
        self.clear_min_duration_s = [r.clear_min_duration_s for r in rules]
        self.hold = [r.suspect == "hold" for r in rules]  # a suspect reading skips the fault (rules.Rule.suspect)
        self.lowest_warning = min(self.warning_at)
        self.last = ""  # time of the last evaluated reading: older ones arrive too late to count
        self.busy = False  # any run or active alarm: False means a reading below min_w changes nothing
        self.n_active = 0
        self.warning_run = [0] * N_FAULTS  # readings in a row >= warning
        self.warning_since: list[str] = [""] * N_FAULTS  # time of the first of them
        self.run_peak: list[tuple[float, str, int]] = [(0.0, "", 0)] * N_FAULTS  # run's peak (value, time, id)
        self.alarm_run = [0] * N_FAULTS  # readings in a row >= alarm
        self.alarm_since: list[str] = [""] * N_FAULTS
        self.clear_run = [0] * N_FAULTS  # readings in a row < clear (kept while an alarm is active)
        self.clear_since: list[str] = [""] * N_FAULTS
        self.active: list[dict[str, Any] | None] = [None] * N_FAULTS  # replaced, never mutated

    def snapshot(self) -> tuple:
        return (self.last, self.busy, self.n_active, self.warning_run[:], self.warning_since[:], self.run_peak[:],
                self.alarm_run[:], self.alarm_since[:], self.clear_run[:], self.clear_since[:], self.active[:])

    def restore(self, snap: tuple) -> None:
        (self.last, self.busy, self.n_active, self.warning_run, self.warning_since, self.run_peak, self.alarm_run,
         self.alarm_since, self.clear_run, self.clear_since, self.active) = snap

    def warning_held(self, i: int, t: str) -> bool:
        """Fault i has been at warning level for its rule's readings and duration, as of time t."""
        return self.warning_run[i] >= self.consecutive[i] and _held(self.warning_since[i], t, self.min_duration_s[i])

    def alarm_held(self, i: int, t: str) -> bool:
        return self.alarm_run[i] >= self.consecutive[i] and _held(self.alarm_since[i], t, self.min_duration_s[i])

    def clear_held(self, i: int, t: str) -> bool:
        return (self.clear_run[i] >= self.clear_consecutive[i]
                and _held(self.clear_since[i], t, self.clear_min_duration_s[i]))

    def advance(self, i: int, v: float, t: str, rid: int) -> None:
        """Extend or break the runs of fault i with one reading."""
        if v >= self.warning_at[i]:
            if self.warning_run[i]:
                self.warning_run[i] += 1
                if v > self.run_peak[i][0]:
                    self.run_peak[i] = (v, t, rid)
            else:
                self.warning_run[i], self.warning_since[i], self.run_peak[i] = 1, t, (v, t, rid)
            if v >= self.alarm_at[i]:
                if self.alarm_run[i]:
                    self.alarm_run[i] += 1
                else:
                    self.alarm_run[i], self.alarm_since[i] = 1, t
            else:
                self.alarm_run[i] = 0
        else:
            self.warning_run[i] = self.alarm_run[i] = 0
        if v < self.clear_below[i]:
            if self.clear_run[i]:
                self.clear_run[i] += 1
            else:
                self.clear_run[i], self.clear_since[i] = 1, t
        else:
            self.clear_run[i] = 0


def _held(start: str, now: str, min_s: float) -> bool:
    return min_s <= 0 or epoch_seconds(now) - epoch_seconds(start) >= min_s


_NEW = object()  # journal mark: the machine appeared in this transaction


class AlarmEngine:
    """Evaluates alarm rules in the writer thread. Not thread-safe: only the writer calls
    `setup`, `evaluate`, `commit`, `rollback` and `ack`; `active_count` may be read anywhere."""

    def __init__(self, rules: Rules, catalogue: Iterable[dict[str, str]] = CATALOGUE,
                 clock_skew_s: float = CLOCK_SKEW_S, stale_after_s: float = 0.0) -> None:
        self.rules = rules
        self.clock_skew_s = clock_skew_s
        self.uplink = False  # also write each change to the uplink's outbox rows (edge.plant.uplink)
        self.stale = StaleAlarms(stale_after_s)  # alarms of kind `stale` (edge.alarms.stale)
        self.quality = QualityAlarms(rules.quality)  # alarms of kind `quality` (edge.alarms.quality)
        self.categories = {c["fault"]: c.get("category", "") for c in catalogue}
        self._machines: dict[str, MachineRuns] = {}
        self._undo: dict[MachineRuns, Any] = {}  # machine -> its state before this transaction
        self._savepoint = False
        self._active_delta = 0
        self._late_delta = self._error_delta = 0
        self.active_count = 0  # committed active alarms
        # committed readings not evaluated, by reason (SKIP_REASONS): older than their machine's
        # last evaluated reading, or in a group whose evaluation failed (a bug, logged)
        self.skipped = dict.fromkeys(SKIP_REASONS, 0)
        self.errors = 0  # evaluations abandoned because of a bug (logged); the readings still commit
        self._explain: Explainer | None = None  # this group's, during `evaluate`
        self._explained = 0

    @property
    def stale_readings(self) -> int:
        return self.skipped["out_of_order"]

    def _horizon(self) -> str:
        """The latest stored time that may move a machine's clock: now plus the allowed skew. A
        reading dated later is evaluated, but an hour-ahead sensor clock must not make every
        correct reading after it "out of order" (that silenced the machine's alarms)."""
        return now_text(self.clock_skew_s)

    # -- start-up ---------------------------------------------------------------------------------

    def setup(self, conn: sqlite3.Connection) -> None:
        """Create the tables if needed, then rebuild the state: active alarms from their table, run
        lengths by replaying each machine's last stored readings. Call with no transaction open."""
        create(conn)
        self._machines.clear()
        self._undo.clear()
        everything = active_alarms(conn)
        active = [rec for rec in everything if rec["kind"] not in (STALE, QUALITY)]
        self.stale.load([rec for rec in everything if rec["kind"] == STALE])
        self.quality.load([rec for rec in everything if rec["kind"] == QUALITY])
        rules = [self.rules.default, *self.rules.by_fault.values(),
                 *(r for per in self.rules.by_machine.values() for r in per.values())]
        lowest = min((r.warning for r in rules if r.enabled), default=float("inf"))
        names = {rec["machine"] for rec in active} | set(recent_machines(conn, RECENT_S, REPLAY_MACHINES, lowest))
        for name in sorted(names):
            st = self._machine(name)
            self._replay(conn, st)
        for rec in active:
            st = self._machines[rec["machine"]]
            st.active[FAULTS.index(rec["fault"])] = rec
            st.n_active += 1
            st.busy = True
        self.active_count = len(everything)
        log.info("alarm rules from %s; %d active alarm(s) on %d machine(s)", self.rules.source,
                 len(active), len(names))
        if self.stale.active:
            log.info("%d machine(s) stale since before the restart", len(self.stale.active))

    def _replay(self, conn: sqlite3.Connection, st: MachineRuns) -> None:
        """Rebuild run lengths from the stored readings, in evaluation order (time, then id). Runs
        only depend on their tail, so the last few readings reconstruct them; a rule with a minimum
        duration needs that much time of readings as well."""
        rules = [self.rules.rule(st.name, f) for f in FAULTS]
        count = max(max(r.consecutive, r.clear_consecutive) for r in rules) + 1
        cols = ", ".join(FAULTS)
        rows = conn.execute(f"SELECT id, time, {cols}, quality_status FROM {TABLE} WHERE machine = ? "
                            "ORDER BY id DESC LIMIT ?", (st.name, count)).fetchall()
        span = max(max(r.min_duration_s, r.clear_min_duration_s) for r in rules)
        if rows and span > 0:
            newest = max(epoch_seconds(r[1] or "") for r in rows)
            cutoff = datetime.fromtimestamp(newest - span - 1, UTC).strftime(TIME_FORMAT)
            older = conn.execute(f"SELECT id, time, {cols}, quality_status FROM {TABLE} WHERE machine = ? "
                                 "AND time >= ? ORDER BY id DESC LIMIT ?", (st.name, cutoff, REPLAY_CAP)).fetchall()
            rows = list({r[0]: r for r in (*older, *rows)}.values())
        rows.sort(key=lambda r: (r[1] or "", r[0]))
        horizon = self._horizon()
        for row in rows:
            rid, t = row[0], row[1] or ""
            if t < st.last:
                continue
            if t <= horizon:
                st.last = t
            suspect = row[2 + N_FAULTS] is not None and row[2 + N_FAULTS] > 0  # as evaluated when it arrived
            for i in range(N_FAULTS):
                if suspect and st.hold[i]:
                    continue
                v = row[2 + i]
                st.advance(i, float("nan") if v is None else v, t, rid)
        st.busy = any(st.warning_run)

    def _machine(self, name: str, last: str = "") -> MachineRuns:
        st = MachineRuns(name, [self.rules.rule(name, f) for f in FAULTS])
        st.last = last
        self._machines[name] = st
        return st

    def _stored_last(self, conn: sqlite3.Connection, name: str, horizon: str) -> str:
        """The last evaluated time of a machine whose state was dropped (nothing was in progress):
        its newest stored reading, never beyond the clock horizon."""
        rows = conn.execute("SELECT last_time FROM fdedge_machines WHERE name = ?", (name,)).fetchall()
        last = (rows[0][0] or "") if rows else ""
        return min(last, horizon)

    # -- the writer's transaction -----------------------------------------------------------------

    def evaluate(self, conn: sqlite3.Connection, rows: list[tuple[int, str, str, list[float]]],
                 suspect: dict[int, tuple[str | None, float | None]] | None = None,
                 explain: Explainer | None = None) -> list[AlarmChange]:
        """Evaluate committed-to-be readings (id, stored time, machine, 8 fault values) inside the
        writer's open transaction, in time order (then id); writes alarm and outbox rows with
        `conn`. `suspect`: reading id -> (reasons text, score) of the readings whose data-quality
        verdict is suspect or invalid; each rule's `suspect` policy decides whether they count, and
        they drive the machine's `quality` alarm (edge.alarms.quality). `explain` gives a raise or
        an escalation of a fault what drove it (the writer explains with the model that scored the
        reading, from the group's own features). A storage error propagates
        (the writer rolls back and calls `rollback()`); any other error is logged and undoes this
        transaction's alarm work, so the readings still commit."""
        if not rows:
            return []
        if not conn.in_transaction:
            raise RuntimeError("AlarmEngine.evaluate must run inside the writer's transaction")
        ordered = sorted(rows, key=_order) if len(rows) > 1 else rows
        horizon = self._horizon()
        changes: list[AlarmChange] = []
        peaks: dict[int, tuple[MachineRuns, int, int, str]] = {}
        machines, undo, quality = self._machines, self._undo, self.quality
        self._explain, self._explained = explain, 0
        try:
            for rid, t, name, values in ordered:
                st = machines.get(name)
                if st is None:
                    st = self._machine(name, self._stored_last(conn, name, horizon))
                    undo[st] = _NEW
                elif st not in undo:
                    undo[st] = st.snapshot()
                if t < st.last:
                    self._late_delta += 1
                    continue
                if t <= horizon:  # a sensor with a wrong clock must not make every later reading "late"
                    st.last = t
                bad = suspect.get(rid) if suspect else None
                if st.busy or not max(values) < st.lowest_warning:  # `not <`: a NaN takes the careful path
                    self._step(conn, st, rid, t, values, changes, peaks, bad is not None)
                if bad is not None or quality.watching(name):
                    self._active_delta += quality.step(conn, rid, t, name, bad, self._writes, self._record,
                                                       AlarmChange, changes)
            for st, i, rid, t in peaks.values():
                self._write_peak(conn, st, i, rid, t, changes)
            if self.stale.active:  # a silent machine spoke again
                self._active_delta -= self.stale.clear_heard(conn, rows, self._writes, self._record, AlarmChange,
                                                             changes)
        except sqlite3.Error as exc:
            if isinstance(exc, sqlite3.IntegrityError):  # our state disagrees with the table: a bug
                return self._abandon(conn, len(rows))
            raise
        except Exception:  # an alarm bug must not cost the readings
            return self._abandon(conn, len(rows))
        finally:
            self._explain = None  # its closure holds the group's features
        return changes

    def commit(self) -> None:
        """The writer committed: this transaction's state is now the truth. Machines with nothing
        in progress are dropped once many are held: their state is a fresh one, and their last
        time is in fdedge_machines (a careless sensor that names each reading anew cost 2.5 KB a
        name, for good)."""
        if len(self._machines) > IDLE_KEPT:
            for name in [n for n, st in self._machines.items() if not st.busy and not st.n_active]:
                del self._machines[name]
        self._undo.clear()
        self.stale.commit()
        self.quality.commit()
        self._savepoint = False
        self.active_count += self._active_delta
        self.skipped["out_of_order"] += self._late_delta
        self.skipped["evaluation_error"] += self._error_delta
        self._active_delta = self._late_delta = self._error_delta = 0

    def rollback(self) -> None:
        """The writer rolled back: forget everything evaluated since the last commit."""
        for st, snap in self._undo.items():
            if snap is _NEW:
                self._machines.pop(st.name, None)
            else:
                st.restore(snap)
        self._undo.clear()
        self.stale.rollback()
        self.quality.rollback()
        self._savepoint = False
        self._active_delta = self._late_delta = self._error_delta = 0

    def _abandon(self, conn: sqlite3.Connection, readings: int) -> list[AlarmChange]:
        log.exception("alarm evaluation failed; this group's readings are stored without alarm evaluation")
        self.errors += 1
        # Savepoint and journal both reach back to the start of the transaction, so afterwards the
        # database and memory agree: the transaction's readings count as never evaluated.
        savepoint = self._savepoint
        if savepoint:
            conn.execute("ROLLBACK TO fdedge_alarms")  # the savepoint stays open until COMMIT
        self.rollback()
        self._savepoint = savepoint
        self._error_delta = readings
        return []

    def _writes(self, conn: sqlite3.Connection) -> None:
        if not self._savepoint:
            conn.execute("SAVEPOINT fdedge_alarms")
            self._savepoint = True

    def _step(self, conn: sqlite3.Connection, st: MachineRuns, rid: int, t: str, values: list[float],
              changes: list[AlarmChange], peaks: dict, suspect: bool = False) -> None:
        """One reading of a machine that is near or in an alarm; a `suspect` one skips the faults
        whose rule holds suspect readings (it neither raises nor clears them)."""
        active = st.active
        hold = st.hold
        for i in range(N_FAULTS):
            if suspect and hold[i]:
                continue
            v = values[i]
            st.advance(i, v, t, rid)
            rec = active[i]
            if rec is None:
                if st.warning_held(i, t):
                    self._raise(conn, st, i, rid, t, v, changes)
                continue
            if v > rec["peak"]:
                active[i] = rec = {**rec, "peak": v, "peak_at": t, "peak_reading": rid}
                peaks[rec["id"]] = (st, i, rid, t)
            if rec["severity"] == "warning" and st.alarm_held(i, t):
                peaks.pop(rec["id"], None)
                self._change(conn, st, i, "escalate", rid, t, changes, severity="alarm", escalated_at=t,
                             escalated_reading=rid)
            elif st.clear_held(i, t):
                peaks.pop(rec["id"], None)
                self._change(conn, st, i, "clear", rid, t, changes, cleared_at=t, cleared_reading=rid)
        st.busy = st.n_active > 0 or any(st.warning_run)

    def _raise(self, conn: sqlite3.Connection, st: MachineRuns, i: int, rid: int, t: str, v: float,
               changes: list[AlarmChange]) -> None:
        severity = "alarm" if st.alarm_held(i, t) else "warning"
        fault = FAULTS[i]
        peak, peak_at, peak_reading = st.run_peak[i]
        rec: dict[str, Any] = {
            "id": None, "machine": st.name, "fault": fault, "category": self.categories.get(fault, ""),
            "severity": severity, "raised_severity": severity, "since": st.warning_since[i], "raised_at": t,
            "raised_reading": rid, "raised_value": v, "peak": peak, "peak_at": peak_at, "peak_reading": peak_reading,
            "escalated_at": None, "escalated_reading": None, "cleared_at": None, "cleared_reading": None,
            "acked_at": None, "acked_by": None, "ack_note": None, "kind": "fault", "detail": None,
        }
        self._writes(conn)
        rec["id"] = conn.execute(INSERT, [rec[k] for k in COLUMNS[1:]]).lastrowid
        st.active[i] = rec
        st.n_active += 1
        self._active_delta += 1
        self._record(conn, AlarmChange("raise", alarm_json(rec), rid, iso(t), self._why(rid, i)), changes)

    def _why(self, rid: int, i: int) -> dict[str, Any] | None:
        if self._explain is None or self._explained >= EXPLAINED_PER_GROUP:
            return None
        self._explained += 1
        try:
            return self._explain(rid, i)
        except Exception:  # the alarm goes out without it rather than not at all
            log.exception("explaining reading %d for its alarm failed", rid)
            return None

    def _change(self, conn: sqlite3.Connection, st: MachineRuns, i: int, kind: str, rid: int, t: str,
                changes: list[AlarmChange], **fields: Any) -> None:
        """Escalate or clear; the peak so far is written with it."""
        rec = {**st.active[i], **fields}  # type: ignore[dict-item]
        names = (*fields, "peak", "peak_at", "peak_reading")
        self._writes(conn)
        conn.execute(f"UPDATE {ALARMS} SET {', '.join(f'{k} = ?' for k in names)} WHERE id = ?",
                     (*(rec[k] for k in names), rec["id"]))
        if kind == "clear":
            st.active[i] = None
            st.n_active -= 1
            self._active_delta -= 1
        else:
            st.active[i] = rec
        why = self._why(rid, i) if kind == "escalate" else None
        self._record(conn, AlarmChange(kind, alarm_json(rec), rid, iso(t), why), changes)

    def _write_peak(self, conn: sqlite3.Connection, st: MachineRuns, i: int, rid: int, t: str,
                    changes: list[AlarmChange]) -> None:
        """At most one peak update per alarm per transaction, however many readings raised it."""
        rec = st.active[i]
        if rec is None:
            return
        self._writes(conn)
        conn.execute(f"UPDATE {ALARMS} SET peak = ?, peak_at = ?, peak_reading = ? WHERE id = ?",
                     (rec["peak"], rec["peak_at"], rec["peak_reading"], rec["id"]))
        changes.append(AlarmChange("peak", alarm_json(rec), rid, iso(t)))

    def _record(self, conn: sqlite3.Connection, change: AlarmChange, changes: list[AlarmChange]) -> None:
        changes.append(change)
        self._outbox(conn, change)

    def _outbox(self, conn: sqlite3.Connection, change: AlarmChange) -> None:
        """Webhook deliveries are written with the change itself: committed together or not at all."""
        keys = [h.key for h in self.rules.webhooks if change.kind in h.events]
        if self.uplink:
            keys.append(UPLINK_HOOK)
        if not keys:
            return
        body, created = change.json(), now_text()
        conn.executemany(INSERT_OUTBOX, [(key, change.kind, change.alarm_id, body, created) for key in keys])

    # -- stale machines (run through Writer.call, between commits) -----------------------------------

    def check_stale(self, conn: sqlite3.Connection, now: float | None = None) -> list[AlarmChange]:
        """Raise a `stale` alarm for each machine silent past its threshold, in its own
        transaction with its webhook outbox rows (edge.alarms.stale)."""
        if self.stale.stale_after <= 0:
            return []
        try:
            with transaction(conn):
                changes = self.stale.raise_due(conn, time.time() if now is None else now, self._record, AlarmChange)
        except BaseException:
            self.stale.rollback()
            raise
        self.stale.commit()
        self.active_count += len(changes)
        return changes

    def is_stale(self, machine: str) -> bool:
        """The machine has an active stale alarm (committed); cheap, from any thread."""
        return machine in self.stale.machines

    def stale_machines(self) -> frozenset[str]:
        """Machines with an active stale alarm (committed); cheap, from any thread."""
        return self.stale.machines

    # -- acknowledgement (run through Writer.call, between commits) --------------------------------

    def ack(self, conn: sqlite3.Connection, alarm_id: int, by: Any, note: Any = None) -> dict[str, Any]:
        """Acknowledge an alarm (active or cleared) in its own transaction. Answers
        `{"alarm": ..., "replayed": bool}`: repeating the same ack is harmless (replayed=true, nothing
        changes); a different ack of an acknowledged alarm is a Conflict."""
        by, note = _ack_text(by, "by", MAX_BY, required=True), _ack_text(note, "note", MAX_NOTE) or ""
        with transaction(conn):
            rec = stored_alarm(conn, alarm_id)
            if rec is None:
                raise NotFound(f"no alarm with id {alarm_id}", field="id")
            if rec["acked_at"] is not None:
                if rec["acked_by"] == by and (rec["ack_note"] or "") == note:
                    return {"alarm": alarm_json(rec), "replayed": True}  # nothing written: commits nothing
                raise Conflict(f"alarm {alarm_id} was already acknowledged by {rec['acked_by']!r} at "
                               f"{iso(rec['acked_at'])}", acked_by=rec["acked_by"], acked_at=iso(rec["acked_at"]))
            rec.update(acked_at=now_text(), acked_by=by, ack_note=note)
            conn.execute(f"UPDATE {ALARMS} SET acked_at = ?, acked_by = ?, ack_note = ? WHERE id = ?",
                         (rec["acked_at"], by, note, alarm_id))
            alarm = alarm_json(rec)
            self._outbox(conn, AlarmChange.for_ack(alarm))
        if rec["kind"] == STALE:
            self.stale.acked(rec)
            return {"alarm": alarm, "replayed": False}
        if rec["kind"] == QUALITY:
            self.quality.acked(rec)
            return {"alarm": alarm, "replayed": False}
        st = self._machines.get(rec["machine"])
        if st is not None:
            i = FAULTS.index(rec["fault"])
            current = st.active[i]
            if current is not None and current["id"] == alarm_id:
                st.active[i] = {**current, "acked_at": rec["acked_at"], "acked_by": by, "ack_note": note}
        return {"alarm": alarm, "replayed": False}


def _order(row: tuple) -> tuple[str, int]:
    return row[1], row[0]


def _ack_text(value: Any, field: str, limit: int, required: bool = False) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str) or (required and not value.strip()):
        raise BadRequest(f"'{field}' must be a {'non-empty ' if required else ''}string", field=field)
    value = value.strip()
    if len(value) > limit or any(ord(c) < 32 and c not in "\t\n" for c in value):
        raise BadRequest(f"'{field}' must be at most {limit} characters without control characters", field=field)
    return value


