"""Operating conditions and machine traits: everything a reading depends on besides the faults.

Kept apart from the physics so that a test can hold conditions fixed and vary only the
faults, and so that the live machine can evolve conditions with inertia while the
training set samples them independently per row.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

AXES: tuple[str, ...] = ("Axial", "Vertical", "Horizontal")

# Healthy 1x velocity per axis (mm/s RMS) of FD-REST's sample machine; other machines scatter
# around it. ISO 1940 balance grades fix e*omega, so residual-unbalance velocity does not
# depend on the rated speed.
HEALTHY_VEL1 = np.array([4.1, 3.8, 4.6])


@dataclass(frozen=True)
class Profile:
    """A machine type: rated speed and the operating point it usually runs at."""

    name: str
    rated_rpm: float
    load: float = 0.6  # mean load, 0..1
    ambient: float = 22.0  # mean ambient temperature, degC
    speed_offset: float = 0.0  # set-point offset from rated (VFD), fraction


# "default" is FD-REST's sample machine (data.csv: ~3770 rpm, 23-36 degC).
PROFILES: dict[str, Profile] = {
    "default": Profile("default", 3770.0, load=0.6, ambient=22.0),
    "motor-1500": Profile("motor-1500", 1490.0, load=0.7, ambient=20.0),
    "pump-3000": Profile("pump-3000", 2980.0, load=0.65, ambient=18.0),
    "compressor-3600": Profile("compressor-3600", 3580.0, load=0.75, ambient=25.0),
}

# Rated speeds of the training distribution and how often each occurs.
FAMILIES = np.array([1490.0, 2980.0, 3580.0, 3770.0])
FAMILY_P = np.array([0.2, 0.3, 0.25, 0.25])

GEAR_MESH_HZ = 1500.0  # the gearbox of every family meshes near the middle of 1.4-1.6 kHz


@dataclass(frozen=True)
class Conditions:
    """Per-row operating point and machine traits, all arrays of length n (vel1: (n, 3))."""

    rpm: np.ndarray  # actual shaft speed
    rated_rpm: np.ndarray  # fault severities are judged at this speed
    load: np.ndarray  # 0..1
    ambient: np.ndarray  # degC
    vel1: np.ndarray  # (n, 3) healthy 1x velocity per axis at rated speed, mm/s
    floor_gain: np.ndarray  # healthy broadband vibration floor, relative
    us_offset: np.ndarray  # healthy ultrasonic level offset of this machine/sensor, dB
    kurt_base: np.ndarray  # kurtosis of the healthy floor (slightly leptokurtic on real machines)
    mesh_teeth: np.ndarray  # gear mesh (or rotor bar) count: mesh Hz = teeth * rpm / 60
    struct_hz: np.ndarray  # lowest structural resonance (soft foot, weak base), Hz
    temperature: np.ndarray | None = None  # housing temperature if a thermal model tracks it

    def __len__(self) -> int:
        return int(np.shape(self.rpm)[0])

    def with_(self, **changes: Any) -> Conditions:
        return replace(self, **changes)


def teeth_for(rated_rpm: np.ndarray | float) -> np.ndarray:
    return np.round(GEAR_MESH_HZ * 60.0 / np.asarray(rated_rpm, dtype=float))


def sample_traits(n: int, rng: np.random.Generator, rated_rpm: np.ndarray) -> dict[str, np.ndarray]:
    """Machine-to-machine scatter: one draw per row, so a model cannot memorise one machine."""
    common = rng.lognormal(0.0, 0.12, size=(n, 1))
    per_axis = rng.lognormal(0.0, 0.05, size=(n, 3))
    return {
        "vel1": HEALTHY_VEL1 * common * per_axis,
        "floor_gain": rng.lognormal(0.0, 0.12, size=n),
        "us_offset": rng.normal(0.0, 1.5, size=n),
        "kurt_base": 3.0 + rng.gamma(2.0, 0.05, size=n),
        "mesh_teeth": teeth_for(rated_rpm),
        "struct_hz": rng.uniform(11.0, 18.0, size=n),
    }


def sample_conditions(n: int, rng: np.random.Generator) -> Conditions:
    """The training distribution: four speed families, speed drift, load and ambient spread."""
    rated = FAMILIES[rng.choice(len(FAMILIES), size=n, p=FAMILY_P)]
    rpm = rated * (1.0 + np.clip(rng.normal(0.0, 0.012, size=n), -0.035, 0.035))
    load = rng.uniform(0.25, 1.0, size=n)
    ambient = np.clip(rng.normal(22.0, 6.0, size=n), 0.0, 40.0)
    return Conditions(rpm=rpm, rated_rpm=rated, load=load, ambient=ambient,
                      **sample_traits(n, rng, rated))


def fixed_conditions(n: int = 1, *, rpm: float = 3770.0, rated_rpm: float | None = None,
                     load: float = 0.6, ambient: float = 22.0,
                     temperature: float | None = None) -> Conditions:
    """A nominal machine at one operating point: for comparisons at equal conditions."""
    rated = float(rpm if rated_rpm is None else rated_rpm)

    def full(value: float) -> np.ndarray:
        return np.full(n, float(value))

    return Conditions(
        rpm=full(rpm), rated_rpm=full(rated), load=full(load), ambient=full(ambient),
        vel1=np.tile(HEALTHY_VEL1, (n, 1)), floor_gain=full(1.0), us_offset=full(0.0),
        kurt_base=full(3.1), mesh_teeth=teeth_for(full(rated)), struct_hz=full(13.0),
        temperature=None if temperature is None else full(temperature),
    )
