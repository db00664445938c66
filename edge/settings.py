"""Settings: built once from CLI flags, each defaulting to an `FDEDGE_*` environment variable."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from edge.fdrest import MAX_MACHINE_LEN
from edge.http import hosts, origins
from edge.plant.broker import BrokerURL, parse_url, topic_filter, topic_name
from edge.plant.uplink_payload import parse_appliance_id, parse_topic_prefix

REPO_ROOT = Path(__file__).resolve().parent.parent
BUNDLED_MODEL = REPO_ROOT / "models" / "default"
BUNDLED_WEB = REPO_ROOT / "web"


def _env_name(name: str) -> str:
    return "FDEDGE_" + name.upper()


MODBUS_UNITS = 247  # Modbus unit ids 1-247; 0 is broadcast, 248-255 are reserved


def machine_list(text: str, limit: int) -> tuple[str, ...] | None:
    """Comma-separated machine names, in order, each once; empty = unset."""
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    if len(set(names)) != len(names) or len(names) > limit or any(len(n) > MAX_MACHINE_LEN for n in names):
        raise ValueError(text)
    return names or None


def flag(text: str) -> bool:
    """A boolean as systemd units, Docker and shells spell it."""
    if text.lower() in {"1", "true", "yes", "on"}:
        return True
    if text.lower() in {"0", "false", "no", "off"}:
        return False
    raise ValueError(text)


def setting(default: Any, parse: Callable[[str], Any], help_: str, choices: tuple[str, ...] | None = None) -> Any:
    """A settings field that carries its own parser (as Starlette's `Config(cast=...)`): the flag
    or environment text goes through `parse`, a ValueError names the setting."""
    return field(default=default, metadata={"parse": parse, "help": help_, "choices": choices})


@dataclass(frozen=True)
class Settings:
    host: str = setting("0.0.0.0", str, "address to listen on")
    port: int = setting(5000, int, "TCP port (5000 is FD-REST's, so existing sensors keep working)")
    data_dir: Path = setting(Path("data"), Path, "directory holding the SQLite database")
    db: Path | None = setting(None, Path, "SQLite file (default: DATA_DIR/sensor_data.db); "
                              "an FD-REST sensor_data.db works")
    model_dir: Path = setting(BUNDLED_MODEL, Path, "directory with model.onnx, scalers.npz and manifest.json")
    web_dir: Path = setting(BUNDLED_WEB, Path, "directory with the dashboard pages")
    token: str | None = setting(None, str, "bearer token required to ingest (POST /send, alarm acks); "
                                "unset = open ingest")
    read_token: str | None = setting(None, str, "bearer token required to read data "
                                     "(history, export, events, api, metrics)")
    token_file: Path | None = setting(None, Path, "read the ingest token from this file instead (a flag's value "
                                      "shows in `ps`; a Docker or systemd secret is a file)")
    read_token_file: Path | None = setting(None, Path, "read the read token from this file instead")
    admin_token: str | None = setting(None, str, "bearer token for model management over HTTP (/api/models*: "
                                      "upload, activate, rollback); unset (and no named admin token) = off, "
                                      "`fdedge model` is the only way")
    admin_token_file: Path | None = setting(None, Path, "read the admin token from this file instead")
    allowed_hosts: str | None = setting(None, str, "comma-separated names the appliance answers to "
                                        "(`fdedge.plant.local, 10.0.0.5, *.plant.local`); any other Host header "
                                        "gets 400, the defence against DNS rebinding; loopback always passes; "
                                        "unset = any")
    allowed_origins: frozenset[str] | None = setting(
        None, origins.parse_origins, "comma-separated origins (`https://scada.plant.local`) whose pages may "
        "post to the appliance besides its own; a write with any other Origin header gets 403")
    head_timeout: float = setting(10.0, float, "seconds a connection has from accept (or from the first byte "
                                  "of a later request) to a complete request head; then 408 and closed")
    max_connections: int = setting(1000, int, "most open connections (lowered to fit the descriptor limit); "
                                   "past it a new one replaces the longest-idle, or gets 503 if all are busy")
    max_machines: int = setting(1000, int, "most distinct machine names stored; a reading for one more "
                                "is refused 422 (too_many_machines)")
    max_body_bytes: int = setting(8 * 1024 * 1024, int, "largest accepted request body in bytes")
    max_batch_rows: int = setting(10_000, int, "most readings accepted in one request")
    warning_threshold: float = setting(30.0, float, "fault intensity shown as warning")
    alarm_threshold: float = setting(60.0, float, "fault intensity shown as alarm")
    alarm_rules: Path | None = setting(None, Path, "JSON file with alarm rules and webhooks (docs/ALARMS.md); "
                                       "default: the thresholds above, clear 5 below warning, 3 readings in a row")
    clock_skew: float = setting(300.0, float, "seconds a reading's time may be ahead of the appliance's clock and "
                                "still advance its machine's alarm clock; later-dated readings are stored and "
                                "evaluated but never make correct readings after them late")
    stale_after: float = setting(600.0, float, "seconds without a reading after which a machine is stale (greyed, "
                                 "a `stale` alarm), or 3 times its usual interval if longer; 0 = off")
    drift_interval: float = setting(60.0, float, "seconds between drift scores of each machine with new readings "
                                    "(its recent window against the model's training data); 0 = off")
    drift_window: int = setting(300, int, "readings per machine in the drift window (the newest)")
    retention_days: float = setting(0.0, float, "delete readings older than this many days (0 = keep all)")
    retention_rows: int = setting(0, int, "keep at most this many readings (0 = no limit)")
    max_db_mb: float = setting(0.0, float, "hard cap on the database size in MiB; ingest answers 503 when "
                               "reached (0 = none)")
    card_size_gb: float = setting(0.0, float, "size of the SD card or disk holding the database, in GB, for the "
                                  "wear estimate (0 = the size of the data directory's filesystem)")
    card_pe_cycles: int = setting(1000, int, "program/erase cycles the card's flash is rated for, for the wear "
                                  "estimate (1000: a consumer TLC card; industrial SLC cards: 30000 and more)")
    retention_interval: float = setting(60.0, float, "seconds between retention passes")
    sync: str = setting("full", str, "full: a reading is answered once it is on disk (survives power loss); "
                        "normal: once committed (survives a crash of the server, not of the machine)",
                        choices=("full", "normal"))
    threads: int = setting(1, int, "onnxruntime intra-op threads")
    read_threads: int = setting(2, int, "threads for database reads (history, exports, SSE catch-up, /api); "
                                "more queue, so reads cannot starve ingest")
    sse_buffer: int = setting(4096, int, "recent events kept in memory for live clients (shared by all); "
                              "a client further behind is caught up from the database")
    send_timeout: float = setting(30.0, float, "seconds a client may stop reading a stream (/events, "
                                  "/generate_csv, large answers) before it is disconnected and its snapshot released")
    sse_replay_max: int = setting(10_000, int, "most missed readings replayed to a reconnecting SSE client")
    socketio: bool = setting(False, flag, "serve Socket.IO at /socket.io/ on this port (polling and WebSocket), "
                             "emitting FD-REST's `update_table` event for every stored reading, so FD-REST's "
                             "pages and scripts keep working; the read token applies")
    init_db: bool = setting(False, flag, "create a new empty database even though this data directory had one "
                            "before")
    mqtt_url: BrokerURL | None = setting(None, parse_url, "MQTT broker to take readings from, "
                                         "mqtt://user:pass@host:1883 or mqtts://... (unset = no MQTT ingest)")
    mqtt_ca: Path | None = setting(None, Path, "CA certificate file for an mqtts:// broker (default: the system's)")
    mqtt_cert: Path | None = setting(None, Path, "client certificate file for an mqtts:// broker that wants one")
    mqtt_key: Path | None = setting(None, Path, "the client certificate's key file (if not in --mqtt-cert)")
    mqtt_ingest_topic: str = setting("fdedge/+/reading", topic_filter, "topic filter to subscribe to; each "
                                     "message is what POST /send takes (a JSON reading or an array)")
    mqtt_machine_level: int | None = setting(None, int, "topic level (0 = the first) naming the machine of a "
                                             "reading without a machine field (default: the filter's first +; "
                                             "-1 = never from the topic)")
    mqtt_error_topic: str | None = setting(None, topic_name, "topic refused messages are republished to, "
                                           "with the reason (unset = only counted and logged)")
    mqtt_client_id: str | None = setting(None, str, "MQTT client id, which names the broker's persistent session "
                                         "(default: fdedge- and a hash of the host name and database path)")
    mqtt_qos: int = setting(1, int, "subscription QoS: 1 = each message acknowledged once its readings are "
                            "stored (none lost), 0 = at most once")
    modbus_port: int | None = setting(None, int, "TCP port of the read-only Modbus TCP server for PLCs and SCADA "
                                      "(docs/MODBUS.md; 502 is Modbus's own, which needs root); unset = off")
    modbus_host: str | None = setting(None, str, "address the Modbus server listens on (default: --host)")
    modbus_machines: tuple[str, ...] | None = setting(
        None, lambda text: machine_list(text, MODBUS_UNITS), "comma-separated machine names: unit id 1 is the "
        "first, and so on (at most 247); unset = the order machines were first seen, as many as --max-machines")
    machine_metrics: bool = setting(True, flag, "per-machine gauges on /metrics (newest faults, state, time of the "
                                    "newest reading): 10 series a machine, at most --max-machines machines")
    log_level: str = setting("info", str, "log level", choices=("debug", "info", "warning", "error"))
    access_log: bool = setting(False, flag, "log every request (off: costs throughput on a Pi)")
    # The uplink to a central broker (edge/plant/uplink.py, docs/FLEET.md)
    uplink_url: BrokerURL | None = setting(
        None, parse_url, "central MQTT broker that every stored reading and alarm change is published to "
        "(`mqtt://user:pass@host:1883`, `mqtts://...`), QoS 1 from a durable cursor; unset = no uplink")
    uplink_ca: Path | None = setting(None, Path, "CA certificate (PEM) an mqtts:// uplink broker's certificate "
                                     "must chain to (default: the system's CAs)")
    uplink_cert: Path | None = setting(None, Path, "client certificate (PEM) for an mqtts:// uplink broker that "
                                       "wants one")
    uplink_key: Path | None = setting(None, Path, "the client certificate's private key (PEM), unless it is in "
                                      "the certificate file")
    uplink_topic_prefix: str = setting("fdedge", parse_topic_prefix, "topic levels before the appliance id, "
                                       "Unified Namespace style (`acme/berlin/line1`); topics are "
                                       "PREFIX/APPLIANCE_ID/MACHINE/readings and PREFIX/APPLIANCE_ID/alarms")
    appliance_id: str | None = setting(None, parse_appliance_id, "this appliance's name in uplink topics and "
                                       "keys: 1-64 letters, digits, '.', '_', '-' (default: the host name)")
    uplink_backlog_rows: int = setting(1_000_000, int, "most readings kept waiting for the uplink; past it the "
                                       "oldest are skipped (the uplink sends the newest this many), counted in "
                                       "fdedge_uplink_skipped_rows_total and logged")

    @property
    def db_path(self) -> Path:
        return self.db if self.db is not None else self.data_dir / "sensor_data.db"

    @classmethod
    def parser(cls, prog: str = "fdedge serve") -> argparse.ArgumentParser:
        parser = argparse.ArgumentParser(
            prog=prog,
            description="Run the FD-Edge appliance. Every option can also be set by the environment "
            "variable shown in brackets.",
        )
        for f in fields(cls):
            option = "--" + f.name.replace("_", "-")
            env = _env_name(f.name)
            help_ = f"{f.metadata['help']} [{env}]"
            # argparse's own default stays None (so an unset flag falls through to the environment):
            # show the real default here instead of argparse's "(default: None)".
            if f.default is not None and f.default != "":
                help_ += f" (default: {f.default})"
            if f.metadata["parse"] is flag:
                parser.add_argument(option, action=argparse.BooleanOptionalAction, default=None, help=help_)
                continue
            parser.add_argument(option, default=None, help=help_, choices=f.metadata["choices"],
                                metavar=f.name.upper())
        return parser

    @classmethod
    def from_args(cls, argv: list[str] | None = None, environ: Mapping[str, str] | None = None) -> Settings:
        """Flags win over environment variables, which win over defaults."""
        parser = cls.parser()
        args = parser.parse_args(argv or [])
        env: Mapping[str, str] = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = getattr(args, f.name)
            if raw is None:
                raw = env.get(_env_name(f.name))
            if raw is None or raw == "":
                continue
            choices = f.metadata["choices"]
            try:
                value = raw if isinstance(raw, bool) else f.metadata["parse"](str(raw).strip())
                if choices is not None and value not in choices:  # argparse checks flags, not variables
                    raise ValueError(value)
            except ValueError:
                valid = f" (one of {', '.join(choices)})" if choices else ""
                parser.error(f"{f.name.replace('_', '-')} / {_env_name(f.name)}: invalid value {raw!r}{valid}")
            values[f.name] = value
        for name in ("token", "read_token", "admin_token"):
            path = values.get(f"{name}_file")
            if path is None:
                continue
            if values.get(name):
                parser.error(f"set {name.replace('_', '-')} or {name.replace('_', '-')}-file, not both")
            try:
                values[name] = read_token_file(path)
            except ValueError as exc:
                parser.error(f"{name.replace('_', '-')}-file: {exc}")
        settings = cls(**values)
        problem = settings.problem()
        if problem:
            parser.error(problem)
        return settings

    def problem(self) -> str | None:
        if not 0 < self.port < 65536:
            return f"port {self.port} is out of range"
        if self.warning_threshold > self.alarm_threshold:
            return "warning-threshold must not exceed alarm-threshold"
        if self.card_size_gb < 0 or self.card_pe_cycles < 1:
            return "card-size-gb must be >= 0 and card-pe-cycles >= 1"
        if self.retention_days < 0 or self.retention_rows < 0:
            return "retention limits must be >= 0"
        if not 1 <= self.read_threads <= 64:
            return "read-threads must be 1-64"
        if self.max_machines < 1:
            return "max-machines must be >= 1"
        if not 0 < self.head_timeout <= 3600 or self.max_connections < 1:
            return "head-timeout must be more than 0 and at most 3600 seconds, max-connections >= 1"
        if not 0 < self.send_timeout <= 3600:
            return "send-timeout must be more than 0 and at most 3600 seconds"
        if self.modbus_port is not None and not 0 < self.modbus_port < 65536:
            return f"modbus-port {self.modbus_port} is out of range"
        if self.modbus_port == self.port:
            return "modbus-port must differ from port (HTTP)"
        if not 0 <= self.stale_after <= 365 * 86400:
            return "stale-after must be 0 (off) to 31536000 seconds"
        if not 0 <= self.drift_interval <= 86400 or not 30 <= self.drift_window <= 100_000:
            return "drift-interval must be 0 (off) to 86400 seconds and drift-window 30 to 100000 readings"
        if not 0 <= self.clock_skew <= 86400:
            return "clock-skew must be 0-86400 seconds"
        if self.allowed_hosts is not None and not any(hosts.parse(self.allowed_hosts)):
            return "allowed-hosts lists no names (leave it unset to answer to any)"
        mqtt = self.mqtt_problem()
        if mqtt:
            return mqtt
        if self.uplink_backlog_rows < 1:
            return "uplink-backlog-rows must be >= 1"
        if self.max_body_bytes < 1024 or self.max_batch_rows < 1 or self.threads < 1 or self.sse_buffer < 1:
            return "max-body-bytes >= 1024, max-batch-rows, threads and sse-buffer >= 1"
        return None

    def mqtt_problem(self) -> str | None:
        """Checked only with --mqtt-url set: the MQTT settings mean nothing without it."""
        if self.mqtt_url is None:
            return None
        if self.mqtt_qos not in (0, 1):
            return "mqtt-qos must be 0 or 1"
        if not self.mqtt_url.tls and (self.mqtt_ca or self.mqtt_cert or self.mqtt_key):
            return f"mqtt-ca, mqtt-cert and mqtt-key need an mqtts:// broker, not {self.mqtt_url}"
        if self.mqtt_key and not self.mqtt_cert:
            return "mqtt-key needs its mqtt-cert"
        levels = self.mqtt_ingest_topic.split("/")
        level = self.mqtt_machine_level
        if level is not None and not (level == -1 or 0 <= level < len(levels) and levels[level] != "#"):
            return (f"mqtt-machine-level {level} is not a level of {self.mqtt_ingest_topic} "
                    f"(0-{len(levels) - 1}, or -1 for none)")
        if self.mqtt_client_id is not None and not 0 < len(self.mqtt_client_id.encode()) <= 65535:
            return "mqtt-client-id must not be empty"
        if self.mqtt_error_topic is not None:
            from paho.mqtt.client import topic_matches_sub  # only with MQTT on
            if topic_matches_sub(self.mqtt_ingest_topic, self.mqtt_error_topic):
                return (f"mqtt-error-topic {self.mqtt_error_topic} matches mqtt-ingest-topic "
                        f"{self.mqtt_ingest_topic}: refused messages would come back as input")
        return None


def read_token_file(path: Path) -> str:
    """The file's only line, without surrounding whitespace (an editor's trailing newline)."""
    try:
        text = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read {path}: {exc}") from None
    if not text:
        raise ValueError(f"{path} is empty")
    if any(c.isspace() for c in text):
        raise ValueError(f"{path} must hold one token on one line, without spaces")
    return text
