"""The quality verdict against the bundled model's training statistics, on simulated machines.

Calibration: at least 99 % of every profile's healthy and faulty readings are `ok`; a stuck sensor,
a value far outside training, a jump, a unit error and a non-physical value are flagged.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge.fdrest import FEATURES
from edge.scoring.model import load
from edge.scoring.quality import (
    INVALID,
    OK,
    STUCK_READINGS,
    SUSPECT,
    UNKNOWN,
    Quality,
    as_json,
    from_json,
    header,
    parse_reasons,
    reasons_text,
)
from edge.scoring.training_stats import TrainingStats
from simulator.machine import VirtualMachine
from simulator.scenarios import Scenario

MODEL_DIR = Path(__file__).resolve().parents[2] / "models" / "default"
PROFILES = ("default", "motor-1500", "pump-3000", "compressor-3600")


def scenarios() -> list[Scenario]:
    return [Scenario.healthy(), Scenario.multi(), *(Scenario.developing(f, minutes=10) for f in range(8)),
            Scenario.random(1)]


@pytest.fixture(scope="module")
def stats() -> TrainingStats:
    found = load(MODEL_DIR).training_stats
    assert found is not None
    return found


def stream(profile: str, scenario: Scenario | str = "healthy", n: int = 300, seed: int = 7) -> np.ndarray:
    machine = VirtualMachine(seed, profile, scenario=scenario)
    return np.array([[r.features[f] for f in FEATURES] for r in machine.run(n, 2.0)])


def one_by_one(quality: Quality, rows: np.ndarray, machine: str = "m") -> list[tuple[int, list | None]]:
    out = []
    for row in rows:
        v = quality.evaluate(row[None, :], [machine])
        out.append((v.status[0], v.reasons[0]))
    return out


def test_at_least_99_percent_of_healthy_and_faulty_readings_are_ok(stats):
    """Every profile, every scenario (healthy, multi, each developing fault, random): 300 readings
    2 s apart each, one reading per group as a sensor at 0.5 Hz posts them."""
    quality = Quality(stats)
    total = ok = 0
    worst: dict[str, float] = {}
    for profile in PROFILES:
        for scenario in scenarios():
            rows = stream(profile, scenario)
            verdicts = one_by_one(quality, rows, f"{profile}/{scenario.name}/{len(worst)}")
            share = sum(status == OK for status, _ in verdicts) / len(verdicts)
            worst[f"{profile} {scenario.name} {len(worst)}"] = share
            total += len(verdicts)
            ok += sum(status == OK for status, _ in verdicts)
    assert total == len(PROFILES) * 11 * 300
    assert ok / total >= 0.99, (ok / total, sorted(worst.items(), key=lambda kv: kv[1])[:5])
    assert min(worst.values()) >= 0.95, sorted(worst.items(), key=lambda kv: kv[1])[:5]


def test_a_batch_gives_the_same_verdicts_as_one_reading_at_a_time(stats):
    """The vectorised group (several machines interleaved) and the single-reading path agree,
    stuck runs carried across groups included."""
    a, b = stream("default", n=120, seed=1), stream("pump-3000", "developing", n=120, seed=2)
    a[30:70, FEATURES.index("Temperature")] = a[30, FEATURES.index("Temperature")]  # stuck for 40
    b[50, FEATURES.index("PEAK_Axial")] += 10 * stats.std[FEATURES.index("PEAK_Axial")]
    single = Quality(stats)
    expected = []
    for i in range(120):
        expected.append(one_by_one(single, a[i:i + 1], "a")[0])
        expected.append(one_by_one(single, b[i:i + 1], "b")[0])
    batched = Quality(stats)
    got = []
    rows = np.empty((240, 35))
    rows[0::2], rows[1::2] = a, b
    names = ["a", "b"] * 120
    for start in range(0, 240, 37):  # groups that cut through runs
        v = batched.evaluate(rows[start:start + 37], names[start:start + 37])
        got.extend(zip(v.status, v.reasons, strict=True))
    assert got == expected
    assert sum(status == SUSPECT for status, _ in got) >= 40 - STUCK_READINGS + 1


def test_groups_of_one_and_of_many_mixed_carry_the_runs_between_them(stats):
    """Single readings and batches of the same machines alternate (a sensor posting one reading,
    then a backlog): the runs each path leaves are the other's starting point."""
    a, b = stream("default", n=150, seed=3), stream("pump-3000", n=150, seed=4)
    t, v = FEATURES.index("Temperature"), FEATURES.index("VIBRATION_VEL_Axial")
    a[10:60, t] = a[10, t]  # stuck across several groups of both kinds
    a[80:83] = a[80]  # the whole reading repeated a little, then moving again
    a[100:140] = a[100]  # a frozen sensor: flagged from its 20th reading, explained alike in a batch
    b[20:120, v] = b[20, v]
    rows = np.empty((300, 35))
    rows[0::2], rows[1::2] = a, b
    names = ["a", "b"] * 150
    single = Quality(stats)
    expected = [one_by_one(single, rows[i:i + 1], names[i])[0] for i in range(300)]
    mixed = Quality(stats)
    got: list[tuple[int, list | None]] = []
    sizes = [1, 1, 7, 1, 23, 1, 1, 2, 40, 1, 1, 1, 5]
    start, k = 0, 0
    while start < 300:
        size = sizes[k % len(sizes)]
        group = mixed.evaluate(rows[start:start + size], names[start:start + size])
        got.extend(zip(group.status, group.reasons, strict=True))
        start, k = start + size, k + 1
    assert got == expected
    assert sum(status == SUSPECT for status, _ in got) >= (50 - STUCK_READINGS) + (100 - STUCK_READINGS) + 20
    # a run a batch leaves unfinished, ended by a single reading that changes every value: two
    # shorter runs of the same feature after it are not one long one
    c = stream("motor-1500", n=60, seed=5)
    c[0:15, t] = c[0, t]
    c[16:30, t] = c[16, t]
    c[15] = c[14] + 0.01 * stats.std  # every value moves
    fresh = Quality(stats)
    fresh.evaluate(c[0:15], ["c"] * 15)
    assert [one_by_one(fresh, c[i:i + 1], "c")[0][0] for i in range(15, 30)] == [OK] * 15


def test_a_stuck_sensor_is_flagged_after_n_identical_readings(stats):
    rows = stream("motor-1500", n=60)
    j = FEATURES.index("VIBRATION_VEL_Horizontal")
    rows[10:, j] = rows[10, j]
    verdicts = one_by_one(Quality(stats), rows)
    first = next(i for i, (status, _) in enumerate(verdicts) if status != OK)
    assert first == 10 + STUCK_READINGS - 1  # the N-th identical value
    status, reasons = verdicts[first]
    assert status == SUSPECT and reasons == [("VIBRATION_VEL_Horizontal", "stuck")]
    assert all(v == (SUSPECT, [("VIBRATION_VEL_Horizontal", "stuck")]) for v in verdicts[first:])
    rows2 = rows.copy()
    rows2[40, j] += 0.01  # the value moves again: ok from there
    again = one_by_one(Quality(stats), rows2)
    assert again[40][0] == OK and again[41][0] == OK


def test_a_value_at_50_sigma_is_out_of_range_and_an_outlier(stats):
    rows = stream("default", n=5)
    j = FEATURES.index("KURTOSIS_Horizontal")
    rows[4, j] = stats.mean[j] + 50 * stats.std[j]
    q = Quality(stats)
    verdicts = q.evaluate(rows, ["m"] * 5)
    assert verdicts.status[:4] == [OK] * 4
    assert verdicts.status[4] == SUSPECT
    assert ("KURTOSIS_Horizontal", "out_of_range") in verdicts.reasons[4]
    assert verdicts.score[4] > 1.0 > max(verdicts.score[:4])


def test_a_multivariate_outlier_names_the_feature_that_drives_it(stats):
    """Each value inside its own training range, the combination far from training: a healthy
    motor's readings with the overall horizontal acceleration of a severe fault (its 99 % quantile)
    but none of the band powers and velocities that come with it."""
    q = Quality(stats)
    row = stream("motor-1500", n=1)[0]
    j = FEATURES.index("VIBRATION_ACC_Horizontal")
    row[j] = stats.quantile(0.99)[j]
    verdicts = q.evaluate(row[None, :], ["m"])
    assert verdicts.status == [SUSPECT] and verdicts.score[0] > 1.0
    assert verdicts.reasons == [[("VIBRATION_ACC_Horizontal", "outlier")]]


def test_a_physically_implausible_jump_is_flagged(stats):
    """A housing 28 degC warmer 2 s later (3.5 training σ), though still inside the training range."""
    rows = stream("motor-1500", n=10)
    j = FEATURES.index("Temperature")
    rows[6:, j] += 3.5 * stats.std[j]
    assert rows[6:, j].max() < stats.quantile(0.999)[j]
    verdicts = one_by_one(Quality(stats), rows)
    assert verdicts[:6] == [(OK, None)] * 6
    assert verdicts[6] == (SUSPECT, [("Temperature", "jump")])
    assert verdicts[7][0] == OK  # the new level holds: the next step is ordinary


def test_a_unit_error_fahrenheit_posted_as_celsius_is_out_of_range(stats):
    rows = stream("default", n=3)
    j = FEATURES.index("Temperature")
    rows[2, j] = rows[2, j] * 9 / 5 + 32  # ~40 degC posted as ~104
    verdicts = one_by_one(Quality(stats), rows)
    assert verdicts[2][0] == SUSPECT
    assert ("Temperature", "out_of_range") in (verdicts[2][1] or [])


def test_a_non_physical_value_is_invalid(stats):
    rows = stream("default", n=2)
    rows[1, FEATURES.index("VIBRATION_ACC_Axial")] = -0.2
    rows[1, FEATURES.index("KURTOSIS_Vertical")] = 0.5
    verdicts = Quality(stats).evaluate(rows, ["m", "m"])
    assert verdicts.status == [OK, INVALID]
    reasons = verdicts.reasons[1] or []
    assert ("KURTOSIS_Vertical", "invalid") in reasons and ("VIBRATION_ACC_Axial", "invalid") in reasons


def test_without_training_statistics_every_reading_is_unknown():
    q = Quality(None)
    verdicts = q.evaluate(stream("default", n=3), ["m"] * 3)
    assert verdicts.status == [UNKNOWN] * 3 and verdicts.score == [None] * 3
    assert verdicts.columns() == ([None] * 3, [None] * 3, [None] * 3)
    assert verdicts.header() == "unknown"


def test_machines_are_tracked_apart(stats):
    """A value repeated across two machines is no repeat of either."""
    rows = stream("default", n=1)
    q = Quality(stats)
    for k in range(3 * STUCK_READINGS):
        assert q.evaluate(rows, [f"m{k}"]).status == [OK]


def test_the_stored_and_header_forms(stats):
    text = reasons_text([("Rotation Speed", "jump"), ("1.8-2 kHz", "stuck")])
    assert text == "Rotation Speed:jump,1.8-2 kHz:stuck"
    assert parse_reasons(text) == [{"feature": "Rotation Speed", "kind": "jump"},
                                   {"feature": "1.8-2 kHz", "kind": "stuck"}]
    assert parse_reasons(None) == []
    assert header(OK, 0.41, None) == "ok"
    assert header(SUSPECT, 1.8349, text) == "suspect; score=1.83; reasons=" + text
    rows = stream("default", n=3)
    rows[2, 0] = 1e6
    verdicts = Quality(stats).evaluate(rows, ["m"] * 3)
    status, score, reasons = verdicts.columns()
    assert status == [OK, OK, SUSPECT] and reasons[:2] == [None, None]
    assert reasons[2] is not None and "Rotation Speed:out_of_range" in reasons[2]
    assert verdicts.header(0, 2) == "ok"
    assert verdicts.header().startswith("suspect; score=")


def test_a_frozen_sensor_repeating_the_whole_reading_keeps_its_verdict_until_it_moves(stats):
    """Every value repeated (a sensor or gateway that froze): suspect from the N-th reading on,
    the same verdict as the batch path gives, and ok again once the readings move."""
    rows = np.repeat(stream("compressor-3600", n=1), 3 * STUCK_READINGS, axis=0)
    rows = np.vstack((rows, stream("compressor-3600", n=5, seed=9)))
    single = one_by_one(Quality(stats), rows)
    batch = Quality(stats).evaluate(rows, ["m"] * len(rows))
    assert single == list(zip(batch.status, batch.reasons, strict=True))
    assert [s for s, _ in single[:STUCK_READINGS - 1]] == [OK] * (STUCK_READINGS - 1)
    frozen = single[STUCK_READINGS - 1]
    assert frozen[0] == SUSPECT and frozen[1] is not None and all(kind == "stuck" for _, kind in frozen[1])
    assert single[STUCK_READINGS - 1:3 * STUCK_READINGS] == [frozen] * (2 * STUCK_READINGS + 1)
    assert single[-1][0] == OK  # the sensor is alive again


def test_the_api_object_converts_back_to_the_stored_form():
    for stored in [(None, None, None), (0, 0.41, None), (1, 1.83, "Temperature:stuck,1.8-2 kHz:jump"),
                   (2, 3.0, "Level:invalid")]:
        assert from_json(as_json(*stored)) == stored
