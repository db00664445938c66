"""The alarm rules file: thresholds per fault (and machine), hysteresis, debounce, webhooks.

It is validated completely at start-up, so a typo stops the appliance with a message naming the
file, the rule and the field, instead of an alarm that silently never fires. Every
(machine, fault) pair resolves to one complete `Rule` before the first reading arrives.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from edge.errors import StartupError
from edge.fdrest import FAULTS, MAX_MACHINE_LEN

EVENTS: tuple[str, ...] = ("raise", "escalate", "clear", "ack")
DEFAULT_EVENTS: frozenset[str] = frozenset({"raise", "escalate", "clear"})
CLEAR_GAP = 5.0  # default hysteresis: clear 5 below the warning level (30 -> 25)
DEFAULT_CONSECUTIVE = 3
MAX_CONSECUTIVE = 100_000
MAX_DURATION_S = 7 * 86400.0
NUMBER_FIELDS = ("warning", "alarm", "clear")
COUNT_FIELDS = ("consecutive", "clear_consecutive")
DURATION_FIELDS = ("min_duration_s", "clear_min_duration_s")
SUSPECT_POLICIES = ("hold", "count")  # what a reading whose data quality is suspect or invalid does
RULE_FIELDS = (*NUMBER_FIELDS, *COUNT_FIELDS, *DURATION_FIELDS, "enabled", "suspect")
QUALITY_FIELDS = ("alarm", "consecutive", "clear_consecutive", "comment")
WEBHOOK_FIELDS = ("url", "secret", "secret_env", "events", "timeout_s", "name", "comment")


@dataclass(frozen=True)
class Rule:
    """When one fault of one machine raises, escalates and clears.

    Raise: `consecutive` readings in a row >= `warning` (and at least `min_duration_s` between the
    first and the current one); severity `alarm` if those readings were also >= `alarm`.
    Escalate warning -> alarm: the same test against `alarm`. Clear: `clear_consecutive` readings
    in a row below `clear` (and `clear_min_duration_s`). `enabled: false` raises nothing new, but an
    alarm that is already active still clears. `suspect`: what a reading whose data-quality verdict
    is suspect or invalid does (edge.scoring.quality): `hold` (the default) skips it, so it neither
    raises, escalates nor clears, nor extends or breaks a run; `count` evaluates it like any other.
    """

    warning: float = 30.0
    alarm: float = 60.0
    clear: float = 25.0
    consecutive: int = DEFAULT_CONSECUTIVE
    clear_consecutive: int = DEFAULT_CONSECUTIVE
    min_duration_s: float = 0.0
    clear_min_duration_s: float = 0.0
    enabled: bool = True
    suspect: str = "hold"


@dataclass(frozen=True)
class QualityRule:
    """The data-quality alarm (kind `quality`, one per machine): raised after `consecutive` readings
    in a row are suspect or invalid, cleared after `clear_consecutive` ok ones (unknown counts for
    neither); `alarm: false` raises none."""

    alarm: bool = True
    consecutive: int = DEFAULT_CONSECUTIVE
    clear_consecutive: int = DEFAULT_CONSECUTIVE


@dataclass(frozen=True)
class Webhook:
    """A receiver for alarm notifications. The URL's path and query often hold a token, so logs
    and the database name a webhook by `label` and `key`, never by its URL."""

    url: str = field(repr=False)
    secret: str | None = field(default=None, repr=False)
    events: frozenset[str] = DEFAULT_EVENTS
    timeout_s: float = 10.0
    name: str = ""

    @property
    def key(self) -> str:
        return hashlib.sha256(self.url.encode()).hexdigest()[:16]

    @property
    def label(self) -> str:
        parts = urlsplit(self.url)
        port = f":{parts.port}" if parts.port else ""
        return f"{self.name or 'webhook'} ({parts.scheme}://{parts.hostname}{port})"


@dataclass(frozen=True)
class Rules:
    default: Rule
    by_fault: dict[str, Rule]  # every fault, for machines without rules of their own
    by_machine: dict[str, dict[str, Rule]]  # machine -> every fault, for machines named in rules
    webhooks: tuple[Webhook, ...] = ()
    source: str = "built-in defaults"
    quality: QualityRule = QualityRule()

    def rule(self, machine: str, fault: str) -> Rule:
        per_machine = self.by_machine.get(machine)
        return per_machine[fault] if per_machine is not None else self.by_fault[fault]


class _Problem(Exception):
    def __init__(self, where: str, field_: str | None, message: str) -> None:
        super().__init__(message)
        self.where, self.field, self.message = where, field_, message


def load_rules(path: Path | None, warning: float = 30.0, alarm: float = 60.0) -> Rules:
    """The rules in `path` (JSON), or the defaults when None; `warning`/`alarm` are the settings'
    thresholds, used wherever the file does not set its own. Raises StartupError."""
    base = {"warning": float(warning), "alarm": float(alarm)}
    if path is None:
        return parse_rules({}, base, source="built-in defaults")
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise StartupError(f"alarm rules file {path}: cannot read it: {reason}") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise StartupError(f"alarm rules file {path}: not valid JSON: {exc.msg} at line {exc.lineno} "
                           f"column {exc.colno}") from None
    return parse_rules(doc, base, source=str(path))


def parse_rules(doc: Any, base: dict[str, float], source: str = "built-in defaults") -> Rules:
    try:
        return _parse(doc, base, source)
    except _Problem as p:
        what = f"field '{p.field}': " if p.field else ""
        raise StartupError(f"alarm rules file {source}: {p.where}: {what}{p.message}") from None


def _parse(doc: Any, base: dict[str, float], source: str) -> Rules:
    if not isinstance(doc, dict):
        raise _Problem("top level", None, "must be a JSON object with 'defaults', 'rules' and/or 'webhooks'")
    _known_keys(doc, ("defaults", "rules", "webhooks", "quality", "comment"), "top level")
    defaults = _layer(doc.get("defaults", {}), "defaults", targeted=False)
    # Layers from least to most specific; each (where, values) pair remembers where a value came from.
    by_fault: dict[str, tuple[str, dict]] = {}
    by_machine: dict[str, tuple[str, dict]] = {}
    by_pair: dict[tuple[str, str], tuple[str, dict]] = {}
    items = doc.get("rules", [])
    if not isinstance(items, list):
        raise _Problem("rules", None, "must be a list of rule objects")
    for i, item in enumerate(items):
        where = f"rules[{i}]"
        if not isinstance(item, dict):
            raise _Problem(where, None, "must be a JSON object")
        fault, machine = item.get("fault"), item.get("machine")
        if fault is not None and fault not in FAULTS:
            raise _Problem(where, "fault", f"unknown fault {str(fault)[:40]!r}; use one of {', '.join(FAULTS)}")
        if machine is not None and (not isinstance(machine, str) or not 0 < len(machine) <= MAX_MACHINE_LEN):
            raise _Problem(where, "machine", f"must be a machine name of 1-{MAX_MACHINE_LEN} characters")
        if fault is None and machine is None:
            raise _Problem(where, None, "needs 'fault' and/or 'machine' (settings for all faults go in 'defaults')")
        where = f"{where} ({fault or 'all faults'}{f' on machine {machine!r}' if machine else ''})"
        values = _layer(item, where, targeted=True)
        table: dict = by_pair if fault and machine else by_machine if machine else by_fault
        key = (machine, fault) if fault and machine else machine or fault
        if key in table:
            raise _Problem(where, None, f"repeats the target of {table[key][0]}")
        table[key] = (where, values)

    def resolve(machine: str | None, fault: str) -> Rule:
        chain = [("the settings", base), ("defaults", defaults)]
        for layer in (by_fault.get(fault), by_machine.get(machine or ""), by_pair.get((machine or "", fault))):
            if layer is not None:
                chain.append(layer)
        return _finish(chain)

    resolved_faults = {f: resolve(None, f) for f in FAULTS}
    machines = {m for m in by_machine} | {m for m, _ in by_pair}
    resolved_machines = {m: {f: resolve(m, f) for f in FAULTS} for m in sorted(machines)}
    default = _finish([("the settings", base), ("defaults", defaults)])
    return Rules(default, resolved_faults, resolved_machines, _webhooks(doc.get("webhooks", [])), source,
                 _quality(doc.get("quality", {})))


def _quality(obj: Any) -> QualityRule:
    where = "quality"
    if not isinstance(obj, dict):
        raise _Problem(where, None, "must be a JSON object with 'alarm', 'consecutive' and/or 'clear_consecutive'")
    _known_keys(obj, QUALITY_FIELDS, where)
    alarm = obj.get("alarm", True)
    if not isinstance(alarm, bool):
        raise _Problem(where, "alarm", f"must be true or false, got {alarm!r:.40}")
    counts = {}
    for key in ("consecutive", "clear_consecutive"):
        value = obj.get(key, DEFAULT_CONSECUTIVE)
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_CONSECUTIVE:
            raise _Problem(where, key, f"must be a whole number of readings from 1 to {MAX_CONSECUTIVE}, "
                                       f"got {value!r:.40}")
        counts[key] = value
    return QualityRule(alarm, counts["consecutive"], counts["clear_consecutive"])


def _finish(chain: list[tuple[str, dict]]) -> Rule:
    """Merge layers (later wins) and check the result; a problem blames the most specific layer
    that set one of the fields involved."""
    merged: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for where, values in chain:
        for key, value in values.items():
            merged[key], origin[key] = value, where
    order = [where for where, _ in chain]

    def blame(*fields: str) -> tuple[str, str]:
        set_by = [(order.index(origin[f]), origin[f], f) for f in fields if f in origin]
        _, where, field_ = max(set_by, key=lambda s: s[0])  # ties: the first field named
        return where, field_

    warning, alarm = merged["warning"], merged["alarm"]
    clear = merged.get("clear", warning - CLEAR_GAP)
    if "clear" not in merged:
        origin["clear"] = origin["warning"]
    if warning > alarm:
        raise _Problem(*blame("warning", "alarm"), f"'warning' ({warning:g}) must not exceed 'alarm' ({alarm:g})")
    if clear >= warning:
        raise _Problem(*blame("clear", "warning"),
                       f"'clear' ({clear:g}) must be below 'warning' ({warning:g}): that gap is the hysteresis")
    consecutive = merged.get("consecutive", DEFAULT_CONSECUTIVE)
    duration = merged.get("min_duration_s", 0.0)
    return Rule(float(warning), float(alarm), float(clear), consecutive,
                merged.get("clear_consecutive", consecutive), float(duration),
                float(merged.get("clear_min_duration_s", duration)), merged.get("enabled", True),
                merged.get("suspect", "hold"))


def _known_keys(obj: dict, allowed: tuple[str, ...], where: str) -> None:
    for key in obj:
        if key not in allowed:
            raise _Problem(where, str(key)[:40], f"unknown field; valid fields: {', '.join(allowed)}")


def _layer(obj: Any, where: str, targeted: bool) -> dict[str, Any]:
    """Type-check one rule object (or 'defaults'); returns only the fields it sets."""
    if not isinstance(obj, dict):
        raise _Problem(where, None, "must be a JSON object")
    _known_keys(obj, (*RULE_FIELDS, "comment", *(("fault", "machine") if targeted else ())), where)
    values: dict[str, Any] = {}
    for key in NUMBER_FIELDS:
        if key in obj:
            values[key] = _number(obj[key], where, key)
    for key in COUNT_FIELDS:
        if key in obj:
            value = obj[key]
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_CONSECUTIVE:
                raise _Problem(where, key, f"must be a whole number of readings from 1 to {MAX_CONSECUTIVE}, "
                                           f"got {value!r:.40}")
            values[key] = value
    for key in DURATION_FIELDS:
        if key in obj:
            value = _number(obj[key], where, key)
            if not 0 <= value <= MAX_DURATION_S:
                raise _Problem(where, key, f"must be between 0 and {MAX_DURATION_S:g} seconds, got {value:g}")
            values[key] = value
    if "enabled" in obj:
        if not isinstance(obj["enabled"], bool):
            raise _Problem(where, "enabled", f"must be true or false, got {obj['enabled']!r:.40}")
        values["enabled"] = obj["enabled"]
    if "suspect" in obj:
        if obj["suspect"] not in SUSPECT_POLICIES:
            raise _Problem(where, "suspect",
                           f"must be one of {', '.join(SUSPECT_POLICIES)}, got {obj['suspect']!r:.40}")
        values["suspect"] = obj["suspect"]
    return values


def _number(value: Any, where: str, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _Problem(where, key, f"must be a number, got {value!r:.40}")
    return float(value)


def _webhooks(items: Any) -> tuple[Webhook, ...]:
    if not isinstance(items, list):
        raise _Problem("webhooks", None, "must be a list of webhook objects")
    hooks: list[Webhook] = []
    seen: dict[str, str] = {}
    for i, obj in enumerate(items):
        where = f"webhooks[{i}]"
        if not isinstance(obj, dict):
            raise _Problem(where, None, "must be a JSON object with at least 'url'")
        _known_keys(obj, WEBHOOK_FIELDS, where)
        url = _url(obj.get("url"), where)
        if url in seen:
            raise _Problem(where, "url", f"repeats the URL of {seen[url]}")
        seen[url] = where
        secret = obj.get("secret")
        if secret is not None and (not isinstance(secret, str) or not secret):
            raise _Problem(where, "secret", "must be a non-empty string")
        if "secret_env" in obj:
            name = obj["secret_env"]
            if secret is not None:
                raise _Problem(where, "secret_env", "give either 'secret' or 'secret_env', not both")
            if not isinstance(name, str) or not name:
                raise _Problem(where, "secret_env", "must name an environment variable")
            secret = os.environ.get(name)
            if not secret:
                raise _Problem(where, "secret_env", f"environment variable {name[:64]} is not set or empty")
        events = obj.get("events", sorted(DEFAULT_EVENTS))
        if (not isinstance(events, list) or not events or len(set(map(str, events))) != len(events)
                or any(e not in EVENTS for e in events)):
            raise _Problem(where, "events", f"must be a non-empty list of distinct events from {', '.join(EVENTS)}")
        timeout = _number(obj.get("timeout_s", 10.0), where, "timeout_s")
        if not 0.5 <= timeout <= 120:
            raise _Problem(where, "timeout_s", f"must be between 0.5 and 120 seconds, got {timeout:g}")
        name = obj.get("name", "")
        if not isinstance(name, str) or len(name) > 64:
            raise _Problem(where, "name", "must be a string of at most 64 characters")
        hooks.append(Webhook(url, secret, frozenset(events), timeout, name))
    return tuple(hooks)


def _url(value: Any, where: str) -> str:
    """Only plain http(s) URLs; messages never repeat the URL, whose path may be a credential."""
    if not isinstance(value, str) or not value:
        raise _Problem(where, "url", "is required: an http:// or https:// URL")
    if len(value) > 2048 or any(c.isspace() or ord(c) < 32 for c in value):
        raise _Problem(where, "url", "must be at most 2048 characters without spaces or control characters")
    try:
        parts = urlsplit(value)
        _ = parts.port  # raises ValueError for a bad port
    except ValueError:
        raise _Problem(where, "url", "is not a valid URL") from None
    if parts.scheme not in ("http", "https"):
        raise _Problem(where, "url", f"scheme {parts.scheme[:16]!r} is not allowed; use http or https")
    if not parts.hostname:
        raise _Problem(where, "url", "has no host")
    if parts.username is not None or parts.password is not None:
        raise _Problem(where, "url", "must not contain user:password@; use 'secret' to authenticate deliveries")
    if parts.fragment:
        raise _Problem(where, "url", "must not contain a #fragment")
    return value
