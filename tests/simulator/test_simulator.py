"""The virtual machine: FD-REST's vocabulary, the catalogue's signatures, data.csv's look."""

from __future__ import annotations

import csv
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.fdrest import FAULTS, FEATURES, TIME_FORMAT
from simulator import Scenario, Trend, VirtualMachine, fixed_conditions, quantize, simulate
from simulator.dataset import HEADER, generate, main, read_csv, sample_faults, write_csv

DATA_CSV = Path("/work/shared/fdrest/data.csv")
COL = {name: i for i, name in enumerate(FEATURES)}
US = FEATURES[15:25]  # ultrasonic 8 kHz bands, dB
BANDS = FEATURES[25:35]  # 200 Hz vibration bands, g
AXES = ("Axial", "Vertical", "Horizontal")
KURT = [f"KURTOSIS_{a}" for a in AXES]
PEAK = [f"PEAK_{a}" for a in AXES]
ACC = [f"VIBRATION_ACC_{a}" for a in AXES]
VEL = [f"VIBRATION_VEL_{a}" for a in AXES]
VIBRATION = [*KURT, *PEAK, *ACC, *VEL, *BANDS]


def fdrest_sample() -> tuple[list[str], np.ndarray, np.ndarray]:
    if not DATA_CSV.exists():
        pytest.skip("FD-REST's data.csv is not available")
    return read_csv(DATA_CSV)


def fdrest_header() -> list[str]:
    if not DATA_CSV.exists():
        pytest.skip("FD-REST's data.csv is not available")
    with DATA_CSV.open(newline="") as fh:
        return next(csv.reader(fh))


# --- vocabulary -----------------------------------------------------------------------

def test_names_and_order_are_fdrest_s() -> None:
    assert simulate(np.zeros((3, 8)), 0).shape == (3, 35)
    reading = VirtualMachine(0).step()
    assert list(reading.features) == list(FEATURES)
    assert list(reading.faults) == list(FAULTS)
    assert list(reading.to_fdrest_json()) == ["Time", *FEATURES]
    assert list(reading.to_fdrest_json(machine=True)) == ["Time", *FEATURES, "machine"]
    json.dumps(reading.to_fdrest_json(machine=True))
    assert list(HEADER) == fdrest_header()


def test_reading_time_is_utc_and_formatted_like_fdrest() -> None:
    start = datetime(2023, 11, 6, 15, 0, tzinfo=UTC)
    vm = VirtualMachine(0, start=start)
    first, second = vm.step(1.0), vm.step(59.0)
    assert first.time.tzinfo is not None and first.time.utcoffset() == timedelta(0)
    assert second.time - first.time == timedelta(seconds=59)
    assert second.to_fdrest_json()["Time"] == "2023-11-06 15:01:00"
    naive = VirtualMachine(0, start=start.replace(tzinfo=None)).step(0)
    assert naive.time == start  # naive means UTC


def test_quantize_keeps_fdrest_values_unchanged() -> None:
    _, x, _ = fdrest_sample()
    np.testing.assert_array_equal(quantize(x), x)


# --- reproducibility ------------------------------------------------------------------

def test_seeded_and_reproducible() -> None:
    x1, y1 = generate(300, seed=7)
    x2, y2 = generate(300, seed=7)
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(y1, y2)
    assert not np.array_equal(generate(300, seed=8)[0], x1)

    start = datetime(2024, 1, 1, tzinfo=UTC)
    scenario = Scenario.developing(fault=2, minutes=1)
    run = lambda seed, machine="default": [  # noqa: E731
        (r.features, r.faults) for r in VirtualMachine(seed, machine, scenario=scenario, start=start).run(50)]
    assert run(3) == run(3)
    assert run(3) != run(4)
    assert run(3, "pump-7") != run(3, "pump-8")


# --- signatures -----------------------------------------------------------------------

def effect(fault: int, rpm: float, level: float = 80.0, n: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Healthy and faulty features at equal conditions and equal noise."""
    cond = fixed_conditions(n, rpm=rpm)
    faults = np.zeros((n, 8))
    faults[:, fault] = level
    return (simulate(np.zeros((n, 8)), 5, cond).mean(axis=0), simulate(faults, 5, cond).mean(axis=0))


def ratio(h: np.ndarray, f: np.ndarray, names: list[str] | tuple[str, ...]) -> np.ndarray:
    return np.array([f[COL[k]] / h[COL[k]] for k in names])


def delta(h: np.ndarray, f: np.ndarray, names: list[str] | tuple[str, ...]) -> np.ndarray:
    return np.array([f[COL[k]] - h[COL[k]] for k in names])


def unchanged(h: np.ndarray, f: np.ndarray, names: list[str] | tuple[str, ...], tol: float = 0.05) -> bool:
    return bool(np.all(np.abs(ratio(h, f, names) - 1.0) <= tol))


SPEEDS = pytest.mark.parametrize("rpm", [1490.0, 2980.0, 3770.0])


@SPEEDS
def test_fault0_lubrication_raises_the_ultrasonic_carpet(rpm: float) -> None:
    h, f = effect(0, rpm)
    d = delta(h, f, US)
    assert d.min() >= 2.0 and d[-1] > d[1] > d[0]  # all bands, high ones most
    assert delta(h, f, ["Level"])[0] >= 10.0
    assert delta(h, f, ["Temperature"])[0] >= 5.0  # friction heat
    assert unchanged(h, f, VIBRATION)


@SPEEDS
def test_fault1_early_damage_shows_ultrasonic_impulses(rpm: float) -> None:
    h, f = effect(1, rpm)
    d = delta(h, f, US)
    assert d[3:6].min() >= 10.0 and d[4] > d[0] + 10 and d[4] > d[-1] + 10  # 24-48 kHz bump
    assert 0.03 < delta(h, f, KURT).mean() < 1.0  # slight kurtosis
    assert unchanged(h, f, [*ACC, *VEL, *BANDS])


@SPEEDS
def test_fault2_late_damage_is_wideband(rpm: float) -> None:
    h, f = effect(2, rpm)
    assert delta(h, f, KURT).min() >= 1.0
    assert ratio(h, f, PEAK).min() >= 1.5 and ratio(h, f, ACC).min() >= 1.5
    assert ratio(h, f, BANDS[1:]).min() >= 1.5  # every band above 200 Hz
    d = delta(h, f, US)
    assert d[1:3].min() >= 8.0 and d[1] > d[-1] + 5  # ultrasonic up, low bands most
    assert delta(h, f, ["Level"])[0] >= 5.0


@SPEEDS
def test_fault3_vibration_impulses_mid_and_high_bands(rpm: float) -> None:
    h, f = effect(3, rpm)
    assert delta(h, f, KURT).min() >= 1.0
    assert ratio(h, f, PEAK).min() >= 1.5 and ratio(h, f, ACC).min() >= 1.5
    assert ratio(h, f, BANDS[3:]).min() >= 2.0  # 600 Hz - 2 kHz
    assert unchanged(h, f, [*VEL, BANDS[0]])
    assert np.abs(delta(h, f, [*US, "Level"])).max() < 0.01


@SPEEDS
def test_fault4_energy_in_one_high_frequency_band(rpm: float) -> None:
    h, f = effect(4, rpm)
    r = ratio(h, f, BANDS)
    assert r[7] >= 3.0 and int(np.argmax(r)) == 7  # 1.4-1.6 kHz
    assert ratio(h, f, ACC).min() >= 1.3
    assert delta(h, f, KURT).max() <= 0.0  # a tone is not impulsive
    assert unchanged(h, f, [*VEL, *BANDS[:5]])
    assert np.abs(delta(h, f, [*US, "Level"])).max() < 0.01


@SPEEDS
def test_fault5_harmonics_reach_200_400_hz(rpm: float) -> None:
    h, f = effect(5, rpm)
    assert ratio(h, f, BANDS[:1]).min() >= 1.5 and ratio(h, f, BANDS[1:2]).min() >= 2.0
    v = ratio(h, f, VEL)
    assert v[1:].min() >= 1.8 and v[2] > v[0]  # radial first
    assert unchanged(h, f, BANDS[5:])
    assert np.abs(delta(h, f, [*US, "Level"])).max() < 0.01


@SPEEDS
def test_fault6_is_1x_only(rpm: float) -> None:
    h, f = effect(6, rpm)
    assert ratio(h, f, BANDS[:1]).min() >= 1.5
    v = ratio(h, f, VEL)
    assert v[1:].min() >= 2.0 and v[2] > v[1] > v[0]  # radial, horizontal softest
    assert unchanged(h, f, [*BANDS[1:], *KURT])  # no harmonics: what sets it apart from fault5
    assert np.abs(delta(h, f, [*US, "Level"])).max() < 0.01


@SPEEDS
def test_fault7_low_frequency_radial_velocity(rpm: float) -> None:
    h, f = effect(7, rpm)
    v = ratio(h, f, VEL)
    assert v[1] >= 1.8 and v[1] > v[2] > v[0]  # vertical rocking (soft foot, weak base)
    assert ratio(h, f, BANDS[:1])[0] < v[1]  # low frequency: velocity, little acceleration
    assert delta(h, f, ["Temperature"])[0] >= 2.0
    assert unchanged(h, f, [*BANDS[1:], *KURT])
    assert np.abs(delta(h, f, [*US, "Level"])).max() < 0.01


def test_fault7_depends_less_on_speed_than_fault6() -> None:
    def vel_rise(fault: int, rpm: float, rated: float) -> float:
        cond = fixed_conditions(1, rpm=rpm, rated_rpm=rated)
        faults = np.zeros((1, 8))
        faults[0, fault] = 80.0
        return float(simulate(faults, 1, cond)[0, COL["VIBRATION_VEL_Vertical"]]
                     - simulate(np.zeros((1, 8)), 1, cond)[0, COL["VIBRATION_VEL_Vertical"]])

    slow6, fast6 = vel_rise(6, 3400, 3770), vel_rise(6, 3770, 3770)
    slow7, fast7 = vel_rise(7, 3400, 3770), vel_rise(7, 3770, 3770)
    assert slow7 / fast7 > slow6 / fast6


def test_several_faults_at_once_keep_each_signature() -> None:
    cond = fixed_conditions(20)
    healthy = simulate(np.zeros((20, 8)), 2, cond).mean(axis=0)
    faults = np.zeros((20, 8))
    faults[:, [0, 3, 6]] = 80.0
    both = simulate(faults, 2, cond).mean(axis=0)
    assert delta(healthy, both, ["Level"])[0] >= 10.0
    assert delta(healthy, both, KURT).min() >= 1.0
    assert ratio(healthy, both, VEL[1:]).min() >= 2.0
    assert ratio(healthy, both, BANDS[3:]).min() >= 2.0


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(0, 100), min_size=8, max_size=8), st.integers(0, 2**32 - 1))
def test_any_faults_give_physical_readings(levels: list[float], seed: int) -> None:
    x = simulate(np.array([levels] * 4), seed)
    assert np.isfinite(x).all()
    assert (x[:, COL["Rotation Speed"]] > 1000).all()
    assert (x[:, [COL[k] for k in [*PEAK, *ACC, *VEL, *BANDS]]] > 0).all()
    assert (x[:, [COL[k] for k in KURT]] >= 1.0).all()
    assert (x[:, [COL[k] for k in US]] < 0.5).all()  # dB re full scale


# --- healthy machine vs FD-REST's sample --------------------------------------------

def test_healthy_readings_look_like_fdrest_s_fault_free_rows() -> None:
    _, real, faults = fdrest_sample()
    real = real[np.abs(faults).max(axis=1) < 5.0]  # labels of healthy rows scatter around 0
    assert len(real) >= 2
    vm = VirtualMachine(0, start=datetime(2023, 11, 6, 15, tzinfo=UTC))
    sim = np.array([[r.features[k] for k in FEATURES] for r in vm.run(300, 60.0)])
    lo, hi, med = real.min(axis=0), real.max(axis=0), np.median(sim, axis=0)
    for i, name in enumerate(FEATURES):
        if name == "Temperature":
            ok = lo[i] - 10 <= sim[:, i].min() and sim[:, i].max() <= hi[i] + 10
        elif name == "Rotation Speed":
            ok = lo[i] - 30 <= med[i] <= hi[i] + 30
        elif name in US or name == "Level":
            ok = lo[i] - 2.0 <= med[i] <= hi[i] + 2.0
        elif name in KURT:
            ok = 2.0 <= med[i] <= 3.6
        else:
            ok = lo[i] / 1.35 <= med[i] <= hi[i] * 1.35
        assert ok, f"{name}: simulated median {med[i]:.4g}, FD-REST healthy {lo[i]:.4g}..{hi[i]:.4g}"
    assert all(r == 0.0 for r in VirtualMachine(1).step().faults.values())


def test_overall_acceleration_matches_the_bands_like_fdrest() -> None:
    """In data.csv the 200 Hz bands add up (RSS) to about the axes' overall acceleration."""
    _, real, _ = fdrest_sample()
    x, _ = generate(2000, seed=3)
    for data in (real, x):
        rss = np.sqrt((data[:, 25:35] ** 2).sum(axis=1))
        acc = np.sqrt((data[:, 9:12] ** 2).mean(axis=1))
        assert np.median(acc / rss) == pytest.approx(1.0, abs=0.2)


# --- dataset --------------------------------------------------------------------------

def test_training_distribution_covers_healthy_single_multi_and_severe() -> None:
    y = sample_faults(20000, np.random.default_rng(0))
    active = (y > 0).sum(axis=1)
    assert 0.08 < np.mean(active == 0) < 0.2
    assert np.mean(active == 1) > 0.3 and np.mean(active >= 2) > 0.3
    assert np.mean(y.max(axis=1) >= 70) > 0.2
    assert ((y > 0).mean(axis=0) > 0.15).all()  # every fault well represented
    x, _ = generate(5000, seed=1)
    rpm = x[:, COL["Rotation Speed"]]
    for family in (1500, 3000, 3600):
        assert np.mean(np.abs(rpm / family - 1) < 0.08) > 0.1
    assert np.ptp(x[:, COL["Temperature"]]) > 20


def test_csv_round_trip_in_fdrest_format(tmp_path: Path) -> None:
    start = datetime(2023, 11, 6, 15, tzinfo=UTC)
    path = write_csv(tmp_path / "sim.csv", 40, seed=4, start=start, interval_s=3 * 3600)
    with path.open(newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == list(HEADER) == ["Time", *FEATURES, *FAULTS]
    if DATA_CSV.exists():
        assert rows[0] == fdrest_header()
    assert len(rows) == 41 and all(len(r) == len(HEADER) for r in rows)
    times = [datetime.strptime(r[0], TIME_FORMAT) for r in rows[1:]]
    assert times[0] == start.replace(tzinfo=None) and times[1] - times[0] == timedelta(hours=3)
    values = np.array([[float(v) for v in r[1:]] for r in rows[1:]])
    x, y = generate(40, seed=4)
    np.testing.assert_array_equal(values[:, :35], x)
    np.testing.assert_array_equal(values[:, 35:], y)
    assert not any(v.startswith("-0.0") and float(v) == 0 for r in rows[1:] for v in r[1:])


def test_dataset_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "d.csv"
    assert main(["--rows", "25", "--seed", "2", "--out", str(out)]) == 0
    times, x, y = read_csv(out)
    assert len(times) == 25
    np.testing.assert_array_equal(x, generate(25, seed=2)[0])
    with pytest.raises(SystemExit):
        main(["--rows", "0"])
    capsys.readouterr()


def test_simulate_is_fast() -> None:
    faults = np.random.default_rng(0).uniform(0, 100, (100_000, 8))
    t0 = time.perf_counter()
    simulate(faults, 0)
    assert time.perf_counter() - t0 < 3.0


def test_simulate_rejects_wrong_shapes() -> None:
    with pytest.raises(ValueError):
        simulate(np.zeros((3, 7)), 0)
    with pytest.raises(ValueError):
        simulate(np.zeros((3, 8)), 0, fixed_conditions(2))


# --- scenarios and degradation ----------------------------------------------------------

def test_developing_fault_grows_with_noise_and_moves_its_features() -> None:
    vm = VirtualMachine(1, scenario=Scenario.developing(fault=3, minutes=10))
    readings = vm.run(600, 1.0)
    level = np.array([r.faults["fault3"] for r in readings])
    kurt = np.array([r.features["KURTOSIS_Vertical"] for r in readings])
    assert level[0] < 5 and level[-1] > 90
    assert np.corrcoef(np.arange(600), level)[0, 1] > 0.95  # the trend ...
    assert (np.diff(level) < 0).any()  # ... with noise around it
    assert kurt[-60:].mean() > kurt[:60].mean() + 1.0
    assert all(max(v for k, v in r.faults.items() if k != "fault3") == 0 for r in readings)


def test_onset_can_be_non_monotone() -> None:
    trend = Trend(2, onset_s=0, ramp_s=100, dip=0.15)
    course = [trend.at(t) for t in range(0, 101)]
    assert course[0] == 0 and course[100] == pytest.approx(100)
    assert course[65] < course[55]
    assert max(course[:65]) < 100


def test_scenarios() -> None:
    assert all(not any(r.faults.values()) for r in VirtualMachine(0, scenario="healthy").run(30, 60))
    multi = VirtualMachine(0, scenario=Scenario.multi(minutes=5)).run(5 * 60 + 1, 1.0)
    assert sum(v > 50 for v in multi[-1].faults.values()) >= 3
    custom = Scenario.multi({"fault5": 60, 7: 30}, minutes=2)
    assert custom.trend(120)[[5, 7]] == pytest.approx([60, 30])
    assert Scenario.random(3) == Scenario.random(3)
    assert Scenario.named("developing", fault="fault4", minutes=1).trend(60)[4] == pytest.approx(100)
    for bad in (lambda: Scenario.named("exploding"), lambda: Scenario.developing(fault=8),
                lambda: VirtualMachine(0, profile="warp-drive"), lambda: VirtualMachine(0).step(-1)):
        with pytest.raises(ValueError):
            bad()


@pytest.mark.parametrize("profile", ["motor-1500", "pump-3000", "compressor-3600"])
def test_profiles_run_near_their_rated_speed(profile: str) -> None:
    vm = VirtualMachine(0, "m1", profile)
    rpm = np.array([r.features["Rotation Speed"] for r in vm.run(50, 60)])
    assert np.abs(rpm / vm.profile.rated_rpm - 1).max() < 0.03


# --- learnability -----------------------------------------------------------------------

@pytest.mark.build
def test_every_fault_is_learnable_from_the_features() -> None:
    """A quick network on 20k rows must recover each fault on held-out rows (R^2 >= 0.95)."""
    pytest.importorskip("sklearn")
    from sklearn.metrics import r2_score
    from sklearn.neural_network import MLPRegressor
    from sklearn.preprocessing import StandardScaler

    x, y = generate(20_000, seed=11)
    x_test, y_test = generate(5_000, seed=12)
    scaler = StandardScaler().fit(x)
    model = MLPRegressor(hidden_layer_sizes=(128, 64), learning_rate_init=2e-3, batch_size=256,
                         max_iter=60, random_state=0).fit(scaler.transform(x), y / 100.0)
    pred = model.predict(scaler.transform(x_test)) * 100.0
    r2 = {f: round(float(r2_score(y_test[:, i], pred[:, i])), 3) for i, f in enumerate(FAULTS)}
    print("held-out R^2 per fault:", r2)
    assert min(r2.values()) >= 0.95, r2
