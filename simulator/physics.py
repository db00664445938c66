"""Fault intensities + operating conditions -> FD-REST's 35 features.

The vibration side is a small spectral model: every mechanism is either a spectral line
(running-speed harmonics, gear mesh, structural resonance) or a broadband source
(noise floor, bearing impacts) with a power per 200 Hz band and per axis. All 35
features are then *derived* from that spectrum the way an instrument would
(band RMS, overall RMS, ISO 10-1000 Hz velocity, peak, kurtosis), so the features stay
mutually consistent (e.g. VIBRATION_ACC equals the RSS of the bands, as in data.csv).
The ultrasonic side works in dB: each fault amplifies the healthy carpet by a
band-dependent gain that grows linearly in dB with severity (the rule of thumb of
ultrasonic bearing monitoring). Every number here is documented in SIGNATURES.md.
"""

from __future__ import annotations

import numpy as np

from edge.fdrest import FEATURES
from simulator.conditions import Conditions, sample_conditions

N_FAULTS = 8
G_MM = 9806.65  # mm/s^2 per g
REF_RPM = 3770.0  # FD-REST's sample machine: healthy magnitudes are calibrated here
N_BANDS = 10  # 200 Hz bands up to 2 kHz; index 10 is 2-10 kHz (in ACC/PEAK, not reported)
KURT_FROM = 2  # kurtosis is taken on the >= 400 Hz signal, above the running-speed lines
# Effective frequency to integrate broadband acceleration to velocity (impacts carry
# little energy below ~60 Hz); 0 = outside ISO 10816's 10-1000 Hz velocity range.
VEL_FREQ = np.array([70, 300, 500, 700, 900, 0, 0, 0, 0, 0, 0.0])
_TO_VEL2 = np.divide((G_MM / (2 * np.pi)) ** 2, VEL_FREQ**2, out=np.zeros(11), where=VEL_FREQ > 0)

# --- healthy machine, at REF_RPM ---------------------------------------------------------
FLOOR = np.array([0.020, 0.048, 0.033, 0.020, 0.015, 0.021, 0.024, 0.028, 0.042, 0.016, 0.045])
FLOOR_AXIS = np.array([0.95, 0.95, 1.1])
HARMONIC_BASE = np.array([1.0, 0.12, 0.05])  # healthy 2x, 3x relative to 1x
MESH_BASE_G = 0.02  # healthy gear mesh line, g, at full load
US_BASE = np.array([-3.9, -23.5, -30.2, -35.7, -38.3, -40.0, -40.1, -40.7, -41.4, -47.4])
LEVEL_BASE = -31.0  # overall ultrasonic carpet level, dB (tracks the 16-24 kHz band in data.csv)
US_SPEED_DB = 16.0  # ultrasonic dB per decade of shaft speed (friction grows with speed)
US_KNEE_DB = 1.5  # ultrasonic levels are dB re the sensor's full scale: they saturate softly at 0
TEMP_RISE = 14.0  # degC above ambient at full load

# --- fault signatures at intensity 100 (see SIGNATURES.md) ------------------------------
# Ultrasonic gain per 8 kHz band, dB; fault0 = friction carpet (rises towards high bands),
# fault1 = impulses at the sensor resonance near 40 kHz, fault2 = broadband, low-band heavy.
US_GAIN = np.zeros((N_FAULTS, N_BANDS))
US_GAIN[0] = [4, 13, 16, 18, 20, 22, 24, 26, 27, 28]
US_GAIN[1] = [1, 5, 11, 18, 22, 22, 17, 11, 7, 4]
US_GAIN[2] = [6, 16, 15, 13, 11, 9, 7, 6, 5, 4]
LEVEL_GAIN = np.array([22.0, 5.0, 10.0, 0, 0, 0, 0, 0])
HEAT = np.array([14.0, 0.0, 5.0, 2.0, 0.0, 4.0, 0.0, 5.0])  # degC: friction, slip, coupling heat

F5_HARMONICS = np.array([4, 10, 6, 3, 2, 1.3, 0.9, 0.6, 0.5, 0.4, 0.3, 0.25])  # mm/s at kx
F5_AXIS = np.array([0.6, 0.9, 1.0])  # misalignment also shows axially
F6_VEL = 18.0  # mm/s at 1x
F6_AXIS = np.array([0.15, 0.8, 1.0])  # unbalance: radial, horizontal softer
F7_VEL = 18.0  # mm/s at the structural resonance
F7_BELT = 4.0  # mm/s at the belt frequency
BELT_ORDER = 0.45  # belt passing frequency relative to 1x (stays above 10 Hz at 1500 rpm)
F7_AXIS = np.array([0.1, 1.0, 0.45])  # soft foot / weak base rocks vertically
F4_MESH_G = np.array([0.5, 0.3, 0.12])  # mesh line, +-1x and +-2x sidebands
F4_AXIS = np.array([0.7, 1.0, 0.9])

# Broadband impact sources: RMS g at 100, spectral weights (unit power), impulse kurtosis.
F1_G, F1_W, F1_AXIS = 0.04, np.r_[np.zeros(10), 1.0], np.array([0.8, 1.0, 0.9])
F2_G, F2_W, F2_AXIS = 0.6, np.r_[0.5, np.ones(9), 1.5], np.array([0.6, 1.0, 0.85])
F3_G, F3_W, F3_AXIS = 0.8, np.array([0, .05, .2, .5, .8, 1, 1, .9, .7, .5, .6]), np.array([0.5, 1.0, 0.8])
F1_W, F2_W, F3_W = (w / np.sqrt((w**2).sum()) for w in (F1_W, F2_W, F3_W))

CREST_GAUSS, CREST_TONES = 3.0, 2.4

# Relative sensor noise (lognormal sigma) or absolute noise per feature group.
NOISE = {"rpm": 1.5, "temp": 0.3, "us_db": 0.5, "level_db": 0.5, "kurt": 0.02,
         "peak": 0.04, "acc": 0.02, "vel": 0.02, "band": 0.03}


def equilibrium_temperature(faults: np.ndarray, c: Conditions) -> np.ndarray:
    """Housing temperature the machine settles at: ambient + load losses + fault friction."""
    return c.ambient + TEMP_RISE * c.load * (c.rated_rpm / REF_RPM) ** 0.3 + (faults / 100.0) @ HEAT


def simulate(faults: np.ndarray, rng: np.random.Generator | int,
             conditions: Conditions | None = None) -> np.ndarray:
    """Map fault intensities (n, 8), 0 healthy .. 100 severe, to raw features (n, 35).

    Without `conditions`, each row gets its own operating point and machine from the
    training distribution. Noise draws never depend on the fault values, so two calls
    with equal seeds and conditions differ only by the faults' signatures. Values are
    unrounded; `quantize` applies the sensor's resolution.
    """
    rng = np.random.default_rng(rng)
    x = np.clip(np.asarray(faults, dtype=float), 0.0, None) / 100.0
    if x.ndim != 2 or x.shape[1] != N_FAULTS:
        raise ValueError(f"faults must have shape (n, {N_FAULTS}), got {x.shape}")
    n = x.shape[0]
    c = sample_conditions(n, rng) if conditions is None else conditions
    if len(c) != n:
        raise ValueError(f"conditions describe {len(c)} rows, faults {n}")

    out = np.empty((n, len(FEATURES)))
    vib = _vibration(x, c)
    _ultrasonic(x, c, out)
    temp = equilibrium_temperature(x * 100.0, c) if c.temperature is None else c.temperature

    # Noise, always drawn in the same order and shapes.
    out[:, 0] = c.rpm + rng.normal(0, NOISE["rpm"], n)
    out[:, 1] = temp + rng.normal(0, NOISE["temp"], n)
    out[:, 2] += rng.normal(0, NOISE["level_db"], n)
    out[:, 15:25] += rng.normal(0, NOISE["us_db"], (n, 10))
    out[:, [2, *range(15, 25)]] = _full_scale(out[:, [2, *range(15, 25)]])
    out[:, 3:6] = vib["kurt"] * rng.lognormal(0, NOISE["kurt"], (n, 3))
    out[:, 6:9] = vib["peak"] * rng.lognormal(0, NOISE["peak"], (n, 3))
    out[:, 9:12] = vib["acc"] * rng.lognormal(0, NOISE["acc"], (n, 3))
    out[:, 12:15] = vib["vel"] * rng.lognormal(0, NOISE["vel"], (n, 3))
    out[:, 25:35] = vib["bands"] * rng.lognormal(0, NOISE["band"], (n, 10))
    return out


def _ultrasonic(x: np.ndarray, c: Conditions, out: np.ndarray) -> None:
    """Healthy carpet (speed-dependent) amplified by each fault; gains add in dB.

    Adding gains (rather than powers) is a deliberate simplification: dry running also
    amplifies the emission of defects, and with plain power addition a strong fault would
    hide a weaker one completely, which no model could then learn to report.
    """
    base = c.us_offset + US_SPEED_DB * np.log10(c.rpm / REF_RPM)
    out[:, 15:25] = US_BASE + base[:, None] + x @ US_GAIN
    out[:, 2] = LEVEL_BASE + base + x @ LEVEL_GAIN


def _full_scale(db: np.ndarray) -> np.ndarray:
    """Soft saturation at 0 dB full scale: -knee * log(1 + exp(-db / knee))."""
    return -US_KNEE_DB * np.logaddexp(0.0, -db / US_KNEE_DB)


class _Spectrum:
    """Power per axis and band (g^2), plus what kurtosis, peak and velocity need.

    Sources are independent, so for the kurtosis band the fourth moment of the sum is
    sum((K_j - 3) s_j^4) + 3 (sum s_j^2)^2: each source only contributes (K_j - 3) s_j^4.
    """

    def __init__(self, n: int) -> None:
        self.rows = np.arange(n)
        self.power = np.zeros((n, 3, N_BANDS + 1))
        self.excess4 = np.zeros((n, 3))  # sum of (K_j - 3) * s_j^4 over the kurtosis band
        self.vel2 = np.zeros((n, 3))  # mm^2/s^2 within ISO 10816's 10-1000 Hz
        self.peak2 = np.zeros((n, 3))  # sum of (crest_j * s_j)^2

    def line(self, freq: np.ndarray, acc: np.ndarray) -> None:
        """A sine at `freq` (n,) with RMS acceleration `acc` (n, 3) in g."""
        band = np.clip((freq // 200).astype(int), 0, N_BANDS)
        a2 = acc**2
        self.power[self.rows, :, band] += a2
        self.peak2 += CREST_TONES**2 * a2
        in_iso = ((freq >= 10) & (freq <= 1000))[:, None]
        self.vel2 += np.where(in_iso, a2 * (G_MM / (2 * np.pi * freq[:, None])) ** 2, 0.0)
        self.excess4 += np.where((band >= KURT_FROM)[:, None], -1.5 * a2**2, 0.0)  # sine: K = 1.5

    def vline(self, freq: np.ndarray, vel: np.ndarray) -> None:
        """A sine given by its RMS velocity `vel` (n, 3) in mm/s."""
        self.line(freq, vel * 2 * np.pi * freq[:, None] / G_MM)

    def broadband(self, p: np.ndarray, kurt: np.ndarray | float, crest: np.ndarray | float) -> None:
        """An independent random source with power `p` (n, 3, 11) and kurtosis `kurt`."""
        self.power += p
        s = p[:, :, KURT_FROM:].sum(axis=2)
        self.excess4 += (np.asarray(kurt) - 3.0) * s**2
        self.vel2 += (p * _TO_VEL2).sum(axis=2)
        self.peak2 += np.asarray(crest) ** 2 * p.sum(axis=2)

    def features(self) -> dict[str, np.ndarray]:
        s2 = self.power[:, :, KURT_FROM:].sum(axis=2)
        return {
            "acc": np.sqrt(self.power.sum(axis=2)),
            "vel": np.sqrt(self.vel2),
            "peak": np.sqrt(self.peak2),
            "kurt": 3.0 + self.excess4 / s2**2,
            "bands": np.sqrt(self.power[:, :, :N_BANDS].mean(axis=1)),  # one band set, axes pooled
        }


def _vibration(x: np.ndarray, c: Conditions) -> dict[str, np.ndarray]:
    sp = _Spectrum(len(x))
    f1 = c.rpm / 60.0
    ratio = (c.rpm / c.rated_rpm)[:, None]  # severities are judged at rated speed

    # Running-speed harmonics: healthy residual + misalignment/looseness (5) + unbalance (6).
    # Same-frequency contributions add in phase, so even small faults change the line.
    for k in range(1, len(F5_HARMONICS) + 1):
        v = F5_HARMONICS[k - 1] * x[:, 5:6] * F5_AXIS
        if k <= len(HARMONIC_BASE):
            v = v + HARMONIC_BASE[k - 1] * c.vel1
        if k == 1:
            v = v + F6_VEL * x[:, 6:7] * F6_AXIS
        sp.vline(k * f1, v * ratio)

    # Low-frequency structural / belt vibration (7): fixed frequency, weak speed dependence.
    # Its intensity measures the energy it adds (amplitude ~ sqrt): it adds in quadrature
    # to the 1x, and a linear amplitude would leave small intensities invisible.
    weak = ratio**0.3 * np.sqrt(x[:, 7:8])
    sp.vline(c.struct_hz, F7_VEL * F7_AXIS * weak)
    sp.vline(BELT_ORDER * f1, F7_BELT * F7_AXIS * weak)

    # Gear mesh / rotor bar line with sidebands (4); the healthy mesh line grows with load.
    mesh = c.mesh_teeth * f1
    healthy_mesh = MESH_BASE_G * (0.4 + 0.6 * c.load)[:, None] * F4_AXIS
    sp.line(mesh, (healthy_mesh + F4_MESH_G[0] * x[:, 4:5] * F4_AXIS) * ratio)
    for order, amp in ((1, F4_MESH_G[1]), (2, F4_MESH_G[2])):
        for sign in (-1, 1):
            sp.line(mesh + sign * order * f1, amp * x[:, 4:5] * F4_AXIS * ratio)

    # Gaussian floor: grows with speed (absolute, not relative to rated) and a little with load.
    gain = c.floor_gain * (c.rpm / REF_RPM) ** 0.8 * np.sqrt(0.85 + 0.3 * c.load)
    sp.broadband((FLOOR * FLOOR_AXIS[:, None]) ** 2 * (gain**2)[:, None, None],
                 c.kurt_base[:, None], CREST_GAUSS)

    # Impacts (1, 2, 3). Early impacts (1) are tiny, above 2 kHz, and grow with rolling speed
    # like the floor, so they only nudge kurtosis; as damage spreads, impacts smear and
    # fault3's kurtosis per impact falls.
    k3 = 12.0 - 5.0 * x[:, 3:4]
    for f, g, w, axis, kurt, speed in ((1, F1_G, F1_W, F1_AXIS, 12.0, gain[:, None]),
                                       (2, F2_G, F2_W, F2_AXIS, 6.0, ratio**1.5),
                                       (3, F3_G, F3_W, F3_AXIS, k3, ratio**1.5)):
        amp = g * x[:, f:f + 1] * axis * speed
        sp.broadband((amp**2)[:, :, None] * w**2, kurt, 1.3 * np.sqrt(kurt))
    return sp.features()


# --- the sensor's resolution, as in data.csv ----------------------------------------------
_DECIMALS = {0: 0, 1: 1, 2: 1, **{i: 1 for i in range(15, 25)}, **{i: 2 for i in range(3, 6)}}


def quantize(features: np.ndarray) -> np.ndarray:
    """Round like FD-REST's sensor: rpm integer, degC/dB 0.1, kurtosis 0.01, the rest 3 digits."""
    x = np.array(features, dtype=float, copy=True)
    for i, d in _DECIMALS.items():
        x[..., i] = np.round(x[..., i], d)
    sig = [i for i in range(x.shape[-1]) if i not in _DECIMALS]
    v = x[..., sig]
    with np.errstate(divide="ignore", invalid="ignore"):
        exp = np.floor(np.log10(np.abs(v)))
    scale = 10.0 ** (2 - np.where(np.isfinite(exp), exp, 0))
    x[..., sig] = np.round(v * scale) / scale
    return x + 0.0  # no "-0.0" in CSV files
