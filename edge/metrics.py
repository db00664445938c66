"""Prometheus metrics, one registry per app so tests and several apps in one process stay apart."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import CounterMetricFamily

disable_created_metrics()  # the _created series only add noise to every scrape

LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    def __init__(self, db_path: Path, sse_clients: Callable[[], int]) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.ingested = Counter("fdedge_readings_ingested", "Readings scored and committed", registry=r)
        self.rejected = Counter(
            "fdedge_readings_rejected", "Ingest requests refused, by reason", ["reason"], registry=r
        )
        self.inference = Histogram(
            "fdedge_inference_seconds", "onnxruntime call per commit group", buckets=LATENCY_BUCKETS, registry=r
        )
        self.commit = Histogram(
            "fdedge_commit_seconds", "SQLite insert + commit per group", buckets=LATENCY_BUCKETS, registry=r
        )
        self.pruned = Counter("fdedge_readings_pruned", "Readings deleted by retention", registry=r)
        self.retention_passes = Counter(
            "fdedge_retention_passes", "Retention passes finished (rows cut, buckets made exact, space handed back)",
            registry=r)
        Gauge("fdedge_sse_clients", "Connected Server-Sent Events clients", registry=r).set_function(sse_clients)
        Gauge("fdedge_database_bytes", "Database file size including WAL", registry=r).set_function(
            lambda: database_bytes(db_path)
        )
        self.integrity = Gauge("fdedge_integrity",
                               "Database integrity check: 1 ok, 0 corrupt (ingest stopped), -1 still running",
                               registry=r)
        self.card_life_days = Gauge(
            "fdedge_disk_card_life_days", "Estimated days until the card's rated writes are used up at the write "
            "rate since start (--card-size-gb, --card-pe-cycles; NaN for the first minute)", registry=r)
        self.alarms_active = Gauge("fdedge_alarms_active", "Alarms raised and not cleared", registry=r)
        self.machines_stale = Gauge("fdedge_machines_stale",
                                    "Machines silent past --stale-after (or 3 x their usual interval) whose stale "
                                    "alarm is active", registry=r)
        self.alarm_events = Counter(
            "fdedge_alarm_events",
            "Alarm changes by event (raise, escalate, clear, ack) and severity",
            ["event", "severity"],
            registry=r,
        )
        self.webhook_deliveries = Counter(
            "fdedge_webhook_deliveries", "Webhook POSTs by result (delivered, failed)", ["result"], registry=r
        )

    def count_bytes_written(self, read: Callable[[], int | None]) -> None:
        self.registry.register(_BytesWritten(read))

    def count_by_reason(self, name: str, documentation: str, read: Callable[[], Mapping[str, int]],
                        label: str = "reason") -> None:
        """A counter kept by its owner (it must agree with a committed transaction, which a
        prometheus Counter incremented along the way would not), read at each scrape."""
        self.registry.register(_ReasonCounter(name, documentation, read, label))

    def gauge(self, name: str, documentation: str, read: Callable[[], float]) -> None:
        """A gauge its owner knows, read at each scrape."""
        Gauge(name, documentation, registry=self.registry).set_function(read)

    def observe(self, name: str, seconds: float) -> None:
        (self.inference if name == "inference" else self.commit).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _ReasonCounter:
    def __init__(self, name: str, documentation: str, read: Callable[[], Mapping[str, int]],
                 label: str = "reason") -> None:
        self.name, self.documentation, self.read, self.label = name, documentation, read, label

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(self.name, self.documentation, labels=[self.label])
        for reason, count in self.read().items():
            family.add_metric([reason], count)
        yield family


class _BytesWritten:
    def __init__(self, read: Callable[[], int | None]) -> None:
        self.read = read

    def collect(self) -> Iterator[CounterMetricFamily]:
        value = self.read()
        if value is not None:  # no such counter where the kernel keeps none
            yield CounterMetricFamily("fdedge_disk_bytes_written",
                                      "Bytes this process wrote to storage since start (the database, its WAL "
                                      "and checkpoints; the kernel's write_bytes)", value=value)


def database_bytes(db_path: Path) -> int:
    total = 0
    for suffix in ("", "-wal", "-shm"):
        try:
            total += Path(str(db_path) + suffix).stat().st_size
        except OSError:
            pass
    return total
