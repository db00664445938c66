"""Each machine's newest committed reading and active alarms, kept in memory for Modbus and /metrics.

Why: a PLC polls every unit every few hundred milliseconds and Prometheus scrapes every machine;
answering from SQLite would cost a query per poll. The writer hands every commit to `add` (its
thread, after the COMMIT), which costs a dictionary lookup and a row copy per machine in the
batch (one sensor's batch of many readings: C-level max, no sort); the newest
reading of a machine is the one with the greatest time (then the greatest id), as
`fdedge_machines.last_time`, so a late reading never replaces a newer one.

State codes (Modbus register 8, `fdedge_machine_state`), the worst that applies:
0 normal, 1 warning, 2 alarm, 3 stale, 4 suspect data (the newest reading's quality verdict is
`suspect` or `invalid`: edge.scoring.quality).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from edge.alarms.engine import AlarmChange
from edge.alarms.tables import active_alarms
from edge.fdrest import FAULTS, epoch_seconds
from edge.scoring.quality import SUSPECT as SUSPECT_STATUS
from edge.store.machine_state import MACHINES
from edge.store.schema import TABLE
from edge.store.writer import Stored

NORMAL, WARNING, ALARM, STALE, SUSPECT = 0, 1, 2, 3, 4


@dataclass(frozen=True, slots=True)
class Newest:
    """A machine's newest reading, as read at one moment."""

    time: str  # as stored
    epoch: float
    row_id: int
    faults: tuple[float, ...]
    suspect: bool = False  # its quality verdict is suspect or invalid (edge.scoring.quality)


@dataclass(frozen=True, slots=True)
class Seen:
    """What Modbus and /metrics read of one machine at one moment."""

    name: str
    newest: Newest | None  # None: listed for Modbus, never heard from
    alarms: tuple[str, ...]  # severities of its active alarms

    def state(self, now: float, warning: float, alarm: float, stale_after: float) -> int:
        n = self.newest
        if n is None:
            return STALE
        if n.suspect:
            return SUSPECT
        if stale_after > 0 and now - n.epoch > stale_after:
            return STALE
        peak = max(n.faults)
        if "alarm" in self.alarms or peak >= alarm:
            return ALARM
        if self.alarms or peak >= warning:
            return WARNING
        return NORMAL

    def seconds_since(self, now: float) -> float | None:
        return None if self.newest is None else max(now - self.newest.epoch, 0.0)


class Latest:
    """Machines in the order first seen (at start-up: by their first stored reading), one row each
    in numpy arrays sized --max-machines (about 100 bytes a machine held). Written by the writer
    thread (and alarm acks on the event loop) under a lock held for a batch, read under it."""

    def __init__(self, capacity: int, warning: float, alarm: float, stale_after: float = 0.0,
                 is_stale: Callable[[str], bool] | None = None) -> None:
        self.capacity = capacity  # --max-machines: the writer refuses more, this is a second bound
        self.warning, self.alarm, self.stale_after = warning, alarm, stale_after
        self.is_stale = is_stale  # the alarm engine's verdict: silent past its threshold (edge.alarms.stale)
        self._slot: dict[str, int] = {}  # machine -> its row in the arrays
        self._order: list[str] = []  # machines in the order first seen
        self._free: list[int] = []  # rows of machines retention removed
        self._faults = np.zeros((capacity, len(FAULTS)))  # calloc: pages are touched as machines come
        self._epoch = np.zeros(capacity)
        self._ids = np.zeros(capacity, dtype=np.int64)
        self._suspect = np.zeros(capacity, dtype=bool)
        self._times: list[str] = []  # by row
        self._alarms: dict[str, dict[int, str]] = {}  # machine -> alarm id -> severity
        self._lock = threading.Lock()

    # -- writes -----------------------------------------------------------------------------------

    def load(self, conn: sqlite3.Connection) -> None:
        """At start-up, before the writer runs: one index probe per stored machine."""
        machines = conn.execute(f"SELECT name, last_time FROM {MACHINES} ORDER BY first_time, name LIMIT ?",
                                (self.capacity,)).fetchall()
        with self._lock:
            for name, last_time in machines:
                row = conn.execute(f"SELECT id, time, quality_status, {', '.join(FAULTS)} FROM {TABLE} "
                                   "WHERE machine = ? AND time = ? ORDER BY id DESC LIMIT 1",
                                   (name, last_time)).fetchall()
                if row:
                    rid, t, status, *values = row[0]
                    self._put(name, t or "", rid, [float(v or 0.0) for v in values], _suspect(status))
            for rec in active_alarms(conn):
                self._alarms.setdefault(rec["machine"], {})[rec["id"]] = rec["severity"]

    def add(self, stored: list[Stored]) -> None:
        """After each commit, in the writer thread: per batch, each machine's newest row only."""
        with self._lock:
            for s in stored:
                if s.replayed:
                    continue
                b = s.batch
                status = s.quality[0] if s.quality is not None else None
                for j in _newest_rows(b.machines, b.times):
                    self._put(b.machines[j], b.times[j], s.first_id + j, s.faults[j],
                              status is not None and _suspect(status[j]))

    def _put(self, name: str, t: str, row_id: int, faults: Sequence[float] | np.ndarray,
             suspect: bool = False) -> None:
        row = self._slot.get(name)
        if row is None:
            if len(self._slot) >= self.capacity:
                return
            if self._free:
                row = self._free.pop()
                self._times[row] = t
            else:
                row = len(self._times)
                self._times.append(t)
            self._slot[name] = row
            self._order.append(name)
        elif t < self._times[row]:
            return  # a late reading: the newest stays
        else:
            self._times[row] = t
        self._faults[row] = faults
        self._epoch[row] = _epoch(t)
        self._ids[row] = row_id
        self._suspect[row] = suspect

    def alarms_changed(self, changes: Iterable[AlarmChange]) -> None:
        """Raised, escalated, cleared or acknowledged alarms (after their commit)."""
        with self._lock:
            for c in changes:
                per = self._alarms.setdefault(c.machine, {})
                if c.alarm.get("cleared_at") is None:
                    per[c.alarm_id] = c.severity
                else:
                    per.pop(c.alarm_id, None)
                if not per:
                    del self._alarms[c.machine]

    def forget(self, names: Iterable[str]) -> None:
        """Retention removed these machines' last readings (writer thread, after its commit)."""
        with self._lock:
            gone = {n for n in names if n in self._slot}
            if not gone:
                return
            for name in gone:
                self._free.append(self._slot.pop(name))
            self._order = [n for n in self._order if n not in gone]

    # -- reads ------------------------------------------------------------------------------------

    def nth(self, index: int) -> str | None:
        """The machine first seen `index`-th (from 0), or None."""
        order = self._order
        return order[index] if 0 <= index < len(order) else None

    def seen(self, name: str) -> Seen:
        with self._lock:
            return self._seen(name)

    def all(self) -> list[Seen]:
        with self._lock:
            return [self._seen(n) for n in self._order]

    def _seen(self, name: str) -> Seen:
        per = self._alarms.get(name)
        row = self._slot.get(name)
        newest = None if row is None else Newest(self._times[row], float(self._epoch[row]), int(self._ids[row]),
                                                 tuple(self._faults[row].tolist()), bool(self._suspect[row]))
        return Seen(name, newest, tuple(per.values()) if per else ())

    def state(self, seen: Seen, now: float | None = None) -> int:
        """Stale when the machine's `stale` alarm is up (it went silent) or its newest reading's own
        time is older than --stale-after (a sensor that sends, but old data)."""
        if self.is_stale is not None and seen.newest is not None and self.is_stale(seen.name):
            return STALE
        return seen.state(time.time() if now is None else now, self.warning, self.alarm, self.stale_after)


def _suspect(status: int | None) -> bool:
    """A stored quality_status that makes the machine's state `suspect data` (NULL: unknown, not suspect)."""
    return status is not None and status >= SUSPECT_STATUS


def _newest_rows(machines: list[str], times: list[str]) -> Sequence[int]:
    """The index of each machine's newest row in a batch (greatest time, then the last)."""
    n = len(machines)
    if n == 1:
        return (0,)
    if machines.count(machines[0]) == n:  # one sensor's batch: no sort needed
        top = max(times)
        return (n - 1 - list(reversed(times)).index(top),)
    m, t = np.asarray(machines), np.asarray(times)
    order = np.lexsort((np.arange(n), t, m))  # by machine, then time, then position
    sorted_m = m[order]
    ends = np.flatnonzero(np.append(sorted_m[1:] != sorted_m[:-1], True))
    return order[ends].tolist()


def _epoch(stored: str) -> float:
    """Stored time -> epoch seconds; fromisoformat is 5x faster than fdrest's strptime, which
    takes whatever else FD-REST's files hold."""
    try:
        return datetime.fromisoformat(stored).replace(tzinfo=UTC).timestamp()
    except ValueError:
        return epoch_seconds(stored)
