"""Alarms: one alarm per episode, committed with its readings, rebuilt after a restart, and
notified to webhooks that may be down for a while.

The engine is exercised the way the writer drives it (`Bench`): insert the readings inside
BEGIN IMMEDIATE, evaluate, then COMMIT + commit() or ROLLBACK + rollback().
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from edge.alarms.engine import AlarmChange, AlarmEngine, Conflict
from edge.alarms.notifier import Notifier, signature
from edge.alarms.rules import Rule, load_rules, parse_rules
from edge.alarms.tables import alarm_columns_sql, get_alarm, list_alarms
from edge.errors import BadRequest, NotFound, StartupError
from edge.fdrest import FAULTS, format_time
from edge.store.machine_state import record as _record
from edge.store.schema import TABLE, insert_rows, open_database
from tests.harness import free_port

REPO = Path(__file__).resolve().parents[2]
T0 = datetime(2024, 3, 1, 8, 0, tzinfo=UTC)
BASE = {"warning": 30.0, "alarm": 60.0}


def stamp(seconds: float) -> str:
    return format_time(T0 + timedelta(seconds=seconds))


def rows_of(columns: dict[int, list[float]], machine: str = "m1", start: float = 0.0,
            step: float = 1.0) -> list[tuple[str, str, list[float]]]:
    """(time, machine, 8 fault values), one reading every `step` seconds; `columns` maps a fault
    index to its values (shorter lists are padded with 0), the other faults read 0."""
    out = []
    for k in range(max(len(v) for v in columns.values())):
        y = [0.0] * 8
        for f, values in columns.items():
            y[f] = float(values[k]) if k < len(values) else 0.0
        out.append((stamp(start + k * step), machine, y))
    return out


def readings(values: list[float], machine: str = "m1", fault: int = 2, start: float = 0.0,
             step: float = 1.0) -> list[tuple[str, str, list[float]]]:
    return rows_of({fault: values}, machine, start, step)


class Bench:
    """The writer's ingest transaction in miniature."""

    def __init__(self, path: Path, rules=None) -> None:
        self.path, self.rules = path, rules or load_rules(None, 30, 60)
        self.conn = open_database(path, sync="normal")
        self.engine = AlarmEngine(self.rules)
        self.engine.setup(self.conn)
        self.changes: list[AlarmChange] = []

    def feed(self, batch: list[tuple[str, str, list[float]]], commit: bool = True) -> list[AlarmChange]:
        rows = [(t, *[0.0] * 35, *map(float, y), m) for t, m, y in batch]
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            last = insert_rows(self.conn, [r[0] for r in rows], [list(r[1:36]) for r in rows],
                               [list(r[36:44]) for r in rows], [r[-1] for r in rows])
            first = last - len(rows) + 1
            changes = self.engine.evaluate(self.conn, [(first + k, r[0], r[-1], list(r[36:44]))
                                                       for k, r in enumerate(rows)])
            _record(self.conn, first, [r[0] for r in rows], [r[-1] for r in rows],  # as the writer does
                            [max(r[36:44]) for r in rows])
            if commit:
                self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            self.engine.rollback()
            raise
        if not commit:
            self.conn.execute("ROLLBACK")
            self.engine.rollback()
            return changes
        self.engine.commit()
        self.changes += changes
        return changes

    def restart(self) -> Bench:
        self.conn.close()
        return Bench(self.path, self.rules)

    def alarms(self, **filters: Any) -> list[dict]:
        return list(reversed(list_alarms(self.conn, limit=1000, **filters)))

    def kinds(self, changes: list[AlarmChange] | None = None) -> list[str]:
        return [c.kind for c in (self.changes if changes is None else changes) if c.kind != "peak"]

    def reading_id(self, time_text: str, machine: str = "m1") -> int:
        return self.conn.execute(f"SELECT id FROM {TABLE} WHERE time = ? AND machine = ?",
                                 (time_text, machine)).fetchone()[0]


@pytest.fixture
def bench(tmp_path) -> Bench:
    b = Bench(tmp_path / "alarms.db")
    yield b
    b.conn.close()


# -- rules ------------------------------------------------------------------------------------------

def test_defaults_follow_the_settings_thresholds():
    assert load_rules(None, 30, 60).rule("any", "fault3") == Rule(30, 60, 25, 3, 3, 0, 0, True)
    assert load_rules(None, 40, 70).rule("any", "fault0").clear == 35


def test_rules_resolve_from_defaults_to_fault_to_machine_to_pair():
    rules = parse_rules({
        "defaults": {"consecutive": 4},
        "rules": [{"fault": "fault2", "warning": 40, "alarm": 70},
                  {"machine": "pump-3", "enabled": False},
                  {"machine": "pump-3", "fault": "fault2", "enabled": True, "alarm": 80}],
    }, BASE)
    assert rules.rule("other", "fault2") == Rule(40, 70, 35, 4, 4, 0, 0, True)
    assert rules.rule("other", "fault1") == Rule(30, 60, 25, 4, 4, 0, 0, True)
    assert rules.rule("pump-3", "fault1").enabled is False
    assert rules.rule("pump-3", "fault2") == Rule(40, 80, 35, 4, 4, 0, 0, True)


BAD_RULES = [
    ("{", "not valid JSON", "line 1"),
    ("[]", "top level", "JSON object"),
    ('{"defaults": {"treshold": 3}}', "defaults", "field 'treshold': unknown field"),
    ('{"rules": [{"fault": "fault9"}]}', "rules[0]", "field 'fault': unknown fault 'fault9'"),
    ('{"rules": [{"warning": 10}]}', "rules[0]", "needs 'fault' and/or 'machine'"),
    ('{"rules": [{"fault": "fault2", "clear": 31}]}', "rules[0] (fault2)", "field 'clear'"),
    ('{"rules": [{"fault": "fault2", "warning": 40, "clear": 45}]}', "rules[0] (fault2)", "field 'clear'"),
    ('{"rules": [{"fault": "fault1", "machine": "p", "warning": 70}]}', "rules[0] (fault1 on machine 'p')",
     "field 'warning': 'warning' (70) must not exceed 'alarm' (60)"),
    ('{"defaults": {"clear": 28}, "rules": [{"fault": "fault4", "warning": 20, "alarm": 50}]}',
     "rules[0] (fault4)", "field 'warning'"),
    ('{"rules": [{"fault": "fault1", "consecutive": 0}]}', "rules[0] (fault1)", "field 'consecutive'"),
    ('{"rules": [{"fault": "fault1", "consecutive": 2.5}]}', "rules[0] (fault1)", "field 'consecutive'"),
    ('{"rules": [{"fault": "fault1", "min_duration_s": -1}]}', "rules[0] (fault1)", "field 'min_duration_s'"),
    ('{"rules": [{"fault": "fault1", "enabled": "no"}]}', "rules[0] (fault1)", "field 'enabled'"),
    ('{"rules": [{"fault": "fault1"}, {"fault": "fault1", "warning": 35}]}', "rules[1] (fault1)", "repeats the target of rules[0]"),
    ('{"webhooks": [{"url": "ftp://host/x"}]}', "webhooks[0]", "field 'url': scheme 'ftp' is not allowed"),
    ('{"webhooks": [{"url": "https://u:p@host/x"}]}', "webhooks[0]", "must not contain user:password@"),
    ('{"webhooks": [{"url": "https://host/x", "events": ["raise", "explode"]}]}', "webhooks[0]", "field 'events'"),
    ('{"webhooks": [{"url": "https://host/x"}, {"url": "https://host/x"}]}', "webhooks[1]", "repeats the URL of webhooks[0]"),
    ('{"webhooks": [{"url": "https://host/x", "secret_env": "FDEDGE_TEST_UNSET_SECRET"}]}', "webhooks[0]",
     "environment variable FDEDGE_TEST_UNSET_SECRET is not set"),
    ('{"webhooks": [{"url": "https://host/x", "timeout_s": 0}]}', "webhooks[0]", "field 'timeout_s'"),
]


@pytest.mark.parametrize(("text", "where", "problem"), BAD_RULES, ids=[w + ":" + p[:24] for _, w, p in BAD_RULES])
def test_rules_file_errors_name_file_rule_and_field(tmp_path, monkeypatch, text, where, problem):
    monkeypatch.delenv("FDEDGE_TEST_UNSET_SECRET", raising=False)
    path = tmp_path / "rules.json"
    path.write_text(text)
    with pytest.raises(StartupError) as err:
        load_rules(path, 30, 60)
    message = str(err.value)
    assert message.startswith(f"alarm rules file {path}: {where}"), message
    assert problem in message, message


def test_rules_errors_never_print_the_webhook_url_path(tmp_path):
    path = tmp_path / "rules.json"
    path.write_text('{"webhooks": [{"url": "https://hooks.example/T0KEN-SECRET", "events": []}]}')
    with pytest.raises(StartupError) as err:
        load_rules(path, 30, 60)
    assert "T0KEN-SECRET" not in str(err.value)
    assert "T0KEN-SECRET" not in repr(parse_rules({"webhooks": [{"url": "https://h/T0KEN-SECRET", "secret": "x"}]}, BASE))


def test_missing_rules_file_is_a_startup_error(tmp_path):
    with pytest.raises(StartupError, match="alarm rules file .*nope.json: cannot read it"):
        load_rules(tmp_path / "nope.json", 30, 60)


def test_the_example_in_the_docs_is_a_valid_rules_file(tmp_path, monkeypatch):
    text = (REPO / "docs" / "ALARMS.md").read_text()
    example = re.search(r"```json\n(.*?)```", text, re.S).group(1)
    monkeypatch.setenv("PLANT_WEBHOOK_SECRET", "from-the-environment")
    path = tmp_path / "rules.json"
    path.write_text(example)
    rules = load_rules(path, 30, 60)
    assert rules.webhooks and all(h.secret for h in rules.webhooks)


# -- lifecycle --------------------------------------------------------------------------------------

def developing_fault(seed: int = 7) -> tuple[list[float], str]:
    """Fault 2 grows 0 -> 90 over 8 minutes at 1 Hz (the simulator's ground truth when present) plus
    model-like noise, then the machine is repaired. Returns (predictions, source)."""
    rng = np.random.default_rng(seed)
    try:
        from simulator import Scenario, VirtualMachine
        vm = VirtualMachine(seed, scenario=Scenario.developing(fault=2, minutes=8, peak=90), start=T0)
        truth, source = np.array([r.faults["fault2"] for r in vm.run(480)]), "simulator"
    except Exception:  # noqa: BLE001 - the simulator is optional here
        truth, source = np.linspace(0, 90, 480), "synthetic"
    repaired = np.full(180, 5.0)
    values = np.clip(np.concatenate([truth, repaired]) + rng.normal(0, 3, 660), 0, None)
    return values.tolist(), source


def test_a_developing_fault_raises_once_escalates_once_and_clears_once(bench):
    values, _ = developing_fault()
    naive = sum(1 for a, b in zip(values, values[1:]) if a < 30 <= b) + sum(1 for a, b in zip(values, values[1:]) if a < 60 <= b)
    assert naive > 3  # a bare threshold would have notified this many times
    batch = readings(values)
    rng = np.random.default_rng(1)
    k = 0
    while k < len(batch):  # groups of varying size, as the writer commits them
        n = int(rng.integers(1, 40))
        bench.feed(batch[k:k + n])
        k += n
    assert bench.kinds() == ["raise", "escalate", "clear"]
    (alarm,) = bench.alarms()
    assert alarm["raised_severity"] == "warning" and alarm["severity"] == "alarm" and alarm["state"] == "cleared"
    assert alarm["category"] == "Wide-band vibration impulses"
    assert alarm["peak"] == pytest.approx(max(values))
    raised = alarm["raised_reading"] - 1  # reading ids start at 1
    assert all(v >= 30 for v in values[raised - 2:raised + 1]) and not all(v >= 30 for v in values[raised - 3:raised])
    assert bench.engine.active_count == 0


def test_noise_around_the_warning_level_raises_at_most_one_alarm(bench):
    values = (30 + np.random.default_rng(3).normal(0, 2, 3000)).tolist()
    assert sum(1 for a, b in zip(values, values[1:]) if a < 30 <= b) > 500
    batch = readings(values)
    for k in range(0, len(batch), 50):
        bench.feed(batch[k:k + 50])
    assert len(bench.alarms()) <= 1
    assert bench.kinds().count("raise") <= 1 and "clear" not in bench.kinds()


def test_escalation_needs_its_own_consecutive_readings(bench):
    bench.feed(readings([35, 35, 35]))
    assert bench.kinds() == ["raise"] and bench.changes[0].severity == "warning"
    bench.feed(readings([65, 65, 50, 65, 65], start=3))
    assert bench.kinds() == ["raise"]
    (esc,) = [c for c in bench.feed(readings([65], start=8)) if c.kind != "peak"]
    assert esc.kind == "escalate" and esc.severity == "alarm" and esc.reading_id == 9
    alarm = bench.alarms()[0]
    assert (alarm["raised_severity"], alarm["severity"], alarm["escalated_reading"]) == ("warning", "alarm", 9)


def test_thresholds_are_inclusive_and_clear_is_strictly_below(bench):
    bench.feed(readings([30, 30, 30]))  # exactly warning counts
    bench.feed(readings([25, 25, 25, 25], start=3))  # exactly clear does not
    assert bench.kinds() == ["raise"]
    bench.feed(readings([24.999, 24.999, 24.999], start=7))
    assert bench.kinds() == ["raise", "clear"]


def test_a_sudden_fault_raises_straight_to_alarm(bench):
    bench.feed(readings([0, 80, 85, 90, 70]))
    assert bench.kinds() == ["raise"]
    alarm = bench.alarms()[0]
    assert alarm["raised_severity"] == "alarm" and alarm["escalated_at"] is None
    assert alarm["since"] == "2024-03-01T08:00:01Z" and alarm["peak"] == 90 and alarm["peak_reading"] == 4


def test_machines_and_faults_are_independent(bench):
    batch = []
    for k in range(3):  # one group, interleaved: m2's healthy fault2 must not break m1's run
        batch += readings([40], "m1", 2, start=k) + rows_of({2: [10], 5: [50]}, "m2", start=k)
    bench.feed(batch)
    keys = sorted((a["machine"], a["fault"]) for a in bench.alarms(state="active"))
    assert keys == [("m1", "fault2"), ("m2", "fault5")]
    bench.feed(readings([0, 0, 0], "m1", 2, start=3))
    assert [(a["machine"], a["fault"]) for a in bench.alarms(state="active")] == [("m2", "fault5")]


def test_a_group_is_evaluated_in_reading_time_order(bench):
    ordered = readings([40, 40, 40, 10, 10, 10])
    shuffled = [ordered[i] for i in (4, 0, 5, 2, 1, 3)]
    bench.feed(shuffled)
    assert bench.kinds() == ["raise", "clear"]
    alarm = bench.alarms()[0]
    assert alarm["raised_reading"] == bench.reading_id(stamp(2)) and alarm["cleared_reading"] == bench.reading_id(stamp(5))
    # equal times: the earlier id first
    bench.feed([(stamp(10), "m1", [0, 0, v, 0, 0, 0, 0, 0]) for v in (40, 40, 40, 0, 0, 0)])
    second = bench.alarms()[1]
    assert (second["raised_reading"], second["cleared_reading"]) == (9, 12)


def test_readings_older_than_the_last_evaluated_do_not_rewrite_the_present(bench):
    bench.feed(readings([40, 40, 40], start=100))
    bench.feed(readings([0, 0, 0, 0], start=0))  # a late backfill from before the alarm
    assert bench.alarms(state="active") and bench.kinds() == ["raise"]
    assert bench.engine.stale_readings == 4


def test_a_reading_from_a_wrong_clock_does_not_stop_evaluation(bench):
    bench.feed([("2099-01-01 00:00:00", "m1", [0, 0, 40, 0, 0, 0, 0, 0])])
    bench.feed(readings([40, 40]))  # correct times after a reading dated 2099: still evaluated
    assert bench.kinds() == ["raise"] and bench.engine.stale_readings == 0
    again = bench.restart()
    again.feed(readings([0, 0, 0], start=2))
    assert again.kinds() == ["clear"]


def test_a_nan_does_not_hide_a_high_value(bench):
    bench.feed(rows_of({0: [float("nan")] * 3, 2: [40] * 3}))
    assert bench.kinds() == ["raise"]


def test_minimum_duration(tmp_path):
    rules = parse_rules({"defaults": {"consecutive": 1, "min_duration_s": 10}}, BASE)
    bench = Bench(tmp_path / "d.db", rules)
    bench.feed(readings([40] * 6, step=2))  # 0..10 s: held for exactly 10 s at the 6th reading
    assert bench.alarms()[0]["raised_reading"] == 6
    restarted = bench.restart()  # the run's start survives a restart: clear needs 10 s too
    restarted.feed(readings([0] * 5, start=12, step=2))
    assert restarted.alarms(state="active")
    restarted.feed(readings([0], start=22))
    assert restarted.kinds() == ["clear"]


def test_a_disabled_rule_raises_nothing_but_an_active_alarm_still_clears(tmp_path):
    first = Bench(tmp_path / "x.db")
    first.feed(rows_of({2: [40] * 3, 6: [90] * 3}))
    first.conn.close()
    rules = parse_rules({"rules": [{"fault": "fault2", "enabled": False}]}, BASE)
    bench = Bench(tmp_path / "x.db", rules)
    bench.feed(rows_of({2: [40] * 5, 6: [90] * 5}, start=10))
    assert bench.kinds() == []
    bench.feed(rows_of({2: [0] * 3, 6: [90] * 3}, start=20))
    assert bench.kinds() == ["clear"] and [a["fault"] for a in bench.alarms(state="active")] == ["fault6"]
    bench.feed(rows_of({2: [40] * 5, 6: [90] * 5}, start=30))
    assert bench.kinds() == ["clear"]


# -- transactions and restarts ---------------------------------------------------------------------

def test_a_rolled_back_group_leaves_no_phantom_alarm_or_run(bench):
    bench.feed(readings([40, 40]))
    phantom = bench.feed(readings([40], start=2), commit=False)
    assert [c.kind for c in phantom] == ["raise"]  # evaluated, then the commit failed
    assert bench.alarms() == [] and bench.engine.active_count == 0
    bench.feed(readings([40], start=2))  # the retry is the third in a row, not the fourth
    assert bench.kinds() == ["raise"] and bench.alarms()[0]["raised_reading"] == 3
    bench.feed(readings([0, 0, 0], start=3), commit=False)  # a rolled-back clear
    assert bench.alarms(state="active") and bench.engine.active_count == 1
    bench.feed(readings([0, 0], start=3))
    assert bench.kinds() == ["raise"]  # two below clear, not five
    bench.feed(readings([0], start=5))
    assert bench.kinds() == ["raise", "clear"]


def test_new_machines_of_a_rolled_back_group_are_forgotten(bench):
    bench.feed(readings([40, 40, 40], machine="ghost"), commit=False)
    assert "ghost" not in bench.engine._machines


def test_storage_errors_fail_the_group(bench):
    bench.conn.execute("ALTER TABLE fdedge_alarms RENAME TO moved")
    with pytest.raises(sqlite3.OperationalError):
        bench.feed(readings([40, 40, 40]))
    assert bench.conn.execute(f"SELECT count(*) FROM {TABLE}").fetchone()[0] == 0


def test_an_alarm_bug_costs_no_readings(bench, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    bench.feed(readings([40, 40]))
    monkeypatch.setattr(bench.engine, "_outbox", broken)  # fails after the alarm row was inserted
    with caplog.at_level(logging.ERROR, "edge.alarms"):
        assert bench.feed(readings([40, 40], start=2)) == []
    assert "alarm evaluation failed" in caplog.text and bench.engine.errors == 1
    assert bench.conn.execute(f"SELECT count(*) FROM {TABLE}").fetchone()[0] == 4
    assert bench.alarms() == [] and bench.engine.active_count == 0
    monkeypatch.undo()
    bench.feed(readings([40], start=4))  # runs are as before the failed group: 2 + 1
    assert bench.kinds() == ["raise"] and bench.alarms()[0]["raised_reading"] == 5


def test_restart_keeps_active_alarms_and_pending_runs(bench):
    bench.feed(readings([40, 40, 40, 10, 10]))  # raised; two of three clearing readings
    bench.feed(readings([40, 40], machine="m2"))  # two of three raising readings
    bench.feed(readings([40, 40, 40], machine="m3"))
    again = bench.restart()
    assert again.engine.active_count == 2
    again.feed(readings([10], start=5))
    again.feed(readings([40], machine="m2", start=2))
    again.feed(readings([50] * 5, machine="m3", start=3))
    assert again.kinds() == ["clear", "raise"]
    by_machine = {a["machine"]: a for a in again.alarms()}
    assert by_machine["m1"]["id"] == 1 and by_machine["m1"]["cleared_reading"] == again.reading_id(stamp(5))
    assert by_machine["m2"]["raised_reading"] == again.reading_id(stamp(2), "m2")
    assert by_machine["m3"]["peak"] == 50 and len(again.alarms()) == 3


def test_evaluation_runs_no_sql_while_nothing_changes(bench):
    statements: list[str] = []
    bench.feed(readings([70, 70, 70]))  # an active alarm, at its peak
    bench.conn.set_trace_callback(statements.append)
    healthy = [(stamp(10 + k), f"h{k % 7}", [5.0] * 8) for k in range(2000)]
    steady = readings([70] * 500, start=10)
    bench.feed(healthy + steady)
    bench.conn.set_trace_callback(None)
    assert not [s for s in statements if "alarm" in s.lower()], statements[:5]


# -- what shows up: list, report column, ack ---------------------------------------------------------

def test_report_column_lists_the_alarms_active_at_each_reading(bench):
    bench.feed(rows_of({2: [40, 40, 40, 70, 70, 70, 70, 0, 0, 0, 0], 5: [45] * 6}))
    got = [r[0] for r in bench.conn.execute(f"SELECT {alarm_columns_sql()} FROM {TABLE} ORDER BY time, id")]
    both = "fault2:warning;fault5:warning"
    assert got == ["", "", both, both, both, "fault2:alarm;fault5:warning", "fault2:alarm;fault5:warning",
                   "fault2:alarm;fault5:warning", "fault2:alarm", "", ""]


def test_list_filters_and_validation(bench):
    bench.feed(rows_of({2: [40, 40, 40, 0, 0, 0], 5: [40] * 6}) + readings([70] * 3, "m2"))
    assert len(bench.alarms()) == 3
    assert [a["fault"] for a in bench.alarms(state="active", machine="m1")] == ["fault5"]
    assert [a["state"] for a in bench.alarms(state="cleared")] == ["cleared"]
    assert [a["machine"] for a in bench.alarms(fault="fault2")] == ["m1", "m2"]
    newest = list_alarms(bench.conn, limit=1)
    assert len(newest) == 1 and list_alarms(bench.conn, before=newest[0]["id"], limit=10)[0]["id"] < newest[0]["id"]
    assert get_alarm(bench.conn, 1)["id"] == 1
    with pytest.raises(NotFound):
        get_alarm(bench.conn, 99)
    with pytest.raises(BadRequest):
        list_alarms(bench.conn, state="open")
    with pytest.raises(BadRequest):
        list_alarms(bench.conn, fault="fault8")


def test_ack_is_stored_idempotent_and_conflicts_with_a_different_ack(tmp_path):
    rules = parse_rules({"webhooks": [{"url": "http://127.0.0.1:9/a", "events": ["raise", "ack"]},
                                      {"url": "http://127.0.0.1:9/b", "events": ["raise"]}]}, BASE)
    bench = Bench(tmp_path / "ack.db", rules)
    bench.feed(readings([40, 40, 40]))
    result = bench.engine.ack(bench.conn, 1, " ana ", "checking bearing 2")
    assert not result["replayed"] and result["alarm"]["acked_by"] == "ana" and result["alarm"]["acked"]
    assert bench.engine.ack(bench.conn, 1, "ana", "checking bearing 2")["replayed"]
    with pytest.raises(Conflict) as err:
        bench.engine.ack(bench.conn, 1, "bob", None)
    assert err.value.status == 409 and err.value.details["acked_by"] == "ana"
    with pytest.raises(NotFound):
        bench.engine.ack(bench.conn, 42, "ana", None)
    for by in ("", None, 5, "x" * 101):
        with pytest.raises(BadRequest):
            bench.engine.ack(bench.conn, 1, by, None)
    assert not bench.conn.in_transaction
    events = bench.conn.execute("SELECT hook, event FROM fdedge_alarm_outbox ORDER BY id").fetchall()
    a, b = (h.key for h in rules.webhooks)
    assert events == [(a, "raise"), (b, "raise"), (a, "ack")]
    bench.feed(readings([0, 0, 0], start=3))  # the clear carries the ack
    assert bench.changes[-1].kind == "clear" and bench.changes[-1].alarm["acked_by"] == "ana"


# -- routes -------------------------------------------------------------------------------------------

@pytest.fixture
def api(bench, make_client):
    from starlette.applications import Starlette
    from starlette.routing import Route

    from edge.http import alarm_routes
    from edge.http.responses import EXCEPTION_HANDLERS
    from edge.store.database import Readers

    class Writer:  # Writer.call runs a function on the writer's connection
        async def call(self, fn):
            return await asyncio.to_thread(fn, bench.conn)

    published: list[AlarmChange] = []
    readers = Readers(bench.path)
    app = Starlette(routes=[
        Route("/api/alarms", alarm_routes.alarms),
        Route("/api/alarms/{alarm_id:int}", alarm_routes.alarm),
        Route("/api/alarms/{alarm_id:int}/ack", alarm_routes.ack, methods=["POST"]),
    ], exception_handlers=EXCEPTION_HANDLERS)
    app.state.appliance = SimpleNamespace(alarms=bench.engine, writer=Writer(), readers=readers,
                                          publish_alarms=published.extend,
                                          settings=SimpleNamespace(allowed_origins=None))
    with make_client(app=app) as client:
        yield client, published
    readers.close()


def test_routes_list_show_and_ack(api, bench):
    client, published = api
    bench.feed(readings([40, 40, 40]) + readings([70, 70, 70], "m2"))
    body = client.get("/api/alarms", params={"state": "active", "machine": "m2"}).json()
    assert [(a["machine"], a["severity"]) for a in body["alarms"]] == [("m2", "alarm")]
    assert client.get("/api/alarms/1").json()["alarm"]["machine"] == "m1"
    assert client.get("/api/alarms/9").status_code == 404
    assert client.get(f"/api/alarms/{2**64}").status_code == 404
    assert client.post(f"/api/alarms/{2**64}/ack", json={"by": "ana"}).status_code == 404
    for query in ({"state": "open"}, {"limit": "0"}, {"limit": "x"}, {"fault": "f"}):
        r = client.get("/api/alarms", params=query)
        assert r.status_code == 400 and r.json()["error"] == "bad_request", query

    r = client.post("/api/alarms/1/ack", json={"by": "ana", "note": "on it"})
    assert r.status_code == 200 and r.json()["alarm"]["ack_note"] == "on it"
    assert [(c.kind, c.alarm_id) for c in published] == [("ack", 1)]
    assert client.post("/api/alarms/1/ack", json={"by": "ana", "note": "on it"}).json()["replayed"]
    assert len(published) == 1
    assert client.post("/api/alarms/1/ack", json={"by": "bob"}).status_code == 409
    assert client.post("/api/alarms/7/ack", json={"by": "bob"}).status_code == 404
    bad = [b"{", b"[1]", b'{"by": ""}', b'{"by": "x", "urgent": true}', b'{"note": "x"}']
    for data in bad:
        r = client.post("/api/alarms/2/ack", content=data, headers={"Content-Type": "application/json"})
        assert r.status_code == 400 and r.json()["error"] in ("bad_request", "invalid_json"), data
    assert client.post("/api/alarms/2/ack", content=b"x" * 20000,
                       headers={"Content-Type": "application/json"}).status_code == 413


# -- webhooks -----------------------------------------------------------------------------------------

@dataclass
class Receiver:
    """A webhook receiver on loopback that fails its first `failures` requests with 500."""

    port: int
    failures: int = 0
    got: list[tuple[int, dict, bytes]] = field(default_factory=list)

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status = 500 if receiver.failures > 0 else 200
                receiver.failures -= 1
                receiver.got.append((status, dict(self.headers), body))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def wait_for(predicate, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def test_a_receiver_that_was_down_gets_every_notification_once_in_order_signed(tmp_path, caplog):
    port, dead_port = free_port(), free_port()
    secret = "s3cret-for-the-test"
    rules = parse_rules({"webhooks": [
        {"url": f"http://127.0.0.1:{port}/hooks/PATH-TOKEN", "secret": secret, "events": list(("raise", "escalate", "clear", "ack"))},
        {"url": f"http://127.0.0.1:{dead_port}/never", "name": "dead"},
    ]}, BASE)
    bench = Bench(tmp_path / "hooks.db", rules)
    live, dead = rules.webhooks
    bench.feed(readings([40, 40, 40, 70, 70, 70, 0, 0, 0]))
    bench.engine.ack(bench.conn, 1, "ana", None)
    notifier = Notifier(bench.path, rules.webhooks, poll_s=0.05, backoff_s=0.05, backoff_cap_s=0.2)
    receiver = Receiver(port, failures=2)
    caplog.set_level(logging.DEBUG, "edge")
    notifier.start()
    try:
        pending = lambda: bench.conn.execute(  # noqa: E731
            "SELECT count(*) FROM fdedge_alarm_outbox WHERE hook = ? AND delivered_at IS NULL", (live.key,)).fetchone()[0]
        assert wait_for(lambda: bench.conn.execute("SELECT max(attempts) FROM fdedge_alarm_outbox").fetchone()[0] >= 2)
        assert pending() == 4  # down: nothing delivered, nothing lost
        receiver.start()
        bench.feed(readings([40, 40, 40], start=20))  # new changes while it catches up
        notifier.wake()
        assert wait_for(lambda: pending() == 0), bench.conn.execute("SELECT * FROM fdedge_alarm_outbox").fetchall()
    finally:
        notifier.stop()
        receiver.stop()

    accepted = [(h, b) for status, h, b in receiver.got if status == 200]
    assert len(receiver.got) == len(accepted) + 2
    ids = [int(h["X-FDEdge-Delivery"]) for h, _ in accepted]
    stored = [r[0] for r in bench.conn.execute("SELECT id FROM fdedge_alarm_outbox WHERE hook = ? ORDER BY id", (live.key,))]
    assert ids == stored  # every one, once, in order
    bodies = [json.loads(b) for _, b in accepted]
    assert [b["event"] for b in bodies] == ["raise", "escalate", "clear", "ack", "raise"]
    assert [h["X-FDEdge-Event"] for h, _ in accepted] == [b["event"] for b in bodies]
    assert [b["alarm"]["id"] for b in bodies] == [1, 1, 1, 1, 2]
    for headers, body in accepted:
        assert hmac.compare_digest(headers["X-FDEdge-Signature"], signature(secret, body))
    # the dead receiver's rows wait, and never held up the live one
    assert bench.conn.execute("SELECT count(*), min(attempts) FROM fdedge_alarm_outbox WHERE hook = ? "
                              "AND delivered_at IS NULL", (dead.key,)).fetchone()[0] == 4
    assert "failed" in caplog.text and "delivered again" in caplog.text
    assert secret not in caplog.text and "PATH-TOKEN" not in caplog.text


# -- properties ---------------------------------------------------------------------------------------

def reference(values: list[float], rule: Rule) -> list[tuple[int, str, int | None, int | None]]:
    """The rules as a specification (consecutive counts, no durations): per alarm
    (raising index, severity at raise, escalating index, clearing index)."""
    out: list[list] = []
    rw = ra = rc = 0
    active: list | None = None
    for k, v in enumerate(values):
        rw, ra, rc = (rw + 1 if v >= rule.warning else 0), (ra + 1 if v >= rule.alarm else 0), (rc + 1 if v < rule.clear else 0)
        if active is None:
            if rw >= rule.consecutive:
                active = [k, "alarm" if ra >= rule.consecutive else "warning", None, None]
                out.append(active)
        elif active[1] == "warning" and active[2] is None and ra >= rule.consecutive:
            active[2] = k
        elif rc >= rule.clear_consecutive:
            active[3] = k
            active = None
    return [tuple(a) for a in out]


def _table(conn: sqlite3.Connection) -> list[tuple]:
    return conn.execute("SELECT * FROM fdedge_alarms ORDER BY id").fetchall()


@hsettings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_property_alarms_match_the_specification_however_groups_fail_or_restart(tmp_path_factory, data):
    warning = data.draw(st.integers(10, 60), "warning")
    rule = Rule(warning, warning + data.draw(st.integers(0, 30)), warning - data.draw(st.integers(1, 10)),
                data.draw(st.integers(1, 4)), data.draw(st.integers(1, 4)))
    rules = parse_rules({"defaults": {k: getattr(rule, k) for k in ("warning", "alarm", "clear", "consecutive",
                                                                   "clear_consecutive")}}, BASE)
    near = [rule.clear - 1, rule.clear, rule.warning - 0.5, rule.warning, rule.alarm - 0.5, rule.alarm, 0.0, 100.0]
    value = st.one_of(st.sampled_from(near), st.floats(0, 100))
    runs = st.lists(st.tuples(value, st.integers(1, 5)), max_size=12)  # runs of one value make episodes likely
    series = {(m, f): [v for v, n in data.draw(runs, f"{m}/{f}") for _ in range(n)][:40]
              for m in ("a", "b") for f in (2, 5)}
    batch = []  # one reading per machine per second, both faults in it
    for m in ("a", "b"):
        for k in range(max(len(series[(m, 2)]), len(series[(m, 5)]))):
            y = [0.0] * 8
            y[2] = series[(m, 2)][k] if k < len(series[(m, 2)]) else 0.0
            y[5] = series[(m, 5)][k] if k < len(series[(m, 5)]) else 0.0
            batch.append((stamp(k), m, y))
    batch.sort(key=lambda r: r[0])
    directory = tmp_path_factory.mktemp("prop")

    clean = Bench(directory / "clean.db", rules)  # one reading per group, nothing fails
    for row in batch:
        clean.feed([row])
    expected = _table(clean.conn)

    # Against the specification, per machine and fault
    for (m, f), values in series.items():
        padded = values + [0.0] * (max(len(series[(m, 2)]), len(series[(m, 5)])) - len(values))
        ids = [clean.reading_id(stamp(k), m) for k in range(len(padded))]
        got = [(a["raised_reading"], a["raised_severity"], a["escalated_reading"], a["cleared_reading"])
               for a in clean.alarms(machine=m, fault=FAULTS[f])]
        want = [(ids[r], s, None if e is None else ids[e], None if c is None else ids[c])
                for r, s, e, c in reference(padded, rule)]
        assert got == want, (m, f, padded)
    clean.conn.close()

    # Random groups, some rolled back and retried, one restart: the same table
    chaos = Bench(directory / "chaos.db", rules)
    restart_at = data.draw(st.integers(0, len(batch)), "restart")
    k = 0
    while k < len(batch):
        n = data.draw(st.integers(1, 8), "group")
        if k < restart_at <= k + n:
            n = max(restart_at - k, 1)
        if data.draw(st.booleans(), "fail"):
            chaos.feed(batch[k:k + n], commit=False)
        chaos.feed(batch[k:k + n])
        k += n
        if k == restart_at:
            chaos = chaos.restart()
    assert _table(chaos.conn) == expected
    assert chaos.engine.active_count == sum(1 for a in chaos.alarms() if a["state"] == "active")

    # Never two at once per machine and fault; each raise cleared at most once, after it
    for (m, f) in series:
        alarms = chaos.alarms(machine=m, fault=FAULTS[f])
        assert sum(a["state"] == "active" for a in alarms) <= 1
        for one, two in zip(alarms, alarms[1:]):
            assert one["cleared_reading"] is not None and one["raised_reading"] < one["cleared_reading"] < two["raised_reading"]
        for a in alarms:
            assert a["peak"] >= a["raised_value"]
            assert (a["severity"] == "alarm") == (a["raised_severity"] == "alarm" or a["escalated_at"] is not None)
    chaos.conn.close()


# -- through the app (runs once the integration diff is applied) ---------------------------------------

def _integrated() -> bool:
    from dataclasses import fields

    from edge.settings import Settings
    return "alarm_rules" in {f.name for f in fields(Settings)}


integration = pytest.mark.skipif(not _integrated(), reason="alarms are not wired into the app yet (integration diff)")


def drive(tmp_path: Path, linear_model, receiver_port: int, secret: str) -> tuple[Path, dict, dict, str]:
    """A rules file for the linear test model: reading `hi` puts one fault above warning (not alarm),
    reading `lo` puts it below clear; the other faults are disabled."""
    from edge.fdrest import FEATURES
    from tests.harness import linear_expected, reading

    params = linear_model[1]
    hi, lo = reading(1), reading(2)
    y = linear_expected(params, np.array([[hi[n] for n in FEATURES], [lo[n] for n in FEATURES]]))
    f = int(np.argmax(np.abs(y[0] - y[1])))
    if y[0, f] < y[1, f]:
        hi, lo = lo, hi
    top, bottom = max(y[:, f]), min(y[:, f])
    gap = top - bottom
    path = tmp_path / "rules.json"
    path.write_text(json.dumps({
        "defaults": {"enabled": False},
        "rules": [{"fault": FAULTS[f], "enabled": True, "warning": bottom + 0.6 * gap, "alarm": top + gap,
                   "clear": bottom + 0.3 * gap}],
        "webhooks": [{"url": f"http://127.0.0.1:{receiver_port}/hook", "secret": secret,
                      "events": ["raise", "escalate", "clear", "ack"]}],
    }))
    return path, hi, lo, FAULTS[f]


@integration
def test_alarms_through_the_app_survive_a_restart_and_reach_the_webhook(tmp_path, linear_model, make_client):
    import csv
    import io

    secret = "integration-secret"
    receiver = Receiver(free_port()).start()
    rules, hi, lo, fault = drive(tmp_path, linear_model, receiver.port, secret)
    try:
        with make_client(alarm_rules=rules) as client:
            hub = client.app.state.appliance.hub
            hub.subscribe("objects")  # as a connected /events client: the writer publishes only then
            cursor = hub.next_seq
            r = client.post("/send", json=[dict(hi, machine="m1", Time=stamp(k)) for k in range(3)])
            assert r.status_code == 200, r.text
            (alarm,) = client.get("/api/alarms", params={"state": "active"}).json()["alarms"]
            assert (alarm["machine"], alarm["fault"], alarm["severity"], alarm["raised_reading"]) == ("m1", fault, "warning", 3)
            events = [e for batch in hub.since(cursor) for e in batch.events]
            hub.unsubscribe("objects")
            assert [e.kind for e in events] == ["reading"] * 3 + ["alarm"]
            assert [set(e.wires) for e in events] == [{"objects"}] * 3 + [{"objects", "arrays"}]
            data = next(line for line in events[-1].wires["arrays"].decode().splitlines() if line.startswith("data: "))
            assert json.loads(data[6:])["event"] == "raise" and events[-1].machine == "m1"
            metrics = client.get("/metrics").text
            assert "fdedge_alarms_active 1.0" in metrics
            assert 'fdedge_alarm_events_total{event="raise",severity="warning"} 1.0' in metrics
            assert client.post("/api/alarms/1/ack", json={"by": "ana"}).json()["alarm"]["acked_by"] == "ana"
            report = client.get("/generate_csv", params={"start": "2024-03-01", "end": "2024-03-01"})
            rows = list(csv.DictReader(io.StringIO(report.text)))
            assert [row["alarms"] for row in rows] == ["", "", f"{fault}:warning"]
        with make_client(alarm_rules=rules) as client:  # a restart keeps the alarm, then clears it
            assert [a["id"] for a in client.get("/api/alarms?state=active").json()["alarms"]] == [1]
            client.post("/send", json=[dict(lo, machine="m1", Time=stamp(3 + k)) for k in range(3)])
            assert client.get("/api/alarms?state=active").json()["alarms"] == []
            assert client.get("/api/alarms/1").json()["alarm"]["cleared_reading"] == 6
            assert wait_for(lambda: len(receiver.got) >= 3, timeout=10)
    finally:
        receiver.stop()
    bodies = [json.loads(body) for _, _, body in receiver.got]
    assert [b["event"] for b in bodies] == ["raise", "ack", "clear"]
    assert all(h["X-FDEdge-Signature"] == signature(secret, body) for _, h, body in receiver.got)


@integration
def test_a_raise_notification_says_what_drove_it_as_the_explain_route_does(tmp_path, linear_model, make_client):
    """The operator paged by a webhook sees why without opening the dashboard; the explanation is
    GET /api/explain's for the raising reading and the alarm's fault, computed once, at the raise."""
    receiver = Receiver(free_port()).start()
    rules, hi, lo, fault = drive(tmp_path, linear_model, receiver.port, "s")
    try:
        with make_client(alarm_rules=rules) as client:
            hub = client.app.state.appliance.hub
            hub.subscribe("objects")
            cursor = hub.next_seq
            assert client.post("/send", json=[dict(hi, machine="m1", Time=stamp(k)) for k in range(3)]).status_code == 200
            events = [e for batch in hub.since(cursor) for e in batch.events if e.kind == "alarm"]
            hub.unsubscribe("objects")
            client.post("/send", json=[dict(lo, machine="m1", Time=stamp(3 + k)) for k in range(3)])
            assert wait_for(lambda: len(receiver.got) >= 2, timeout=10)
            (alarm,) = client.get("/api/alarms").json()["alarms"]
            why = client.get("/api/explain", params={"id": alarm["raised_reading"], "fault": fault}).json()
    finally:
        receiver.stop()
    raised, cleared = (json.loads(body) for _, _, body in receiver.got)
    assert raised["event"] == "raise" and cleared["event"] == "clear"
    assert raised["explanation"] == {k: why[k] for k in ("fault", "value", "features", "baseline", "text")}
    assert raised["explanation"]["features"], "a raise names the features behind it"
    assert "explanation" not in cleared  # a clear has nothing to explain
    data = next(line for line in events[0].wires["objects"].decode().splitlines() if line.startswith("data: "))
    assert json.loads(data[6:])["explanation"] == raised["explanation"]  # the live event carries it too


@integration
def test_ack_needs_the_ingest_token(make_client):
    with make_client(token="ingest-token", read_token="read-token") as client:
        assert client.post("/api/alarms/1/ack", json={"by": "x"}).status_code == 401
        read = {"Authorization": "Bearer read-token"}
        refused = client.post("/api/alarms/1/ack", json={"by": "x"}, headers=read)
        assert refused.status_code == 403 and refused.json()["reason"] == "role"  # known token, no right to ack
        assert client.get("/api/alarms").status_code == 401
        assert client.get("/api/alarms", headers=read).json() == {"alarms": []}
        ingest = {"Authorization": "Bearer ingest-token"}
        assert client.post("/api/alarms/1/ack", json={"by": "x"}, headers=ingest).status_code == 404


@integration
@pytest.mark.slow
def test_alarm_events_on_the_wire_carry_no_id(tmp_path, linear_model, server_factory):
    import http.client

    receiver_port = free_port()  # nobody listens: deliveries wait in the outbox
    rules, hi, _, fault = drive(tmp_path, linear_model, receiver_port, "s")
    server = server_factory(linear_model[0], args=["--alarm-rules", str(rules)]).start()
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("GET", "/events", headers={"Accept": "text/event-stream"})
    stream = conn.getresponse()
    deadline = time.monotonic() + 20  # pings keep the socket alive: bound the test by the clock

    def line() -> str:
        assert time.monotonic() < deadline, "no alarm event within 20 s"
        return stream.readline().decode().rstrip("\r\n")

    while line() != "":  # the hello event
        pass
    post = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    post.request("POST", "/send", body=json.dumps([dict(hi, Time=stamp(k)) for k in range(3)]),
                 headers={"Content-Type": "application/json"})
    assert post.getresponse().status == 200
    events, current = [], []
    while len(events) < 4:
        text = line()
        if text.startswith(":"):  # a ping comment
            continue
        if text:
            current.append(text)
        elif current:
            events.append(current)
            current = []
    conn.close()
    fields = [dict(text.split(": ", 1) for text in event) for event in events]
    assert [f["event"] for f in fields] == ["reading"] * 3 + ["alarm"]
    assert [f.get("id") for f in fields] == ["1", "2", "3", None]  # the alarm leaves the resume point alone
    data = json.loads(fields[3]["data"])
    assert data["event"] == "raise" and data["alarm"]["fault"] == fault and data["reading_id"] == 3
