"""A live virtual machine: operating conditions with inertia, a scenario's faults, readings.

`simulate` is stateless (one row = one independent draw); this class adds what a live
stream needs: speed and load that drift slowly, a daily ambient cycle, a housing that
warms up with a time constant, and faults that wobble around their scenario's trend.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import overload

import numpy as np

from edge.fdrest import FAULTS, FEATURES, TIME_FORMAT
from simulator.conditions import HEALTHY_VEL1, PROFILES, Conditions, Profile, sample_traits, teeth_for
from simulator.physics import equilibrium_temperature, quantize, simulate
from simulator.scenarios import Scenario

SPEED_TAU_S, SPEED_SIGMA = 600.0, 0.002  # shaft speed wanders +-0.2 % around its set point
LOAD_TAU_S, LOAD_SIGMA = 900.0, 0.10
AMBIENT_TAU_S, AMBIENT_SIGMA, AMBIENT_DAILY = 3600.0, 1.0, 4.0  # degC; warmest 15:00 UTC
THERMAL_TAU_S = 1200.0  # housing temperature lags its equilibrium by ~20 minutes
WOBBLE_TAU_S = 120.0  # faults fluctuate around their trend on a ~2 minute scale


@dataclass(frozen=True)
class Reading:
    """One reading as a sensor would post it, plus the ground-truth fault intensities."""

    time: datetime  # UTC
    machine: str
    features: dict[str, float]  # FD-REST key -> value, rounded like data.csv
    faults: dict[str, float] = field(default_factory=dict)  # fault0..fault7, 0 healthy .. 100 severe

    def to_fdrest_json(self, machine: bool = False) -> dict[str, object]:
        """The body FD-REST's sender posted to /send; `machine=True` adds FD-Edge's key."""
        body: dict[str, object] = {"Time": self.time.strftime(TIME_FORMAT), **self.features}
        if machine:
            body["machine"] = self.machine
        return body


@overload
def _ou(x: float, dt: float, tau: float, sigma: float, rng: np.random.Generator, size: None = None) -> float: ...
@overload
def _ou(x: np.ndarray, dt: float, tau: float, sigma: float, rng: np.random.Generator, size: int) -> np.ndarray: ...
def _ou(x: float | np.ndarray, dt: float, tau: float, sigma: float,
        rng: np.random.Generator, size: int | None = None) -> float | np.ndarray:
    """Exact Ornstein-Uhlenbeck step: mean-reverting noise, valid for any dt."""
    a = math.exp(-dt / tau)
    return x * a + sigma * math.sqrt(1.0 - a * a) * rng.normal(size=size)


class VirtualMachine:
    """A machine that streams readings; same seed, machine and scenario -> same readings.

    `profile` picks the machine type (see `PROFILES`); by default a machine named like a
    profile uses it, any other name the `default` profile. `scenario` is a `Scenario` or
    a scenario name; `start` (UTC, naive means UTC) defaults to now.
    """

    def __init__(self, seed: int = 0, machine: str = "default", profile: str | None = None, *,
                 scenario: Scenario | str | None = None, start: datetime | None = None) -> None:
        name = profile or (machine if machine in PROFILES else "default")
        if name not in PROFILES:
            raise ValueError(f"unknown profile {name!r}; choose from {sorted(PROFILES)}")
        self.machine = machine
        self.profile: Profile = PROFILES[name]
        self.scenario = Scenario.named(scenario) if isinstance(scenario, str) else (scenario or Scenario.healthy())
        start = start or datetime.now(UTC).replace(microsecond=0)
        self.start = start.replace(tzinfo=UTC) if start.tzinfo is None else start.astimezone(UTC)
        self.rng = np.random.default_rng([seed, zlib.crc32(machine.encode())])
        self.elapsed_s = 0.0
        self._traits = self._machine_traits()
        self._speed = self._load = self._ambient = 0.0  # OU deviations
        self._wobble = np.zeros(len(FAULTS))
        self._temperature: float | None = None

    def _machine_traits(self) -> dict[str, np.ndarray]:
        """FD-REST's sample machine is the calibrated reference; other machines scatter."""
        rated = np.array([self.profile.rated_rpm])
        if self.machine == "default" and self.profile.name == "default":
            return {"vel1": HEALTHY_VEL1[None, :], "floor_gain": np.ones(1), "us_offset": np.zeros(1),
                    "kurt_base": np.full(1, 3.1), "mesh_teeth": teeth_for(rated), "struct_hz": np.full(1, 13.0)}
        return sample_traits(1, self.rng, rated)

    @property
    def time(self) -> datetime:
        return self.start + timedelta(seconds=self.elapsed_s)

    def step(self, dt_seconds: float = 1.0) -> Reading:
        """Advance the clock by `dt_seconds` and read the sensors."""
        if dt_seconds < 0:
            raise ValueError("dt_seconds must not be negative")
        dt, rng, p = float(dt_seconds), self.rng, self.profile
        self.elapsed_s += dt
        self._speed = _ou(self._speed, dt, SPEED_TAU_S, SPEED_SIGMA, rng)
        self._load = _ou(self._load, dt, LOAD_TAU_S, LOAD_SIGMA, rng)
        self._ambient = _ou(self._ambient, dt, AMBIENT_TAU_S, AMBIENT_SIGMA, rng)
        self._wobble = _ou(self._wobble, dt, WOBBLE_TAU_S, 1.0, rng, size=len(FAULTS))

        trend = self.scenario.trend(self.elapsed_s)
        # The wobble fades in with the fault so a healthy machine reads exactly 0.
        faults = np.clip(trend + self.scenario.wobble * self._wobble * np.minimum(trend / 10.0, 1.0), 0.0, 100.0)

        now = self.time
        hour = now.hour + now.minute / 60.0 + now.second / 3600.0
        ambient = p.ambient + self._ambient + AMBIENT_DAILY * math.cos(2 * math.pi * (hour - 15.0) / 24.0)
        cond = Conditions(
            rpm=np.array([p.rated_rpm * (1.0 + p.speed_offset + self._speed)]),
            rated_rpm=np.array([p.rated_rpm]),
            load=np.array([min(max(p.load + self._load, 0.1), 1.0)]),
            ambient=np.array([ambient]), **self._traits)
        t_eq = float(equilibrium_temperature(faults[None, :], cond)[0])
        if self._temperature is None:
            self._temperature = t_eq
        self._temperature += (t_eq - self._temperature) * (1.0 - math.exp(-dt / THERMAL_TAU_S))

        x = quantize(simulate(faults[None, :], rng, cond.with_(temperature=np.array([self._temperature]))))[0]
        return Reading(now, self.machine, dict(zip(FEATURES, x.tolist(), strict=True)),
                       {f: round(float(v), 3) for f, v in zip(FAULTS, faults, strict=True)})

    def run(self, count: int, dt_seconds: float = 1.0) -> list[Reading]:
        return [self.step(dt_seconds) for _ in range(count)]
