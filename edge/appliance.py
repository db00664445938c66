"""Everything the routes share, built once per process: settings, model, writer, readers, hub."""

from __future__ import annotations

import asyncio
import logging
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import orjson

from edge.alarms import stale
from edge.alarms.engine import AlarmChange, AlarmEngine
from edge.alarms.notifier import Notifier
from edge.alarms.rules import load_rules
from edge.fdrest import FEATURE_COLUMNS
from edge.http.body_deadlines import BodyDeadlines
from edge.metrics import Metrics
from edge.scoring import model as model_module
from edge.scoring.model import Model
from edge.settings import Settings
from edge.store.database import Readers
from edge.store.integrity import IntegrityCheck
from edge.store.wear import Wear
from edge.store.writer import Stored, Writer
from edge.stream.hub import Event, Hub

log = logging.getLogger(__name__)
COLUMN_OF = dict(FEATURE_COLUMNS)


@dataclass
class Appliance:
    settings: Settings
    model: Model
    writer: Writer
    readers: Readers
    hub: Hub
    metrics: Metrics
    deadlines: BodyDeadlines = field(default_factory=BodyDeadlines)
    integrity: IntegrityCheck | None = None
    wear: Wear | None = None
    alarms: AlarmEngine | None = None
    notifier: Notifier | None = None
    loop: asyncio.AbstractEventLoop | None = None
    tasks: list[asyncio.Task] = field(default_factory=list)
    # Large ingest bodies are parsed here, one per core at most: apart from the reads (a read
    # load cannot hold them up) and bounded, so hostile or huge batches cannot stack up memory.
    parse_pool: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(
        max_workers=max(os.cpu_count() or 1, 1), thread_name_prefix="fdedge-parse"))

    @classmethod
    def build(cls, settings: Settings) -> Appliance:
        """Load the model and open the database; raises StartupError with a clear reason."""
        model = model_module.load(settings.model_dir, threads=settings.threads)
        rules = load_rules(settings.alarm_rules, settings.warning_threshold, settings.alarm_threshold)
        engine = AlarmEngine(rules, model.catalogue, clock_skew_s=settings.clock_skew,
                             stale_after_s=settings.stale_after)
        hub = Hub(settings.sse_buffer)
        metrics = Metrics(settings.db_path, sse_clients=lambda: len(hub))
        writer = Writer(settings.db_path, model, sync=settings.sync, init=settings.init_db,
                        max_mb=settings.max_db_mb, max_machines=settings.max_machines, observe=metrics.observe,
                        alarms=engine)
        metrics.alarms_active.set_function(lambda: engine.active_count)
        metrics.machines_stale.set_function(lambda: len(engine.stale_machines()))
        metrics.count_by_reason("fdedge_alarm_readings_skipped",
                                "Stored readings the alarm engine did not evaluate, by reason", lambda: engine.skipped)
        notifier = Notifier(settings.db_path, rules.webhooks, metrics=metrics) if rules.webhooks else None
        appliance = cls(settings, model, writer, Readers(settings.db_path, settings.read_threads), hub, metrics,
                        alarms=engine, notifier=notifier)
        appliance.integrity = IntegrityCheck(settings.db_path, writer.checked_at_start, on_corrupt=writer.stopped_by)
        metrics.integrity.set_function(lambda: appliance.integrity.value if appliance.integrity else 1.0)
        appliance.wear = Wear(settings.db_path, lambda: metrics.registry.get_sample_value(
            "fdedge_readings_ingested_total") or 0.0, settings.card_size_gb, settings.card_pe_cycles)
        metrics.count_bytes_written(appliance.wear.written)
        wear = appliance.wear
        metrics.card_life_days.set_function(lambda: wear.report()["card_life_days"] or math.nan)
        writer.on_commit = appliance.publish
        writer.on_alarms = appliance.publish_alarms
        return appliance

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.writer.start(loop)
        if self.notifier is not None:
            self.notifier.start()
        self.tasks.append(loop.create_task(self.deadlines.sweep_forever()))
        if self.alarms is not None and self.settings.stale_after > 0:
            self.tasks.append(loop.create_task(stale.watch(self.writer.call, self.alarms.check_stale,
                                                           self.publish_alarms,
                                                           stale.check_interval(self.settings.stale_after))))
        if self.integrity is not None:
            self.integrity.start()

    def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        if self.notifier is not None:
            self.notifier.stop()
        if self.integrity is not None:
            self.integrity.stop()
        self.writer.stop()
        self.readers.close()
        self.parse_pool.shutdown(wait=False, cancel_futures=True)

    def publish(self, stored: list[Stored]) -> None:
        """Called in the writer thread after each commit; encodes each reading once per shape that
        a connected client wants, and nothing when nobody listens."""
        self.metrics.ingested.inc(sum(len(s.batch) for s in stored))
        shapes = self.hub.shapes()
        if not shapes or self.loop is None:
            return
        reading = Event.reading
        events: list[Event] = []
        for s in stored:
            b = s.batch
            x_rows, y_rows, first = b.rows, s.faults.tolist(), s.first_id
            for j in range(len(b)):
                events.append(reading(first + j, b.times[j], b.machines[j], x_rows[j], y_rows[j], shapes))
        self.loop.call_soon_threadsafe(self.hub.publish, events, shapes)

    def publish_alarms(self, changes: list[AlarmChange]) -> None:
        """After a commit (writer thread) or an ack (event loop): count, wake the webhooks, tell live
        clients. Alarm events go out after the readings of the same commit (one FIFO via the loop)."""
        notify = [c for c in changes if c.notify]
        for c in notify:
            self.metrics.alarm_events.labels(event=c.kind, severity=c.severity).inc()
        if notify and self.notifier is not None:
            self.notifier.wake()
        if not len(self.hub) or self.loop is None:
            return
        events = [Event.make(c.reading_id or 0, c.machine, "alarm", c.json()) for c in changes]
        self.loop.call_soon_threadsafe(self.hub.publish, events)

    def is_stale(self, machine: str) -> bool:
        """The machine is silent past its threshold and its `stale` alarm is active (cheap: a
        set lookup, from any thread). False with --stale-after 0."""
        return self.alarms is not None and self.alarms.is_stale(machine)

    def stale_machines(self) -> frozenset[str]:
        """Every machine `is_stale` holds for (cheap, from any thread)."""
        return self.alarms.stale_machines() if self.alarms is not None else frozenset()

    def model_info(self) -> dict:
        m = self.model.manifest
        return {
            "name": self.model.name,
            "version": self.model.version,
            "features": list(self.model.features),
            # the database column of each feature, in the same order: what /history and /api/series take
            "columns": [COLUMN_OF[name] for name in self.model.features],
            "faults": list(self.model.faults),
            "catalogue": [dict(entry) for entry in self.model.catalogue],
            "thresholds": {"warning": self.settings.warning_threshold, "alarm": self.settings.alarm_threshold},
            "opset": m.get("opset"),
            "tools": m.get("tools", {}),
            "parity": m.get("parity", {}),
            "created": m.get("created"),
        }


def dumps(obj: object) -> bytes:
    return orjson.dumps(obj)
