"""Alarms respect data quality: a suspect reading neither raises nor clears a fault alarm (by
default; a rule may count it), and a data-quality alarm of its own kind names the feature and the
reason, cleared once quality is back to ok. Driven the way the writer drives the engine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from edge.alarms.engine import AlarmChange, AlarmEngine
from edge.alarms.rules import load_rules, parse_rules
from edge.alarms.tables import list_alarms
from edge.errors import StartupError
from edge.fdrest import iso
from edge.store.machine_state import record
from edge.store.schema import insert_rows, open_database
from tests.alarms.test_alarms import BASE, stamp

OK = None  # a reading whose verdict is ok (or unknown): no entry in the engine's `suspect` map
STUCK = ("Temperature:stuck", 0.4)
FAR = ("KURTOSIS_Horizontal:out_of_range,PEAK_Axial:jump", 3.2)


class QualityBench:
    """The writer's transaction in miniature, with each reading's quality verdict."""

    def __init__(self, path: Path, rules: Any = None) -> None:
        self.path, self.rules = path, rules or load_rules(None, 30, 60)
        self.conn = open_database(path, sync="normal")
        self.engine = AlarmEngine(self.rules)
        self.engine.setup(self.conn)
        self.changes: list[AlarmChange] = []
        self.t = 0

    def feed(self, readings: list[tuple[float, tuple[str, float] | None]], machine: str = "m1",
             commit: bool = True) -> list[AlarmChange]:
        """Readings of fault2 with their verdicts, one second apart."""
        times = [stamp(self.t + k) for k in range(len(readings))]
        self.t += len(readings)
        ys = [[0.0, 0.0, float(v), 0.0, 0.0, 0.0, 0.0, 0.0] for v, _ in readings]
        self.conn.execute("BEGIN IMMEDIATE")
        last = insert_rows(self.conn, times, [[0.0] * 35 for _ in times], ys, [machine] * len(times))
        first = last - len(times) + 1
        suspect = {first + k: q for k, (_, q) in enumerate(readings) if q is not None}
        changes = self.engine.evaluate(self.conn, [(first + k, t, machine, ys[k]) for k, t in enumerate(times)],
                                       suspect)
        record(self.conn, first, times, [machine] * len(times), [max(y) for y in ys])
        if commit:
            self.conn.execute("COMMIT")
            self.engine.commit()
            self.changes += changes
        else:
            self.conn.execute("ROLLBACK")
            self.engine.rollback()
        return changes

    def restart(self) -> QualityBench:
        self.conn.close()
        again = QualityBench(self.path, self.rules)
        again.t = self.t
        return again

    def kinds(self, changes: list[AlarmChange] | None = None) -> list[tuple[str, str]]:
        return [(c.kind, c.alarm["kind"]) for c in (self.changes if changes is None else changes) if c.kind != "peak"]

    def alarms(self, **filters: Any) -> list[dict]:
        return list(reversed(list_alarms(self.conn, limit=1000, **filters)))


@pytest.fixture
def bench(tmp_path):
    b = QualityBench(tmp_path / "alarms.db")
    yield b
    b.conn.close()


def test_suspect_readings_raise_no_fault_alarm_but_a_quality_alarm_naming_feature_and_reason(bench):
    bench.feed([(80.0, STUCK)] * 5)
    assert bench.kinds() == [("raise", "quality")]
    (alarm,) = bench.alarms()
    assert alarm["kind"] == "quality" and alarm["fault"] == "quality" and alarm["state"] == "active"
    assert alarm["feature"] == "Temperature" and alarm["reason"] == "stuck"
    assert alarm["reasons"] == [{"feature": "Temperature", "kind": "stuck"}]
    assert alarm["raised_reading"] == 3 and alarm["raised_value"] == pytest.approx(0.4)  # the score
    assert bench.engine.active_count == 1
    # quality back: the fault alarm the readings say (80 >= alarm) is raised from ok readings only,
    # and the quality alarm clears after its clear_consecutive ok readings
    bench.feed([(80.0, OK)] * 3)
    assert bench.kinds() == [("raise", "quality"), ("raise", "fault"), ("clear", "quality")]
    fault = bench.alarms(kind="fault")[0]
    assert fault["raised_reading"] == 8 and fault["since"] == iso(stamp(5))
    quality = bench.alarms(kind="quality")[0]
    assert quality["state"] == "cleared" and quality["cleared_reading"] == 8


def test_a_suspect_reading_does_not_clear_an_active_fault_alarm(bench):
    bench.feed([(80.0, OK)] * 3)
    assert bench.kinds() == [("raise", "fault")]
    bench.feed([(0.0, FAR)] * 6)  # the model says healthy, the data say do not trust it
    assert bench.kinds() == [("raise", "fault"), ("raise", "quality")]
    assert bench.alarms(kind="fault")[0]["state"] == "active"
    assert bench.alarms(kind="quality")[0]["feature"] == "KURTOSIS_Horizontal"
    bench.feed([(0.0, OK)] * 3)
    assert bench.kinds()[2:] == [("clear", "fault"), ("clear", "quality")]


def test_a_suspect_reading_neither_extends_nor_breaks_a_run(bench):
    bench.feed([(80.0, OK), (80.0, OK), (0.0, FAR), (80.0, OK)])
    (raised,) = [c for c in bench.changes if c.kind == "raise"]
    assert raised.alarm["kind"] == "fault" and raised.reading_id == 4  # the third ok reading in a row
    assert not bench.alarms(kind="quality")  # one suspect reading is no quality alarm (consecutive 3)


def test_a_rule_may_count_suspect_readings(tmp_path):
    rules = parse_rules({"rules": [{"fault": "fault2", "suspect": "count"}]}, BASE)
    assert rules.rule("m1", "fault2").suspect == "count" and rules.rule("m1", "fault3").suspect == "hold"
    b = QualityBench(tmp_path / "a.db", rules)
    b.feed([(80.0, STUCK)] * 3)
    assert b.kinds() == [("raise", "fault"), ("raise", "quality")]


def test_the_quality_alarm_can_be_turned_off_and_tuned(tmp_path):
    off = QualityBench(tmp_path / "off.db", parse_rules({"quality": {"alarm": False}}, BASE))
    off.feed([(0.0, STUCK)] * 10)
    assert off.kinds() == []
    quick = QualityBench(tmp_path / "quick.db", parse_rules({"quality": {"consecutive": 1, "clear_consecutive": 2}},
                                                            BASE))
    quick.feed([(0.0, FAR), (0.0, OK), (0.0, FAR), (0.0, OK), (0.0, OK)])
    assert quick.kinds() == [("raise", "quality"), ("clear", "quality")]
    assert [a["raised_reading"] for a in quick.alarms()] == [1]


@pytest.mark.parametrize(("doc", "field"), [
    ({"quality": {"alarm": "yes"}}, "alarm"),
    ({"quality": {"consecutive": 0}}, "consecutive"),
    ({"quality": {"when": 1}}, "when"),
    ({"quality": []}, None),
    ({"defaults": {"suspect": "skip"}}, "suspect"),
])
def test_quality_rule_errors_name_the_field(doc, field):
    with pytest.raises(StartupError) as caught:
        parse_rules(doc, BASE)
    if field:
        assert f"field '{field}'" in str(caught.value)


def test_a_quality_alarm_survives_a_restart_and_a_rolled_back_group_leaves_none(bench):
    bench.feed([(0.0, STUCK)] * 3, commit=False)
    assert bench.alarms() == [] and bench.engine.active_count == 0
    bench.feed([(0.0, STUCK)] * 4)
    assert bench.kinds() == [("raise", "quality")]
    again = bench.restart()
    again.feed([(0.0, STUCK)] * 2)
    assert again.kinds() == []  # still the same episode: nothing raised twice
    again.feed([(0.0, OK)] * 3)
    assert again.kinds() == [("clear", "quality")]
    assert again.engine.active_count == 0
    again.conn.close()
