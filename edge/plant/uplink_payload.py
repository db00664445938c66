"""What the uplink sends: topics in Unified Namespace style and the JSON of its messages.

Topics: `PREFIX/APPLIANCE/MACHINE/readings` (one message per machine per batch, at most
PER_MESSAGE readings) and `PREFIX/APPLIANCE/alarms` (one message per alarm change). Every
reading carries `key` = `APPLIANCE:ROWID`, every alarm change `APPLIANCE:ALARMID:EVENT`: stable
across re-sends, so a central store that writes idempotently on the key ends up with each once
(docs/FLEET.md)."""

from __future__ import annotations

import re
import socket
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from edge.fdrest import FAULTS, FEATURES, iso

PER_MESSAGE = 250  # readings per message: one message per reading cost the writer and the loop too much
APPLIANCE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_TOPIC_LEVEL = re.compile(r"[^+#/\x00]+")
_UNSAFE = re.compile(r"[+#/\x00]")


def parse_appliance_id(text: str) -> str:
    """1-64 letters, digits, `.`, `_`, `-`, starting with a letter or digit: safe as a topic
    level and never containing the key's `:`."""
    if not APPLIANCE_ID.fullmatch(text):
        raise ValueError(f"appliance id {text[:80]!r} must be 1-64 letters, digits, '.', '_' or '-'")
    return text


def default_appliance_id() -> str:
    """This host's name, cut to what an appliance id may hold ('fdedge' if nothing is left)."""
    name = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname()).lstrip("._-")[:64]
    return name or "fdedge"


def parse_topic_prefix(text: str) -> str:
    """One or more topic levels (`plant`, `acme/berlin/line1`): no wildcards, no empty level,
    not a `$SYS`-style system topic."""
    levels = text.split("/")
    if text.startswith("$") or not all(_TOPIC_LEVEL.fullmatch(level) for level in levels):
        raise ValueError(f"topic prefix {text[:80]!r} must be levels like site/area, without '+', '#', "
                         "empty levels or a leading '$'")
    return text


def topic_level(machine: str) -> str:
    """A machine name as one topic level: `+`, `#`, `/` (and NUL) become `_`, an empty name `_`.
    Two names may then share a topic; the payload's `machine` is always the stored name."""
    return _UNSAFE.sub("_", machine) or "_"


class Encoder:
    """Builds the uplink's messages (topic, payload bytes); runs in the uplink's thread, never the writer's."""

    def __init__(self, prefix: str, appliance: str, model_version: str, database: str = "") -> None:
        self.prefix, self.appliance, self.model_version = prefix, appliance, model_version
        self.versions: dict[str, str] = {}  # store version -> manifest version (edge.scoring.model_store)
        self.resolve: Callable[[str], str | None] | None = None  # a store version not seen yet
        self.database = database  # fdedge_meta's database_id: a new file (row ids from 1 again) is told apart
        self.alarm_topic = f"{prefix}/{appliance}/alarms"
        self._topics: dict[str, str] = {}

    def manifest_version(self, store_version: str | None) -> str:
        """The manifest's version of the model that scored a message's readings (the model store's
        `store_version`), as learned from the appliance; the start's model for rows from before the
        store or a version it no longer knows."""
        if store_version is None:
            return self.model_version
        known = self.versions.get(store_version)
        if known is None and self.resolve is not None:
            known = self.versions[store_version] = self.resolve(store_version) or self.model_version
        return known or self.model_version

    def topic(self, machine: str) -> str:
        topic = self._topics.get(machine)
        if topic is None:
            if len(self._topics) > 4096:
                self._topics.clear()
            topic = self._topics[machine] = f"{self.prefix}/{self.appliance}/{topic_level(machine)}/readings"
        return topic

    def readings(self, machine: str, ids: Sequence[int], times: Sequence[str], x: Sequence[Sequence[float]],
                 y: Sequence[Sequence[float]], quality: Sequence[Any] | None = None,
                 store_version: str | None = None) -> bytes:
        """One machine's readings, in id order. `quality`: the per-reading data-quality verdict
        (edge.scoring.quality.as_json); when given, each reading gains a `quality` field."""
        a = self.appliance
        rows = [{"key": f"{a}:{rid}", "id": rid, "time": iso(t), "x": xs, "y": ys}
                for rid, t, xs, ys in zip(ids, times, x, y, strict=True)]
        if quality is not None:
            for row, q in zip(rows, quality, strict=True):
                row["quality"] = q
        return orjson.dumps({"appliance": a, "database": self.database, "machine": machine,
                             "model_version": self.manifest_version(store_version),
                             "model_store_version": store_version, "features": FEATURES, "faults": FAULTS,
                             "readings": rows})

    def alarm(self, event: dict[str, Any]) -> bytes:
        """An alarm change as the webhooks get it (edge.alarms.engine.AlarmChange.event), with its key."""
        alarm = event.get("alarm") or {}
        return orjson.dumps({"key": f"{self.appliance}:{alarm.get('id')}:{event.get('event')}",
                             "appliance": self.appliance, "database": self.database, **event})


def split_by_machine(machines: Sequence[str]) -> dict[str, list[int]]:
    """Indices of each machine's rows, in order; one pass, and none at all for one machine's batch."""
    if not machines:
        return {}
    first = machines[0]
    if machines.count(first) == len(machines):
        return {first: list(range(len(machines)))}
    out: dict[str, list[int]] = {}
    for i, m in enumerate(machines):
        out.setdefault(m, []).append(i)
    return out
