"""Everything the routes share, built once per process: settings, model, writer, readers, hub."""

from __future__ import annotations

import asyncio
import logging
import math
import os
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import orjson

from edge.alarms.engine import AlarmChange, AlarmEngine
from edge.alarms.notifier import Notifier
from edge.alarms.rules import load_rules
from edge.errors import StartupError
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

if TYPE_CHECKING:
    from edge.plant.uplink import Uplink

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
    uplink: Uplink | None = None
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
        engine = AlarmEngine(rules, model.catalogue, clock_skew_s=settings.clock_skew)
        hub = Hub(settings.sse_buffer)
        metrics = Metrics(settings.db_path, sse_clients=lambda: len(hub))
        writer = Writer(settings.db_path, model, sync=settings.sync, init=settings.init_db,
                        max_mb=settings.max_db_mb, max_machines=settings.max_machines, observe=metrics.observe,
                        alarms=engine)
        metrics.alarms_active.set_function(lambda: engine.active_count)
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
        if settings.uplink_url is not None:
            appliance.uplink = build_uplink(settings, model, metrics)
            engine.uplink = True
        elif settings.uplink_ca or settings.uplink_cert or settings.uplink_key:
            log.warning("uplink-ca, uplink-cert and uplink-key are ignored without uplink-url")
        return appliance

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.writer.start(loop)
        if self.uplink is not None:
            self.uplink.start()
        if self.notifier is not None:
            self.notifier.start()
        self.tasks.append(loop.create_task(self.deadlines.sweep_forever()))
        if self.integrity is not None:
            self.integrity.start()

    def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        if self.uplink is not None:
            self.uplink.stop()
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
        if self.uplink is not None:
            self.uplink.offer(stored)
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
        if notify and self.uplink is not None:
            self.uplink.offer_alarms()
        if not len(self.hub) or self.loop is None:
            return
        events = [Event.make(c.reading_id or 0, c.machine, "alarm", c.json()) for c in changes]
        self.loop.call_soon_threadsafe(self.hub.publish, events)

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


def build_uplink(settings: Settings, model: Model, metrics: Metrics) -> Uplink:
    """The uplink and its metrics; imported only when --uplink-url is set (paho with it)."""
    from edge.plant.broker import tls_context
    from edge.plant.uplink import Uplink
    from edge.plant.uplink_payload import default_appliance_id

    url = settings.uplink_url
    assert url is not None
    try:
        tls = tls_context(url, settings.uplink_ca, settings.uplink_cert, settings.uplink_key)
    except (ValueError, OSError) as exc:
        raise StartupError(f"uplink-url {url}: {exc}") from None
    try:
        uplink = Uplink(settings.db_path, url, tls, prefix=settings.uplink_topic_prefix,
                        appliance=settings.appliance_id or default_appliance_id(),
                        model_version=model.version or "", backlog_rows=settings.uplink_backlog_rows)
    except sqlite3.Error as exc:
        raise StartupError(f"database {settings.db_path}: cannot set up the uplink's cursor: {exc}") from None
    metrics.gauge("fdedge_uplink_lag_rows", "Stored readings the central broker has not acknowledged yet",
                  uplink.lag_rows)
    metrics.gauge("fdedge_uplink_lag_seconds", "Seconds since the oldest reading the central broker has not "
                  "acknowledged was stored (0 when none waits)", uplink.lag_seconds)
    metrics.gauge("fdedge_uplink_connected", "1 while connected to the uplink broker", lambda: float(uplink.connected))
    metrics.count_by_reason("fdedge_uplink_published", "Readings and alarm changes the uplink broker acknowledged",
                            lambda: {"readings": uplink.readings.published, "alarms": uplink.alarms.published},
                            label="kind")
    metrics.count_by_reason("fdedge_uplink_skipped_rows", "Readings the uplink will never send, by reason: backlog "
                            "(more than --uplink-backlog-rows waited), retention (deleted before they were sent)",
                            lambda: uplink.skipped)
    return uplink


def dumps(obj: object) -> bytes:
    return orjson.dumps(obj)
