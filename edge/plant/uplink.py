"""The uplink: every stored reading and alarm change, published to a central broker, none lost.

The writer hands each commit over in memory (`offer`: a reference appended to a bounded tail,
no encoding in the writer thread). The uplink's own thread turns the tail into messages (one per
machine per batch, at most PER_MESSAGE readings; edge.plant.uplink_payload), publishes them at
QoS 1 and moves its cursor (edge.plant.uplink_cursor) only over batches whose messages, and every
one before them, the broker acknowledged. When the tail does not continue where the uplink is
(the link was down, the tail overflowed, the process restarted), it reads SQLite from its position
instead, in id order, until it meets the tail again. So the order per machine is the order of
storage, and a reading arrives twice only if its message was sent but not acknowledged (a lost
PUBACK, or the last second before a crash): the same key both times.

Bounds: at most TAIL_ROWS readings in memory and WINDOW messages unacknowledged; past
`backlog_rows` readings waiting, the oldest are skipped (the cursor jumps to the newest
`backlog_rows`), counted by reason and logged once per skip; readings retention deleted before
they were sent are counted the same way."""

from __future__ import annotations

import logging
import math
import ssl
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from edge.plant import uplink_cursor as cursor
from edge.plant.broker import BrokerURL
from edge.plant.uplink_link import Link
from edge.plant.uplink_payload import PER_MESSAGE, Encoder, split_by_machine
from edge.scoring.quality import as_json
from edge.store.database import connect
from edge.store.schema import QUALITY_AT, SELECT_COLUMNS, database_id
from edge.store.writer import Stored

log = logging.getLogger(__name__)

VERSION_AT = SELECT_COLUMNS.index("model_version")  # a SELECT_LIST row's scoring model

TAIL_ROWS = 4096  # readings kept in memory for the uplink; beyond, it reads them back from SQLite
CHUNK_ROWS = 2000  # readings per batch, from the tail or per read from SQLite
WINDOW = 32  # messages published and not yet acknowledged
SAVE_EVERY_S = 1.0  # the cursor is written at most this often (and at stop)
BACKLOG_CHECK_S = 60.0  # the backlog bound is checked on (re)connecting and then this often
LINGER_S = 0.05  # a few readings wait this long for more: at single-reading load, one message per
# commit cost every request a publish and three thread wake-ups
ALARM_POLL_S = 5.0
ALARM_BATCH = 100
SKIP_REASONS = ("backlog", "retention")


@dataclass
class _Entry:
    """One commit's readings as the writer stored them."""

    first_id: int
    times: list[str]
    machines: list[str]
    x: list[list]
    y: np.ndarray
    at: float  # time.monotonic() of the commit
    quality: tuple[list, list, list] | None = None  # the stored quality columns (status, score, reasons)
    version: str | None = None  # the model store version that scored the batch

    @property
    def last_id(self) -> int:
        return self.first_id + len(self.times) - 1

    def after(self, position: int) -> _Entry:
        """The part of this entry after `position` (which lies inside it)."""
        k = position + 1 - self.first_id
        q = self.quality
        return _Entry(position + 1, self.times[k:], self.machines[k:], self.x[k:], self.y[k:], self.at,
                      None if q is None else (q[0][k:], q[1][k:], q[2][k:]), self.version)


@dataclass
class _Chunk:
    """Published messages that move a cursor to `end_id` once all are acknowledged (none: a skip)."""

    end_id: int
    pending: set[int]
    rows: int
    messages: int
    since: float


class _Stream:
    """One ordered stream (readings, or alarm changes): what is acknowledged in order, what is sent."""

    def __init__(self, position: int) -> None:
        self.acked = self.sent = position
        self.chunks: deque[_Chunk] = deque()
        self.published = 0
        self.messages = 0

    def add(self, chunk: _Chunk) -> None:
        self.chunks.append(chunk)
        self.sent = max(self.sent, chunk.end_id)

    def settle(self, acks: set[int]) -> int:
        """Match acknowledgements; advance over the finished chunks at the front. Returns the
        acknowledgements matched (the others belong to a chunk not yet registered, or the other stream)."""
        matched = 0
        for chunk in self.chunks:
            if chunk.pending and acks:
                hit = chunk.pending & acks
                if hit:
                    chunk.pending -= hit
                    acks -= hit
                    matched += len(hit)
        while self.chunks and not self.chunks[0].pending:
            done = self.chunks.popleft()
            self.acked = max(self.acked, done.end_id)
            self.published += done.rows
            self.messages += done.messages
        return matched


class Uplink:
    def __init__(self, db_path: Path, url: BrokerURL, tls: ssl.SSLContext | None, *, prefix: str, appliance: str,
                 model_version: str, backlog_rows: int, tail_rows: int = TAIL_ROWS, window: int = WINDOW) -> None:
        self.db_path, self.url, self.backlog_rows = db_path, url, backlog_rows
        self.tail_rows, self.window = tail_rows, window
        conn = connect(db_path, busy_ms=5000)
        try:
            readings, alarms = cursor.setup(conn)
            self.newest_id = cursor.newest(conn)
            self.encoder = Encoder(prefix, appliance, model_version, database_id(conn))
        finally:
            conn.close()
        self.readings, self.alarms = _Stream(readings), _Stream(alarms)
        self.skipped = dict.fromkeys(SKIP_REASONS, 0)
        self.link = Link(url, tls, f"fdedge-{appliance}", window=window, on_ack=self._ack, on_change=self._changed)
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._tail: deque[_Entry] = deque()
        self._tail_count = 0
        self._acks: list[int] = []
        self._early: set[int] = set()  # acknowledged before their chunk was registered
        self._fresh = self._reconnected = self._stopping = False
        self._idle = False  # the uplink's thread waits for readings: an offer wakes it
        self._linger: float | None = None  # the tail waits until then to fill a message
        self._alarms_due = True
        self._alarms_polled = 0.0
        self._inflight = 0
        self._dropped_at: float | None = None  # commit time of the oldest reading the tail let go
        self._behind_since: float | None = time.monotonic() if self.newest_id > readings else None
        self._oldest: float | None = self._behind_since
        self._saved = (readings, alarms)
        self._saved_at = 0.0
        self._backlog_checked = -math.inf
        self._problem: str | None = None
        self._conn: Any = None
        self._thread: threading.Thread | None = None

    # -- other threads ------------------------------------------------------------------------------

    def start(self) -> None:
        log.info("uplink: publishing to %s as %s (topics %s/%s/+/readings and /alarms); cursor at reading %d, "
                 "%d newer stored", self.url, self.encoder.appliance, self.encoder.prefix, self.encoder.appliance,
                 self.readings.acked, max(self.newest_id - self.readings.acked, 0))
        self.link.start()
        self._thread = threading.Thread(target=self._run, name="fdedge-uplink", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
        self.link.stop()

    def offer(self, stored: list[Stored]) -> None:
        """The writer thread, after a commit: references only, O(batches)."""
        now = time.monotonic()
        with self._wake:
            for s in stored:
                b = s.batch
                n = len(b)
                self.newest_id = s.first_id + n - 1
                if self._tail_count + n > self.tail_rows:  # read back from SQLite instead
                    if self._dropped_at is None:
                        self._dropped_at = self._tail[0].at if self._tail else now
                    self._tail.clear()
                    self._tail_count = 0
                    continue
                self._tail.append(_Entry(s.first_id, b.times, b.machines, b.rows, s.faults, now, s.quality,
                                         s.model_version))
                self._tail_count += n
            self._fresh = True
            if self._idle:
                self._wake.notify()

    def offer_alarms(self) -> None:
        """Alarm changes were committed (their outbox rows with them)."""
        with self._wake:
            self._alarms_due = self._fresh = True
            self._wake.notify()

    def _ack(self, mid: int) -> None:  # paho's thread
        with self._wake:
            self._acks.append(mid)
            self._wake.notify()

    def _changed(self) -> None:  # paho's thread
        with self._wake:
            self._reconnected = True
            self._wake.notify()

    # -- what operators see -------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self.link.connected

    def lag_rows(self) -> int:
        return max(self.newest_id - self.readings.acked, 0)

    def lag_seconds(self) -> float:
        """Since the oldest reading not yet acknowledged was committed (for readings read back from
        SQLite: since the uplink fell behind, or since start)."""
        if not self.lag_rows():
            return 0.0
        with self._wake:
            waiting = self._dropped_at or (self._tail[0].at if self._tail else None)
        known = [t for t in (self._oldest, waiting) if t is not None]
        return max(time.monotonic() - min(known), 0.0) if known else 0.0

    def status(self) -> dict[str, Any]:
        e, r = self.encoder, self.readings
        return {
            "enabled": True,
            "broker": str(self.url),
            "state": self.link.state,
            "connected": self.link.connected,
            "appliance_id": e.appliance,
            "topics": {"readings": f"{e.prefix}/{e.appliance}/+/readings", "alarms": e.alarm_topic},
            "mode": "catching_up" if self._behind_since is not None else "live",
            "cursor": r.acked,
            "cursor_saved": self._saved[0],
            "newest_id": self.newest_id,
            "lag_rows": self.lag_rows(),
            "lag_seconds": round(self.lag_seconds(), 3),
            "in_flight_messages": self._inflight,
            "published": {"readings": r.published, "messages": r.messages + self.alarms.messages,
                          "alarms": self.alarms.published},
            "skipped_rows": dict(self.skipped),
            "backlog_rows": self.backlog_rows,
            "last_error": self.link.last_error or self._problem,
        }

    # -- the uplink's thread ------------------------------------------------------------------------

    def _run(self) -> None:
        self._conn = connect(self.db_path, busy_ms=5000)
        try:
            while not self._stopping:
                try:
                    self._step()
                except Exception as exc:  # the database busy or a bug: retried, never the end of the uplink
                    self._report(exc)
                    self._sleep(1.0)
            self._drain()
        finally:
            try:
                self._save(force=True)
            except Exception as exc:  # noted; the next start repeats what this one could not record
                self._report(exc)
            self._conn.close()

    def _step(self) -> None:
        self._settle()
        if self.link.connected and self._inflight < self.window:
            if self._send_readings() or self._send_alarms():
                return
        unsaved = self._saved != (self.readings.acked, self.alarms.acked)
        timeout = SAVE_EVERY_S if unsaved else ALARM_POLL_S
        linger, self._linger = self._linger, None
        if linger is not None:
            timeout = min(timeout, max(linger - time.monotonic(), 0.0))
        # woken by an offer only when it could send at once; acks and the link wake it otherwise
        self._sleep(timeout, idle=linger is None and self.link.connected and self._inflight < self.window)

    def _sleep(self, timeout: float, idle: bool = True) -> None:
        with self._wake:
            if not (self._stopping or self._acks or self._reconnected
                    or (idle and self._fresh and self.link.connected and self._inflight < self.window)):
                self._idle = idle
                self._wake.wait(timeout)
                self._idle = False
            self._fresh = False
            if self._reconnected:
                self._reconnected = False
                self._backlog_checked = -math.inf

    def _drain(self, timeout: float = 1.0) -> None:
        """At stop: a moment for the acknowledgements on their way, so a restart repeats less."""
        deadline = time.monotonic() + timeout
        while self._inflight and self.link.connected and time.monotonic() < deadline:
            self._settle()
            time.sleep(0.02)
        self._settle()

    def _settle(self) -> None:
        with self._wake:
            acks, self._acks = self._acks, []
        if acks or self._early:
            pending = self._early | set(acks)
            matched = self.readings.settle(pending) + self.alarms.settle(pending)
            self._inflight -= matched
            self._early = pending
        self._oldest = self.readings.chunks[0].since if self.readings.chunks else self._behind_since
        self._save()

    def _save(self, force: bool = False) -> None:
        position = (self.readings.acked, self.alarms.acked)
        now = time.monotonic()
        if position == self._saved or (not force and now - self._saved_at < SAVE_EVERY_S):
            return
        cursor.save(self._conn, *position)
        self._saved, self._saved_at = position, now
        self._problem = None

    def _report(self, exc: Exception) -> None:
        text = f"{type(exc).__name__}: {exc}"
        if text != self._problem:
            log.warning("uplink: %s; retrying", text, exc_info=not isinstance(exc, OSError | ValueError)
                        and type(exc).__module__ != "sqlite3")
        self._problem = text

    # readings

    def _send_readings(self) -> bool:
        now = time.monotonic()
        if self.newest_id - self.readings.sent > self.backlog_rows and now - self._backlog_checked >= BACKLOG_CHECK_S:
            self._backlog_checked = now
            self._check_backlog()
        entries = self._take_tail(self.readings.sent)
        if entries:
            self._publish_entries(entries)
            return True
        if self._linger is not None:
            return False
        if self.newest_id <= self.readings.sent:
            return False
        return self._catch_up()

    def _take_tail(self, position: int) -> list[_Entry]:
        """Entries continuing right after `position`, up to CHUNK_ROWS readings; none at a gap."""
        taken: list[_Entry] = []
        with self._wake:
            tail = self._tail
            while tail and tail[0].last_id <= position:
                self._tail_count -= len(tail.popleft().times)
            if not tail or tail[0].first_id > position + 1:
                return taken
            now = time.monotonic()
            if self._tail_count < PER_MESSAGE and now - tail[0].at < LINGER_S and not self._stopping:
                self._linger = tail[0].at + LINGER_S
                return taken
            if tail[0].first_id <= position:
                head = tail.popleft()
                self._tail_count -= len(head.times)
                tail.appendleft(head.after(position))
                self._tail_count += len(tail[0].times)
            rows = 0
            while tail and tail[0].first_id == position + 1 and rows < CHUNK_ROWS:
                entry = tail.popleft()
                self._tail_count -= len(entry.times)
                taken.append(entry)
                rows += len(entry.times)
                position = entry.last_id
            self._behind_since = self._dropped_at = None  # live again
        return taken

    def _publish_entries(self, entries: list[_Entry]) -> None:
        if len(entries) == 1:
            e = entries[0]
            times, machines, x, y = e.times, e.machines, e.x, e.y.tolist()
        else:
            times = [t for e in entries for t in e.times]
            machines = [m for e in entries for m in e.machines]
            x = [row for e in entries for row in e.x]
            y = np.vstack([e.y for e in entries]).tolist()
        first = entries[0].first_id
        quality = [q for e in entries for q in _triples(e.quality, len(e.times))]
        versions = [e.version for e in entries for _ in e.times]
        self._publish_rows(range(first, first + len(times)), times, machines, x, y, entries[0].at, quality,
                           versions)

    def _catch_up(self) -> bool:
        conn, stream = self._conn, self.readings
        now = time.monotonic()
        if self._behind_since is None:
            self._behind_since = self._dropped_at or now
        rows = cursor.rows_after(conn, stream.sent, CHUNK_ROWS)
        if not rows:  # everything after the position is gone
            self.newest_id = max(cursor.newest(conn), stream.sent)
            return False
        gap = rows[0][0] - stream.sent - 1
        if gap > 0:
            self._skip_counted(rows[0][0] - 1, "retention", gap)
        self._publish_rows([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows],
                           [r[3:38] for r in rows], [r[38:46] for r in rows], self._behind_since,
                           [r[QUALITY_AT:QUALITY_AT + 3] for r in rows], [r[VERSION_AT] for r in rows])
        return True

    def _check_backlog(self) -> None:
        stream = self.readings
        newest = cursor.newest(self._conn)
        self.newest_id = max(self.newest_id, newest)
        if newest - stream.sent <= self.backlog_rows:
            return
        first = cursor.first_after(self._conn, stream.sent)  # ids are consecutive after the oldest kept
        if first is None:
            return
        if first > stream.sent + 1:
            self._skip_counted(first - 1, "retention", first - 1 - stream.sent)
        if newest - stream.sent > self.backlog_rows:
            to = newest - self.backlog_rows
            self._skip_counted(to, "backlog", to - stream.sent)

    def _skip_counted(self, to: int, reason: str, count: int) -> None:
        """Move past readings that will never be sent: counted, logged, never silent."""
        stream = self.readings
        first = stream.sent + 1
        stream.add(_Chunk(to, set(), 0, 0, time.monotonic()))
        self.skipped[reason] += count
        why = (f"more than --uplink-backlog-rows {self.backlog_rows} readings were waiting"
               if reason == "backlog" else "retention deleted them before they were sent")
        log.warning("uplink: skipped %d readings (ids %d-%d): %s; counted in fdedge_uplink_skipped_rows_total"
                    "{reason=\"%s\"}, sending from id %d on", count, first, to, why, reason, to + 1)

    def _publish_rows(self, ids: Sequence[int], times: Sequence[str], machines: Sequence[str],
                      x: Sequence[Sequence[float]], y: Sequence[Sequence[float]], since: float,
                      quality: Sequence[Sequence[Any]], versions: Sequence[str | None]) -> None:
        """One message per machine, model version and PER_MESSAGE readings, in id order: a message
        says which model scored all of its readings (a swap mid-batch splits it)."""
        enc, publish = self.encoder, self.link.publish
        mids: list[int] = []
        for machine, idx in split_by_machine(machines).items():
            topic = enc.topic(machine)
            for version, run in _runs(idx, versions):
                for k in range(0, len(run), PER_MESSAGE):
                    part = run[k:k + PER_MESSAGE]
                    payload = enc.readings(machine, [ids[i] for i in part], [times[i] for i in part],
                                           [x[i] for i in part], [y[i] for i in part],
                                           [as_json(*quality[i]) for i in part], version)
                    mids.append(publish(topic, payload))
        self._inflight += len(mids)
        self.readings.add(_Chunk(ids[-1], set(mids), len(ids), len(mids), since))

    # alarm changes

    def _send_alarms(self) -> bool:
        now = time.monotonic()
        with self._wake:
            due = self._alarms_due or now - self._alarms_polled >= ALARM_POLL_S
            self._alarms_due = False
        if not due:
            return False
        self._alarms_polled = now
        rows = cursor.alarms_after(self._conn, self.alarms.sent, ALARM_BATCH)
        if not rows:
            return False
        enc = self.encoder
        mids = [self.link.publish(enc.alarm_topic, enc.alarm(orjson.loads(body))) for _, body in rows]
        self._inflight += len(mids)
        self.alarms.add(_Chunk(rows[-1][0], set(mids), len(rows), len(mids), now))
        if len(rows) == ALARM_BATCH:
            self._alarms_due = True
        return True


def _runs(idx: list[int], versions: Sequence[str | None]) -> list[tuple[str | None, list[int]]]:
    """`idx` cut where the scoring model changes, in order (one run for a batch one model scored)."""
    first = versions[idx[0]]
    if all(versions[i] == first for i in idx):
        return [(first, idx)]
    out: list[tuple[str | None, list[int]]] = []
    for i in idx:
        if not out or out[-1][0] != versions[i]:
            out.append((versions[i], []))
        out[-1][1].append(i)
    return out


def _triples(quality: tuple[list, list, list] | None, n: int) -> list[tuple]:
    """Stored quality columns as one (status, score, reasons) per row (unknown when absent)."""
    if quality is None:
        return [(None, None, None)] * n
    return list(zip(*quality, strict=True))
