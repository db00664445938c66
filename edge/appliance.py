"""Everything the routes share, built once per process: settings, model, writer, readers, hub."""

from __future__ import annotations

import asyncio
import logging
import math
import os
import sqlite3
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from edge.alarms import stale
from edge.alarms.engine import AlarmChange, AlarmEngine
from edge.alarms.notifier import Notifier
from edge.alarms.rules import load_rules
from edge.errors import StartupError
from edge.fdrest import FEATURE_COLUMNS
from edge.http import origins
from edge.http.body_deadlines import BodyDeadlines
from edge.metrics import Metrics
from edge.plant.latest import Latest
from edge.plant.machine_metrics import MachineCollector
from edge.scoring import model as model_module
from edge.scoring.drift_monitor import DriftMonitor
from edge.scoring.model import Model
from edge.scoring.model_store import ModelStore, watch
from edge.scoring.shadow import Shadow
from edge.scoring.shadow import watch as watch_shadow
from edge.settings import BUNDLED_MODEL, Settings
from edge.store import model_changes
from edge.store.database import Readers, connect
from edge.store.integrity import IntegrityCheck
from edge.store.wear import Wear
from edge.store.writer import Stored, Writer
from edge.stream.hub import Event, Hub

if TYPE_CHECKING:
    from edge.plant.modbus import ModbusServer
    from edge.plant.mqtt_ingest import MqttIngest
    from edge.plant.socketio_bridge import SocketIOBridge
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
    mqtt: MqttIngest | None = None  # --mqtt-url: readings from a broker
    socketio: SocketIOBridge | None = None  # --socketio: FD-REST's live clients
    latest: Latest | None = None  # each machine's newest reading, for Modbus and /metrics
    modbus: ModbusServer | None = None
    uplink: Uplink | None = None
    models: ModelStore | None = None  # DATA_DIR/models; its record is polled for a new active version
    model_version: str = ""  # the store version scoring now
    # one model change at a time over HTTP (edge/http/model_routes.py): check, record, swap
    model_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    shadow: Shadow | None = None  # a candidate scoring beside the active model (DATA_DIR/models record)
    drift: DriftMonitor | None = None  # each machine's recent window against the training data
    loop: asyncio.AbstractEventLoop | None = None
    tasks: list[asyncio.Task] = field(default_factory=list)
    # Large ingest bodies are parsed here, one per core at most: apart from the reads (a read
    # load cannot hold them up) and bounded, so hostile or huge batches cannot stack up memory.
    parse_pool: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(
        max_workers=max(os.cpu_count() or 1, 1), thread_name_prefix="fdedge-parse"))

    @classmethod
    def build(cls, settings: Settings) -> Appliance:
        """Load the model and open the database; raises StartupError with a clear reason."""
        store = ModelStore(settings.data_dir / "models")
        model_dir = store.prepare(settings.model_dir, BUNDLED_MODEL)
        model = model_module.load(model_dir, threads=settings.threads)
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
        appliance.models, appliance.model_version = store, model_dir.name
        writer.model_version = model_dir.name
        metrics.count_by_reason(
            "fdedge_shadow_readings", "Readings of the running shadow model since it started, by kind: scored "
            "(in fdedge_shadow), dropped (its queue was full), caught_up (read back from SQLite after a drop)",
            lambda: appliance.shadow.counts() if appliance.shadow is not None else {}, label="kind")
        if settings.drift_interval > 0:
            appliance.drift = DriftMonitor(appliance.readers, lambda: appliance.model.training_stats,
                                           settings.drift_window, settings.drift_interval)
            metrics.registry.register(appliance.drift)
        appliance.integrity = IntegrityCheck(settings.db_path, writer.checked_at_start, on_corrupt=writer.stopped_by)
        metrics.integrity.set_function(lambda: appliance.integrity.value if appliance.integrity else 1.0)
        appliance.wear = Wear(settings.db_path, lambda: metrics.registry.get_sample_value(
            "fdedge_readings_ingested_total") or 0.0, settings.card_size_gb, settings.card_pe_cycles)
        metrics.count_bytes_written(appliance.wear.written)
        wear = appliance.wear
        metrics.card_life_days.set_function(lambda: wear.report()["card_life_days"] or math.nan)
        writer.on_commit = appliance.publish
        if settings.socketio:
            appliance.socketio = socketio_bridge(settings)
            writer.on_commit = appliance.publish_with_socketio
        writer.on_alarms = appliance.publish_alarms
        if settings.mqtt_url is not None:
            from edge.plant.mqtt_ingest import MqttIngest  # paho is loaded only with MQTT on
            appliance.mqtt = MqttIngest(settings, writer, metrics.registry)
        appliance.build_plant()
        if settings.uplink_url is not None:
            appliance.uplink = build_uplink(settings, model, metrics)
            engine.uplink = True
            encoder = appliance.uplink.encoder  # which manifest version each store version is
            encoder.versions[appliance.model_version] = model.version or ""
            encoder.resolve = store.manifest_version
        elif settings.uplink_ca or settings.uplink_cert or settings.uplink_key:
            log.warning("uplink-ca, uplink-cert and uplink-key are ignored without uplink-url")
        return appliance

    def build_plant(self) -> None:
        """The per-machine table, its /metrics gauges and the Modbus server, as far as they are on."""
        s = self.settings
        if s.modbus_port is None and not s.machine_metrics:
            return  # nothing added to the writer's commit path
        latest = self.latest = Latest(s.max_machines, s.warning_threshold, s.alarm_threshold, s.stale_after,
                                      self.is_stale)
        with closing(connect(s.db_path, readonly=True)) as conn:
            latest.load(conn)
        self.writer.on_machines_gone = latest.forget
        if s.machine_metrics:
            self.metrics.registry.register(MachineCollector(latest))
        if s.modbus_port is not None:
            from edge.plant.modbus import ModbusServer  # imports pymodbus: only when asked for
            self.modbus = ModbusServer(latest, s.modbus_host or s.host, s.modbus_port, s.modbus_machines)
            self.modbus.check_port()

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.writer.start(loop)
        if self.model_version:  # which model scores from the first reading on (nothing if it scored last)
            version, name = self.model_version, self.model.name
            self.tasks.append(loop.create_task(self.writer.call(lambda c: model_changes.record(c, version, name))))
        if self.mqtt is not None:
            self.mqtt.start(loop)
        if self.uplink is not None:
            self.uplink.start()
        if self.notifier is not None:
            self.notifier.start()
        self.tasks.append(loop.create_task(self.deadlines.sweep_forever()))
        if self.alarms is not None and self.settings.stale_after > 0:
            self.tasks.append(loop.create_task(stale.watch(self.writer.call, self.alarms.check_stale,
                                                           self.publish_alarms,
                                                           stale.check_interval(self.settings.stale_after))))
        if self.models is not None:
            self.tasks.append(loop.create_task(watch(self.models, lambda: self.model_version, self.swap_recorded,
                                                     threads=self.settings.threads)))
            self.tasks.append(loop.create_task(watch_shadow(
                self.models, lambda: self.shadow.version if self.shadow else None, lambda: self.model_version,
                self.shadow_recorded, threads=1)))
        if self.drift is not None:
            self.tasks.append(loop.create_task(self.drift.run_forever()))
        if self.integrity is not None:
            self.integrity.start()
        if self.socketio is not None:
            self.socketio.start(loop)

    async def open_ports(self) -> None:
        """Servers on the event loop beside HTTP (Modbus); StartupError when one cannot listen."""
        if self.modbus is not None:
            await self.modbus.start()

    async def close_ports(self) -> None:
        """The listeners of the plant's protocols, closed on the event loop before the writer stops."""
        if self.socketio is not None:
            await self.socketio.close()
        if self.modbus is not None:
            await self.modbus.stop()

    def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        if self.mqtt is not None:
            self.mqtt.stop()  # before the writer: what it has not acknowledged, the broker sends again
        if self.uplink is not None:
            self.uplink.stop()
        if self.notifier is not None:
            self.notifier.stop()
        if self.integrity is not None:
            self.integrity.stop()
        if self.shadow is not None:
            self.shadow.stop()
        self.writer.stop()
        self.readers.close()
        self.parse_pool.shutdown(wait=False, cancel_futures=True)

    def closing(self) -> None:
        """The server is shutting down (on the event loop): end every live stream now, so it does
        not wait for them."""
        self.hub.close()
        if self.socketio is not None:
            self.tasks.append(asyncio.ensure_future(self.socketio.close()))

    def publish(self, stored: list[Stored]) -> None:
        """Called in the writer thread after each commit; encodes each reading once per shape that
        a connected client wants, and nothing when nobody listens."""
        self.metrics.ingested.inc(sum(len(s.batch) for s in stored))
        if self.latest is not None:
            self.latest.add(stored)
        if self.uplink is not None:
            self.uplink.offer(stored)
        shadow = self.shadow
        if shadow is not None:
            shadow.offer(stored)
        shapes = self.hub.shapes()
        if not shapes or self.loop is None:
            return
        reading = Event.reading
        events: list[Event] = []
        for s in stored:
            b = s.batch
            x_rows, y_rows, first, version = b.rows, s.faults.tolist(), s.first_id, s.model_version
            if s.quality is None:
                for j in range(len(b)):
                    events.append(reading(first + j, b.times[j], b.machines[j], x_rows[j], y_rows[j], shapes,
                                          model_version=version))
                continue
            status, score, reasons = s.quality
            for j in range(len(b)):
                events.append(reading(first + j, b.times[j], b.machines[j], x_rows[j], y_rows[j], shapes,
                                      (status[j], score[j], reasons[j]), version))
        self.loop.call_soon_threadsafe(self.hub.publish, events, shapes)

    def publish_with_socketio(self, stored: list[Stored]) -> None:
        """`publish`, then the same commit to Socket.IO (the writer's hook only with --socketio,
        so without it the commit path has nothing more to do)."""
        self.publish(stored)
        assert self.socketio is not None
        self.socketio.publish([s.faults for s in stored])

    def publish_alarms(self, changes: list[AlarmChange]) -> None:
        """After a commit (writer thread) or an ack (event loop): count, wake the webhooks, tell live
        clients. Alarm events go out after the readings of the same commit (one FIFO via the loop)."""
        if self.latest is not None:
            self.latest.alarms_changed(changes)
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

    def is_stale(self, machine: str) -> bool:
        """The machine is silent past its threshold and its `stale` alarm is active (cheap: a
        set lookup, from any thread). False with --stale-after 0."""
        return self.alarms is not None and self.alarms.is_stale(machine)

    def stale_machines(self) -> frozenset[str]:
        """Every machine `is_stale` holds for (cheap, from any thread)."""
        return self.alarms.stale_machines() if self.alarms is not None else frozenset()

    async def swap_model(self, model: Model, version: str) -> None:
        """Switched in on the writer thread between two groups: no reading is scored half by each."""
        def switch(conn: sqlite3.Connection) -> None:
            self.writer.model, self.writer.model_version = model, version
            self.model, self.model_version = model, version
            model_changes.record(conn, version, model.name)
            if self.uplink is not None:
                self.uplink.encoder.versions[version] = model.version or ""
        await self.writer.call(switch)
        if self.shadow is not None and self.shadow.version == version:
            await self.set_shadow(None, None)  # promoted: it answers now

    async def shadow_recorded(self, model: Model | None, version: str | None, resume: bool) -> None:
        """The store watcher's shadow change (a CLI change, or the record at start), under the lock an
        HTTP change holds, and only if the record still says so."""
        async with self.model_lock:
            if self.models is not None and (version is None or self.models.state()["shadow"] == version):
                await self.set_shadow(model, version, resume=resume)

    async def set_shadow(self, model: Model | None, version: str | None, *, resume: bool = False) -> None:
        """Start a shadow (its starting point fixed first, then the writer's hook sees it, then what
        committed in between read back), or stop the one running; the old one's thread ends off the loop."""
        old = self.shadow
        if old is not None and old.version == version:
            return
        new = Shadow(self.settings.db_path, model, version, resume=resume) if model is not None and version else None
        if new is not None:
            await asyncio.to_thread(new.start)
        self.shadow = new  # one attribute: the writer's hook reads it once per commit
        if new is not None:
            new.catch_up_soon()
        if old is not None:
            await asyncio.to_thread(old.stop)

    async def swap_recorded(self, model: Model, version: str) -> None:
        """The store watcher's swap (a CLI change): only if the record still names this version once
        it is loaded, under the lock an HTTP activation holds, so a slow load never undoes a later one."""
        async with self.model_lock:
            if self.models is not None and self.models.state()["active"] == version and self.model_version != version:
                await self.swap_model(model, version)

    def model_info(self) -> dict:
        m = self.model.manifest
        return {
            "name": self.model.name,
            "version": self.model.version,
            "store_version": self.model_version,
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


def socketio_bridge(settings: Settings) -> SocketIOBridge:
    """Imported here, so python-socketio is loaded only with --socketio. Origins as for writes:
    the appliance's own pages and --allowed-origins; clients bounded like connections."""
    from edge.http.connections import connection_cap
    from edge.plant.socketio_bridge import SocketIOBridge

    allowed = settings.allowed_origins or frozenset()

    def origin_allowed(origin: str | None, environ: Mapping[str, Any]) -> bool:
        # None: no Origin header (scripts, sensors), which python-socketio lets through; no CORS headers then
        return origin is not None and origins.allowed_origin(origin, environ.get("HTTP_HOST"), allowed)

    return SocketIOBridge(origin_allowed, max_clients=connection_cap(settings.max_connections),
                          backlog=settings.sse_buffer)
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
