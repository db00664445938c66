"""The single writer: scores and commits everything queued since its last commit in one go.

Concurrent requests share one onnxruntime call and one transaction (group commit); a request is
answered only after the transaction holding its readings has committed, and with `--sync full`
only after that commit is on disk (edge.store.walsync, which syncs while the writer goes on).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge import memory
from edge.alarms.engine import AlarmChange, AlarmEngine
from edge.errors import Conflict, Gone, InvalidReading, StartupError, Unavailable
from edge.fdrest import FAULTS, now_text
from edge.ingest.bodies import DIGEST_VERSION, Batch
from edge.scoring.explain import Baseline, explain
from edge.scoring.model import Model
from edge.scoring.quality import UNKNOWN, Quality, Verdicts, header
from edge.store import machine_state, schema
from edge.store.checkpointer import CHANGES as CHECKPOINT_CHANGES
from edge.store.checkpointer import Checkpointer
from edge.store.database import transaction
from edge.store.reserve import RESERVE_BYTES, Reserve
from edge.store.rollups import Rollups
from edge.store.schema import QUALITY_COLUMNS, TABLE, insert_rows, open_database
from edge.store.walsync import WalSyncer

log = logging.getLogger(__name__)

QUALITY_LIST = ", ".join(QUALITY_COLUMNS)
MAX_GROUP_ROWS = 20_000
TRIM_AFTER_ROWS = 1000  # a group this large leaves megabytes of freed heap behind
TRIM_WHEN_IDLE_S = 0.2  # ...handed back once ingest pauses this long, so a burst leaves no plateau


@dataclass
class Stored:
    """What a committed batch answers with, and what is published to live clients."""

    first_id: int
    faults: np.ndarray  # (n, 8)
    batch: Batch
    replayed: bool = False  # an idempotency key seen before: nothing new was stored
    model_version: str | None = None  # the store version that scored it (None: replayed, or no store)
    # the rows' data-quality verdict as stored (schema.QUALITY_COLUMNS: status, score, reasons lists)
    quality: tuple[list, list, list] | None = None

    def quality_header(self) -> str:
        """`X-FDEdge-Quality` for this batch: its worst reading's verdict (edge.scoring.quality)."""
        return quality_header(self.quality)


@dataclass
class _Ingest:
    batch: Batch
    key: str | None
    future: asyncio.Future
    digest: str | None = None  # sha256 of the request body, kept with its idempotency key


@dataclass(frozen=True)
class _Key:
    """An idempotency key stored earlier: its rows and the digest of the body that stored them."""

    first_id: int
    last_id: int
    digest: str | None  # None: stored by a version that kept no digest


@dataclass
class _Task:
    fn: Callable[[sqlite3.Connection], Any]
    future: asyncio.Future


_STOP = object()


def _settle_all(pending: list[tuple[asyncio.Future, Any, BaseException | None]]) -> None:
    for future, result, error in pending:
        if future.done():
            continue  # the client went away; its readings are stored all the same
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)


def _key_reused(key: str) -> Conflict:
    return Conflict(f"Idempotency-Key {key[:64]!r} was used before for a different body; "
                    "send each new request with a new key", reason="idempotency_key_reused", key=key[:200])


def storage_error(exc: sqlite3.Error) -> Unavailable:
    text = str(exc)
    if "full" in text:
        return Unavailable("the disk holding the database is full; nothing was stored", reason="disk_full")
    if "locked" in text or "busy" in text:
        return Unavailable("the database is locked by another process; nothing was stored, retry",
                           reason="database_locked")
    if "readonly" in text or "read-only" in text:
        return Unavailable("the database is read-only; nothing was stored", reason="read_only")
    return Unavailable(f"storage error ({text}); nothing was stored", reason="storage_error")


class Writer:
    def __init__(self, db_path: Path, model: Model, *, sync: str = "full", init: bool = False, max_mb: float = 0.0,
                 max_machines: int = 1000,
                 on_commit: Callable[[list[Stored]], None] | None = None,
                 observe: Callable[[str, float], None] | None = None,
                 alarms: AlarmEngine | None = None,
                 on_alarms: Callable[[list[AlarmChange]], None] | None = None) -> None:
        # `full` is the WAL syncer's fdatasync before each answer, not SQLite's own sync in COMMIT.
        self.durable = sync == "full"
        self.wal_path = Path(str(db_path) + "-wal")
        self.db_path = Path(db_path)
        self.max_bytes = int(max_mb * 1024 * 1024)
        self._checkpoint_tried = 0.0
        self.reserve = Reserve(self.db_path)
        limit = schema.STARTUP_CHECK_BYTES
        # checked now, or by edge.store.integrity in the background once serving
        self.checked_at_start = _size(self.db_path) <= limit
        try:
            self.conn = open_database(db_path, sync="normal", init=init, max_mb=max_mb, check_below_bytes=limit)
        except StartupError:
            if not self.reserve.release():  # a full disk: the reserve's room lets SQLite open the file
                raise
            self.conn = open_database(db_path, sync="normal", init=init, max_mb=max_mb, check_below_bytes=limit)
        if not self.reserve.given_up:
            self.reserve.take()
        self.corrupt: str | None = None  # what the background integrity check found
        self.max_machines = max_machines
        self.machine_count: int = machine_state.count(self.conn)
        self.rollups = Rollups()
        redone = self.rollups.load(self.conn, TABLE)
        if redone:
            log.info("rolled up %d readings the last run had not stored in its rollups", redone)
        self._known_machines: set[str] = set()  # names known to be stored (a cache, bounded)
        self.alarms = alarms
        self.on_alarms = on_alarms
        if alarms is not None:
            # Before the thread starts (the connection is not in use yet), so a problem stops start-up.
            try:
                alarms.setup(self.conn)
            except sqlite3.Error as exc:
                self.conn.close()
                raise StartupError(f"database {db_path}: cannot set up the alarm tables: {exc}") from None
        self.model = model
        self.model_version: str | None = None  # stored with each reading; changed with `model`, on this thread
        self.quality = Quality(model.training_stats, max_machines=max_machines)
        self._baseline: tuple[Model, Baseline] | None = None  # the explanations' baseline, per model
        self.on_commit = on_commit
        # called in this thread right after retention's COMMIT removed these machines' last readings
        self.on_machines_gone: Callable[[list[str]], None] | None = None
        self.observe = observe or (lambda name, value: None)
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._gathered: list[_Ingest] = []
        self._pending: list[tuple[asyncio.Future, Any, BaseException | None]] = []
        self._trim_due = False
        self._syncer: WalSyncer | None = None
        self.checkpointer: Checkpointer | None = None
        self._changes = 0  # conn.total_changes when the syncer last heard from us
        self._noted = 0  # ... and when the checkpointer did

    # -- event-loop side ----------------------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        if self.durable:
            self._syncer = WalSyncer(self.wal_path, self._deliver)
        self.conn.execute("PRAGMA wal_autocheckpoint = 0")  # the checkpointer's thread does them
        self.checkpointer = Checkpointer(self.db_path)
        self.checkpointer.start()
        self._thread = threading.Thread(target=self._work, name="fdedge-writer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        stopped = True
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join(timeout=10)
            stopped = not self._thread.is_alive()
            self._thread = None
        if self._syncer is not None:
            self._syncer.stop()
            self._syncer = None
        if self.checkpointer is not None:
            self.checkpointer.stop()
            self.checkpointer = None
        try:
            if stopped:  # the thread has stopped: the connection is ours
                self.flush_rollups(self.conn)
        except sqlite3.Error as exc:
            log.warning("could not store the rollups at stop (%s); the next start rolls them up again", exc)
        self.conn.close()

    @property
    def alive(self) -> bool:
        return (self._thread is not None and self._thread.is_alive()
                and (self._syncer is None or self._syncer.alive)
                and (self.checkpointer is None or self.checkpointer.alive))

    async def ingest(self, batch: Batch, key: str | None = None, digest: str | None = None) -> Stored:
        """Score and store `batch`; answered once committed (and synced with --sync full). A `key`
        seen before answers what it stored then, if `digest` (of the request body) matches."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._gathered.append(_Ingest(batch, key, future, digest))
        if len(self._gathered) == 1:
            # Hand over everything gathered in this loop iteration at once: one wake-up of the
            # writer per iteration instead of one per request.
            loop.call_soon(self._hand_over)
        return await future

    def _hand_over(self) -> None:
        gathered, self._gathered = self._gathered, []
        self._queue.put(gathered)

    async def call(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        """Run maintenance (retention, readiness probe) in the writer thread, between commits."""
        future = asyncio.get_running_loop().create_future()
        self._queue.put(_Task(fn, future))
        return await future

    # -- writer thread --------------------------------------------------------------------------

    def _next(self) -> Any:
        if not self._trim_due:
            return self._queue.get()
        try:
            return self._queue.get(timeout=TRIM_WHEN_IDLE_S)
        except queue.Empty:
            self._trim_due = False
            memory.trim(min_interval=0)
            return self._queue.get()

    def _work(self) -> None:
        """The writer thread: take everything queued, commit it as one group, run tasks between groups."""
        while True:
            item = self._next()
            if item is _STOP:
                return
            group: list[_Ingest] = []
            tasks: list[_Task] = []
            rows = 0
            while True:
                if isinstance(item, list):
                    group.extend(item)
                    rows += sum(len(job.batch) for job in item)
                elif isinstance(item, _Task):
                    tasks.append(item)
                elif item is _STOP:
                    self._queue.put(_STOP)
                    break
                if rows >= MAX_GROUP_ROWS:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            if group:
                try:
                    self._commit_group(group)
                except Exception:  # a bug must cost one group, never the writer thread
                    self._fail_group(group)
                if rows >= TRIM_AFTER_ROWS:
                    self._trim_due = True
                    memory.trim()
            for task in tasks:
                self._run_task(task)
            del group, tasks, item  # not held (with their readings) while waiting for the next
            self._flush()
            if self.checkpointer is not None and self.checkpointer.behind:
                self.checkpointer.finish(self.conn)

    def _settle(self, future: asyncio.Future, result: Any = None, error: BaseException | None = None) -> None:
        """Collected and handed to the event loop once per group: one wake-up, not one per request."""
        self._pending.append((future, result, error))

    def _flush(self) -> None:
        changes = self.conn.total_changes  # read once: the checkpointer and the syncer both want it
        if self.checkpointer is not None and changes != self._noted:
            # a wrapped 32-bit count counts as many changes
            self.checkpointer.note(changes - self._noted if changes > self._noted else CHECKPOINT_CHANGES)
            self._noted = changes
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        if self._syncer is not None:
            self._syncer.submit(pending, wrote=changes != self._changes)
            self._changes = changes
            return
        assert self._loop is not None
        self._loop.call_soon_threadsafe(_settle_all, pending)

    def _deliver(self, pending: list, error: OSError | None) -> None:
        """Runs in the syncer's thread once the commits behind `pending` are on disk."""
        if error is not None:
            failed = Unavailable(f"the readings were written but the disk did not confirm them ({error}); "
                                 "they may not survive a power cut", reason="sync_failed")
            pending = [(future, None, failed) if isinstance(result, Stored) and not result.replayed
                       else (future, result, exc) for future, result, exc in pending]
        assert self._loop is not None
        self._loop.call_soon_threadsafe(_settle_all, pending)

    def _fail_group(self, group: list[_Ingest]) -> None:
        log.exception("unexpected error while storing a group of %d requests", len(group))
        try:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass
        self.rollups.rollback()
        if self.alarms is not None:
            self.alarms.rollback()
        settled = {id(future) for future, _, _ in self._pending}
        for job in group:
            if id(job.future) not in settled:
                self._settle(job.future, error=Unavailable("internal error while storing; nothing was stored",
                                                           reason="internal_error"))

    def _run_task(self, task: _Task) -> None:
        try:
            result = task.fn(self.conn)
        except sqlite3.Error as exc:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            self._settle(task.future, error=storage_error(exc))
        except BaseException as exc:  # settle, never kill the writer thread
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            self._settle(task.future, error=exc)
        else:
            self._settle(task.future, result)

    def _known_keys(self, group: list[_Ingest]) -> dict[str, _Key]:
        keys = [job.key for job in group if job.key]
        if not keys:
            return {}
        marks = ",".join("?" * len(keys))
        rows = self.conn.execute(f"SELECT key, first_id, last_id, body_sha256 FROM fdedge_ingest_keys "
                                 f"WHERE key IN ({marks})", keys).fetchall()
        return {key: _Key(first, last, digest) for key, first, last, digest in rows}

    def _commit_group(self, group: list[_Ingest]) -> None:
        """Score and store one group in one transaction, answer its requests, then publish."""
        split = self._split_replays(group)
        if split is None:
            return
        fresh, replays = split
        stored: list[Stored] = []
        changes: list[AlarmChange] = []
        if fresh and self.reserve.given_up and self.reserve.ingest_paused(self._room_inside):
            free = self.reserve.free_bytes() or 0
            for job in fresh:
                self._settle(job.future, error=Unavailable(
                    f"the disk holding the database is full ({free // 1024} KiB free); ingest is paused until "
                    f"there are {2 * RESERVE_BYTES >> 20} MiB free or retention has made room; nothing was stored",
                    reason="disk_full"))
            fresh = []
        if fresh and self.corrupt is not None:
            for job in fresh:
                self._settle(job.future, error=Unavailable(
                    f"the database failed its integrity check ({self.corrupt[:200]}); nothing was stored",
                    reason="database_corrupt"))
            fresh = []
        if fresh:
            fresh = self._within_machine_cap(fresh)
        if fresh and self.max_bytes and self.wal_over_cap():
            for job in fresh:
                self._settle(job.future, error=Unavailable(
                    "the database and its WAL reached the size cap (--max-db-mb) and a reader keeps the WAL "
                    "from being checkpointed; nothing was stored", reason="disk_full"))
            fresh = []
        if fresh:
            fresh, x, y = self._score(fresh)
        if fresh:
            stored, changes = self._store(fresh, x, y, self._judge(fresh, x))
        for job, known in replays:
            try:
                self._settle(job.future, self._replay(job, known))
            except (Conflict, Gone) as exc:
                self._settle(job.future, error=exc)
        self._publish(stored, changes)

    def _within_machine_cap(self, fresh: list[_Ingest]) -> list[_Ingest]:
        """Requests whose new machines fit under --max-machines; the others are refused whole.

        Why: a careless sensor (a serial number per reading as its name) or a hostile one would
        otherwise make every name a machine, each costing memory and a row in every overview."""
        known = self._known_machines
        names = {m for job in fresh for m in job.batch.machines} - known
        if not names:
            return fresh
        if len(known) > 4 * self.max_machines:
            known.clear()
        try:
            found = _found_machines(self.conn, names)
        except sqlite3.Error:
            return fresh  # the transaction will meet the same error and answer it
        known.update(found)
        new_in_group: set[str] = set()
        keep: list[_Ingest] = []
        for job in fresh:
            new = {m for m in job.batch.machines if m not in known} - new_in_group
            if new and self.machine_count + len(new_in_group) + len(new) > self.max_machines:
                name = sorted(new)[0]
                self._settle(job.future, error=InvalidReading(
                    f"machine {name[:64]!r} would be machine {self.machine_count + len(new_in_group) + 1} "
                    f"of at most {self.max_machines} (--max-machines); nothing was stored",
                    reason="too_many_machines", field="machine", limit=self.max_machines))
                continue
            new_in_group |= new
            keep.append(job)
        return keep

    def flush_rollups(self, conn: sqlite3.Connection) -> bool:
        """Store the buckets changed since the last flush (a task, when ingest is quiet)."""
        if not self.rollups.due(now=float("inf")):
            return False
        try:
            with transaction(conn):
                self.rollups.flush(conn)
        except BaseException:
            self.rollups.rollback()
            raise
        self.rollups.commit()
        return True

    def stopped_by(self, finding: str) -> None:
        """The integrity check found damage: ingest stops (read by the writer thread)."""
        self.corrupt = finding

    def backfill_rollups(self, conn: sqlite3.Connection) -> int:
        """One chunk of the rollup backfill (a task between groups); returns the rows rolled up."""
        before = self.rollups.backfill_next
        try:
            with transaction(conn):
                rows = self.rollups.backfill_chunk(conn, TABLE)
        except BaseException:
            self.rollups.rollback()
            self.rollups.backfill_next = before
            raise
        self.rollups.commit()
        return rows

    def machines_gone(self, gone: int) -> None:
        """Retention removed `gone` machines' last readings: they no longer count toward --max-machines."""
        if gone:
            self.machine_count = machine_state.count(self.conn)
            self._known_machines.clear()

    def _room_inside(self) -> int:
        """Free pages inside the database file (retention's deletions), in bytes."""
        try:
            pages = self.conn.execute("PRAGMA freelist_count").fetchall()[0][0]
            return pages * self.conn.execute("PRAGMA page_size").fetchall()[0][0]
        except sqlite3.Error:
            return 0

    def checkpoint_soon(self) -> None:
        if self.checkpointer is not None:
            self.checkpointer.soon()

    def wal_over_cap(self) -> bool:
        """The database plus its WAL exceed --max-db-mb. max_page_count bounds the database file
        only; a reader holding an old snapshot keeps every later commit in the WAL, which then
        grows without bound. Over the cap, a checkpoint is tried (at most once a second) first.
        Call on the writer's connection, outside a transaction."""
        size = _size(self.db_path) + _size(self.wal_path)
        if size <= self.max_bytes:
            return False
        now = time.monotonic()
        if now - self._checkpoint_tried >= 1.0:
            self._checkpoint_tried = now
            for _ in range(5):  # busy while the checkpointer's thread runs one: it takes milliseconds
                try:
                    busy = self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()[0][0]
                except sqlite3.Error:
                    break
                if not busy:
                    break
                time.sleep(0.02)
            size = _size(self.db_path) + _size(self.wal_path)
        return size > self.max_bytes

    def _split_replays(self, group: list[_Ingest]) -> tuple[list[_Ingest], list[tuple[_Ingest, _Key | None]]] | None:
        """Requests to store, and those whose idempotency key was stored before (or earlier in this
        group: None). None when the keys could not be looked up; every request is answered."""
        try:
            known = self._known_keys(group)
        except sqlite3.Error as exc:
            for job in group:
                self._settle(job.future, error=storage_error(exc))
            return None
        fresh: list[_Ingest] = []
        replays: list[tuple[_Ingest, _Key | None]] = []
        seen: dict[str, str | None] = {}  # key -> digest, for keys first sent in this group
        for job in group:
            if job.key and job.key in known:
                replays.append((job, known[job.key]))
            elif job.key and job.key in seen:
                if _differ(seen[job.key], job.digest):
                    self._settle(job.future, error=_key_reused(job.key))
                else:
                    replays.append((job, None))
            else:
                fresh.append(job)
                if job.key:
                    seen[job.key] = job.digest
        return fresh, replays

    def _judge(self, fresh: list[_Ingest], x: np.ndarray) -> Verdicts:
        """The group's data-quality verdicts (edge.scoring.quality), against the current model's
        training statistics (a swapped-in model brings its own)."""
        if self.quality.stats is not self.model.training_stats:
            self.quality = Quality(self.model.training_stats, max_machines=self.max_machines)
        started = time.perf_counter()
        machines = fresh[0].batch.machines if len(fresh) == 1 else [m for job in fresh for m in job.batch.machines]
        try:
            verdicts = self.quality.evaluate(x, machines)
        except Exception:  # a bug in a check must not cost the readings: they are stored as unknown
            log.exception("quality verdict failed; this group's readings are stored with quality unknown")
            n = len(x)
            return Verdicts([UNKNOWN] * n, [None] * n, [None] * n)
        self.observe("quality", time.perf_counter() - started)
        return verdicts

    def _score(self, fresh: list[_Ingest]) -> tuple[list[_Ingest], np.ndarray, np.ndarray]:
        """One onnxruntime call for the whole group; requests it cannot score are answered here."""
        x_rows = [row for job in fresh for row in job.batch.rows]
        started = time.perf_counter()
        try:
            x = np.array(x_rows, dtype=np.float64)
            y = self.model.predict(x)
        except Exception as exc:  # reported per request, the writer keeps running
            log.error("inference failed: %s", exc)
            for job in fresh:
                self._settle(job.future, error=Unavailable(f"inference failed: {exc}", reason="model_error"))
            return [], np.empty((0, 35)), np.empty((0, 8))
        self.observe("inference", time.perf_counter() - started)
        if not np.isfinite(y).all():
            return self._refuse_non_finite(fresh, x, y)
        return fresh, x, y

    def _explain(self, x: np.ndarray, fault: int) -> dict[str, Any]:
        """What drove a reading's fault, for the alarm it raises (webhook, uplink and SSE bodies)."""
        if self._baseline is None or self._baseline[0] is not self.model:
            self._baseline = (self.model, Baseline.of(self.model))
        return explain(self.model, self._baseline[1], x, fault)

    def _store(self, fresh: list[_Ingest], x: np.ndarray, y: np.ndarray, verdicts: Verdicts
               ) -> tuple[list[Stored], list[AlarmChange]]:
        """Readings, idempotency keys and alarm changes in one transaction: all of it or none."""
        conn = self.conn
        started = time.perf_counter()
        y_rows = y.tolist()
        x_rows = [row for job in fresh for row in job.batch.rows]
        times = [t for job in fresh for t in job.batch.times]
        machines = [m for job in fresh for m in job.batch.machines]
        stored: list[Stored] = []
        changes: list[AlarmChange] = []
        status, score, reasons = quality = verdicts.columns()
        try:
            with transaction(conn):
                version = self.model_version
                last = insert_rows(conn, times, x_rows, y_rows, machines, version, quality)
                first = last - len(times) + 1
                offset = 0
                created = now_text() if any(job.key for job in fresh) else ""  # only idempotency keys need it
                for job in fresh:
                    n = len(job.batch)
                    part = quality if len(fresh) == 1 else (status[offset:offset + n], score[offset:offset + n],
                                                            reasons[offset:offset + n])
                    stored.append(Stored(first + offset, y[offset:offset + n], job.batch, model_version=version,
                                         quality=part))
                    if job.key:
                        conn.execute("INSERT INTO fdedge_ingest_keys(key, first_id, last_id, created, body_sha256) "
                                     "VALUES (?, ?, ?, ?, ?)",
                                     (job.key, first + offset, first + offset + n - 1, created, job.digest))
                    offset += n
                if self.alarms is not None:
                    # Alarm and outbox rows go into this transaction: committed with their readings or not at all.
                    suspect = {first + k: (reasons[k], score[k]) for k, s in enumerate(status)
                               if s is not None and s > 0} if self.quality.known else None
                    changes = self.alarms.evaluate(conn, [(first + k, times[k], machines[k], y_rows[k])
                                                          for k in range(len(times))], suspect,
                                                   lambda rid, fault: self._explain(x[rid - first], fault))
                peaks = y.max(axis=1)
                # after the engine, which reads a dropped machine's last time from the previous state
                seen = machine_state.record(conn, first, times, machines, peaks.tolist(),
                                            stale_after=self.alarms.stale.stale_after if self.alarms else 0.0)
                new = [m for m in seen if m not in self._known_machines]
                self.rollups.add(conn, times, machines, np.hstack((x, y)), peaks, last_id=last)
                if self.rollups.due():
                    self.rollups.flush(conn)
            self.rollups.commit()
            if self.alarms is not None:
                self.alarms.commit()
            self.machine_count += len(new)  # the cap check found every name not in the cache new
            self._known_machines.update(new)
        except sqlite3.Error as exc:
            self.rollups.rollback()
            if self.alarms is not None:
                self.alarms.rollback()
            error = storage_error(exc)
            log.error("commit failed: %s", error.message)
            for job in fresh:
                self._settle(job.future, error=error)
            return [], []
        self.observe("commit", time.perf_counter() - started)
        for job, result in zip(fresh, stored, strict=True):
            self._settle(job.future, result)
        return stored, changes

    def _publish(self, stored: list[Stored], changes: list[AlarmChange]) -> None:
        """Live updates after the commit; a failure here must never undo it."""
        if stored and self.on_commit is not None:
            try:
                self.on_commit(stored)
            except Exception:
                log.exception("publishing committed readings failed")
        if changes and self.on_alarms is not None:
            try:
                self.on_alarms(changes)
            except Exception:
                log.exception("publishing alarm changes failed")

    def _refuse_non_finite(self, jobs: list[_Ingest], x: np.ndarray, y: np.ndarray
                           ) -> tuple[list[_Ingest], np.ndarray, np.ndarray]:
        """Finite but absurd inputs (say 1e308) can drive the model to infinity: refuse those
        requests alone, so NaN never reaches the database or a client."""
        ok = np.isfinite(y).all(axis=1)
        keep: list[_Ingest] = []
        keep_rows: list[int] = []
        offset = 0
        for job in jobs:
            n = len(job.batch)
            bad = np.flatnonzero(~ok[offset:offset + n])
            if len(bad):
                row = int(bad[0])
                self._settle(job.future, error=InvalidReading(
                    f"row {row}: feature values are out of the model's range (it produced non-finite "
                    "fault intensities)", row=row, field=None))
            else:
                keep.append(job)
                keep_rows.extend(range(offset, offset + n))
            offset += n
        return keep, x[keep_rows], y[keep_rows]

    def _replay(self, job: _Ingest, known: _Key | None) -> Stored:
        """Answer a repeated idempotency key with the faults stored the first time. A different body
        under the key is a Conflict; rows retention has removed since are Gone, never an empty answer."""
        n = len(job.batch)
        try:
            if known is None:  # same key twice in one group: the first has just been stored
                first, last, digest = self.conn.execute(
                    "SELECT first_id, last_id, body_sha256 FROM fdedge_ingest_keys WHERE key = ?",
                    (job.key,)).fetchall()[0]
                known = _Key(first, last, digest)
            rows = self.conn.execute(
                f"SELECT {', '.join(FAULTS)}, {QUALITY_LIST} FROM {TABLE} WHERE id >= ? AND id <= ? ORDER BY id",
                (known.first_id, known.last_id)).fetchall()
        except (sqlite3.Error, IndexError):
            rows = []
            known = known or _Key(0, -1, None)
        key = job.key or ""
        stored = known.last_id - known.first_id + 1
        if stored != n or _differ(known.digest, job.digest):
            raise _key_reused(key)
        if len(rows) != stored:
            raise Gone(f"Idempotency-Key {key[:64]!r} stored {stored} reading(s) before, "
                       f"{stored - len(rows)} of them since removed by retention; nothing was stored again",
                       reason="replay_gone", key=key[:200])
        faults = np.array([r[:8] for r in rows], dtype=np.float64).reshape(-1, 8)
        quality = ([r[8] for r in rows], [r[9] for r in rows], [r[10] for r in rows])
        return Stored(known.first_id, faults, job.batch, replayed=True, quality=quality)


def quality_header(quality: tuple[list, list, list] | None) -> str:
    """The worst row's verdict of stored quality columns, as `X-FDEdge-Quality` (see edge.scoring.quality)."""
    if quality is None:
        return header(UNKNOWN, None, None)
    status, score, reasons = quality
    worst, at = UNKNOWN, -1
    for i, s in enumerate(status):
        if s is not None and s > worst:
            worst, at = s, i
    return header(worst, score[at], reasons[at]) if at >= 0 else header(UNKNOWN, None, None)


def _found_machines(conn: sqlite3.Connection, names: set[str]) -> set[str]:
    listed = list(names)
    found: set[str] = set()
    for start in range(0, len(listed), 500):
        chunk = listed[start:start + 500]
        rows = conn.execute(f"SELECT name FROM {machine_state.MACHINES} WHERE name IN ({','.join('?' * len(chunk))})",
                            chunk).fetchall()
        found.update(r[0] for r in rows)
    return found


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _differ(stored: str | None, sent: str | None) -> bool:
    """Two digests of one key name different readings. A digest an earlier version kept (of the raw
    bytes, without DIGEST_VERSION) or none at all cannot tell, so the replay is trusted by size."""
    return (stored is not None and sent is not None and stored.startswith(DIGEST_VERSION)
            and stored != sent)
