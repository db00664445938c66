"""Each machine's drift, kept fresh off the ingest path.

A task on the event loop wakes every `--drift-interval` seconds, reads the window of each machine
that has new readings since it was last scored (the newest `--drift-window` readings, by the
(machine, id) index, in the read pool) and scores it with `drift.score` against the active
model's training statistics. At most PER_TICK machines a wake, least recently scored first, so a
fleet of 1,000 machines costs a bounded read per tick, never a burst. The results are what
/api/machines (`drift`) and /metrics (`fdedge_drift_score{machine}`) show; a machine retention
removed is dropped with it. A model without training statistics gives no drift (unknown, not 0).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import GaugeMetricFamily

from edge.scoring.drift import Support, score
from edge.store import reading_queries
from edge.store.database import Readers

log = logging.getLogger("fdedge.drift")

PER_TICK = 50


class DriftMonitor:
    def __init__(self, readers: Readers, stats_of: Callable[[], Any], window: int, interval: float) -> None:
        self.readers, self.stats_of, self.window, self.interval = readers, stats_of, window, interval
        self.results: dict[str, dict[str, Any] | None] = {}
        self._scored: dict[str, tuple[int, float]] = {}  # machine -> (its last id then, when)
        self._stats: Any = None
        self._support: Support | None = None

    def of(self, machine: str) -> dict[str, Any] | None:
        return self.results.get(machine)

    async def run_forever(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.tick()
            except Exception:  # a failed read is tried again next tick; the task must not die
                log.exception("drift: scoring failed; trying again in %.0f s", self.interval)

    async def tick(self) -> None:
        stats = self.stats_of()
        if stats is not self._stats:  # a new model: new statistics, every machine scored again
            self._stats, self._support = stats, Support.from_training(stats)
            self._scored.clear()
            self.results.clear()
        if self._support is None:
            return
        newest = await self.readers.run(reading_queries.last_ids)
        for gone in set(self._scored) - set(newest):
            self._scored.pop(gone, None)
            self.results.pop(gone, None)
        due = [m for m, last in newest.items() if last is not None and self._scored.get(m, (None,))[0] != last]
        due.sort(key=lambda m: self._scored.get(m, (0, 0.0))[1])
        for machine in due[:PER_TICK]:
            window = await self.readers.run(reading_queries.recent_features, machine, self.window)
            result = score(self._support, window)
            self._scored[machine] = (newest[machine], time.time())
            self.results[machine] = None if result is None else {**result, "at": round(time.time(), 3)}

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """Prometheus: one series per machine with a score (bounded by --max-machines)."""
        gauge = GaugeMetricFamily("fdedge_drift_score", "Drift of the machine's recent readings from the model's "
                                  "training data: mean σ outside its 0.1-99.9 % range, worst feature "
                                  "(1.0 or more: drifted)", labels=["machine"])
        for machine, result in list(self.results.items()):
            if result is not None:
                gauge.add_metric([machine], result["score"])
        yield gauge
