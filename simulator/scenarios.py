"""Scenarios: how each fault's intensity develops over a live stream.

A scenario is a pure, deterministic description (trend per fault over time); the
random wobble around it belongs to the machine that plays it, so one scenario can be
replayed on many machines and seeds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from edge.fdrest import FAULTS

N_FAULTS = len(FAULTS)


def fault_index(fault: int | str) -> int:
    """Accept 2 or "fault2" so CLIs and code can name faults either way."""
    text = fault.removeprefix("fault") if isinstance(fault, str) else None
    i = int(text) if text is not None and text.isdigit() else fault
    if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or not 0 <= i < N_FAULTS:
        raise ValueError(f"unknown fault {fault!r}: use 0..{N_FAULTS - 1} or fault0..fault{N_FAULTS - 1}")
    return int(i)


@dataclass(frozen=True)
class Trend:
    """One fault's course: 0 until `onset_s`, then grows to `peak` over `ramp_s` and stays.

    `shape` > 1 starts slowly and accelerates, like wear; `dip` > 0 adds a temporary
    relief between 55 and 75 % of the ramp (a fresh spall's edges smooth out before the damage
    spreads), which makes the onset non-monotone as on real bearings.
    """

    fault: int
    onset_s: float = 0.0
    ramp_s: float = 600.0
    peak: float = 100.0
    shape: float = 1.0
    dip: float = 0.0

    def at(self, t_s: float) -> float:
        u = min(max((t_s - self.onset_s) / max(self.ramp_s, 1e-9), 0.0), 1.0)
        relief = np.sin(np.pi * min(max((u - 0.55) / 0.2, 0.0), 1.0))  # 0 outside 55-75 %
        return self.peak * max(u**self.shape - self.dip * float(relief), 0.0)


@dataclass(frozen=True)
class Scenario:
    """A named set of fault trends; `wobble` is the size of the random fluctuation (intensity
    units) a machine adds around an active fault's trend."""

    name: str
    trends: tuple[Trend, ...] = ()
    wobble: float = 2.0

    def trend(self, t_s: float) -> np.ndarray:
        """Deterministic intensities (8,) at `t_s` seconds after the stream started."""
        out = np.zeros(N_FAULTS)
        for tr in self.trends:
            out[tr.fault] = max(out[tr.fault], tr.at(t_s))
        return out

    @property
    def duration_s(self) -> float:
        return max((t.onset_s + t.ramp_s for t in self.trends), default=0.0)

    @classmethod
    def healthy(cls) -> Scenario:
        return cls("healthy", (), wobble=0.0)

    @classmethod
    def developing(cls, fault: int | str = 2, minutes: float = 10.0, *, onset_minutes: float = 0.0,
                   peak: float = 100.0, shape: float = 1.0, dip: float = 0.0) -> Scenario:
        """One fault grows from 0 to `peak` within `minutes` (after `onset_minutes`)."""
        tr = Trend(fault_index(fault), onset_minutes * 60.0, minutes * 60.0, peak, shape, dip)
        return cls("developing", (tr,))

    @classmethod
    def multi(cls, faults: Sequence[int | str] | Mapping[int | str, float] = (0, 1, 2, 3),
              minutes: float = 30.0, *, peak: float = 90.0, stagger: float = 0.25) -> Scenario:
        """Several faults with staggered onsets, all at their peaks after `minutes`.

        The default is a bearing's failure cascade: dry running (0), early damage (1),
        late damage (2), wide-band impacts (3). A mapping gives each fault its own peak.
        """
        peaks = dict(faults) if isinstance(faults, Mapping) else {f: peak for f in faults}
        total = minutes * 60.0
        trends = []
        for k, (f, p) in enumerate(peaks.items()):
            onset = min(k * stagger, 0.9) * total
            trends.append(Trend(fault_index(f), onset, total - onset, float(p), shape=1.3))
        return cls("multi", tuple(trends))

    @classmethod
    def random(cls, seed: int = 0, minutes: float = 30.0) -> Scenario:
        """A reproducible surprise: healthy, one developing fault, or several."""
        rng = np.random.default_rng(seed)
        kind = rng.choice(3, p=[0.15, 0.45, 0.40])
        total = minutes * 60.0
        count = (0, 1, int(rng.integers(2, 4)))[kind]
        trends = []
        for f in rng.permutation(N_FAULTS)[:count]:
            onset = float(rng.uniform(0.0, 0.5)) * total
            trends.append(Trend(int(f), onset, float(rng.uniform(0.3, 1.0)) * (total - onset),
                                float(rng.uniform(40.0, 100.0)), float(rng.uniform(0.8, 2.5)),
                                float(rng.choice([0.0, 0.15], p=[0.7, 0.3]))))
        return cls("random", tuple(trends))

    @classmethod
    def named(cls, name: str, **kwargs: object) -> Scenario:
        """`Scenario.named("developing", fault=3, minutes=5)`: for command lines and configs."""
        makers = {"healthy": cls.healthy, "developing": cls.developing, "multi": cls.multi,
                  "random": cls.random}
        if name not in makers:
            raise ValueError(f"unknown scenario {name!r}; choose from {sorted(makers)}")
        return makers[name](**kwargs)


SCENARIOS: tuple[str, ...] = ("healthy", "developing", "multi", "random")
