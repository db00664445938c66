"""FD-REST's fixed vocabulary: feature names, database columns, fault catalogue, time format.

These names are a wire and storage contract with existing sensors, clients and
``sensor_data.db`` files, so they live in one place and are never derived at run time. The
build step (convert/) and the virtual sensor (simulator/) share it with the runtime, so it
imports nothing from the runtime.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import lru_cache

# (CSV / JSON key as FD-REST's sensors send it, SQLite column in FD-REST's sensor_data table)
FEATURE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("Rotation Speed", "rotation_speed"),
    ("Temperature", "temperature"),
    ("Level", "level"),
    ("KURTOSIS_Axial", "kurtosis_axial"),
    ("KURTOSIS_Vertical", "kurtosis_vertical"),
    ("KURTOSIS_Horizontal", "kurtosis_horizontal"),
    ("PEAK_Axial", "peak_axial"),
    ("PEAK_Vertical", "peak_vertical"),
    ("PEAK_Horizontal", "peak_horizontal"),
    ("VIBRATION_ACC_Axial", "vibration_acc_axial"),
    ("VIBRATION_ACC_Vertical", "vibration_acc_vertical"),
    ("VIBRATION_ACC_Horizontal", "vibration_acc_horizontal"),
    ("VIBRATION_VEL_Axial", "vibration_vel_axial"),
    ("VIBRATION_VEL_Vertical", "vibration_vel_vertical"),
    ("VIBRATION_VEL_Horizontal", "vibration_vel_horizontal"),
    ("0-8 kHz", "band_0_8k"),
    ("8-16 kHz", "band_8_16k"),
    ("16-24 kHz", "band_16_24k"),
    ("24-32 kHz", "band_24_32k"),
    ("32-40 kHz", "band_32_40k"),
    ("40-48 kHz", "band_40_48k"),
    ("48-56 kHz", "band_48_56k"),
    ("56-64 kHz", "band_56_64k"),
    ("64-72 kHz", "band_64_72k"),
    ("72-80 kHz", "band_72_80k"),
    ("0-200 Hz", "band_0_200"),
    ("200-400 Hz", "band_200_400"),
    ("400-600 Hz", "band_400_600"),
    ("600-800 Hz", "band_600_800"),
    ("800-1000 Hz", "band_800_1000"),
    ("1-1.2 kHz", "band_1_1_2k"),
    ("1.2-1.4 kHz", "band_1_2_1_4k"),
    ("1.4-1.6 kHz", "band_1_4_1_6k"),
    ("1.6-1.8 kHz", "band_1_6_1_8k"),
    ("1.8-2 kHz", "band_1_8_2k"),
)

FEATURES: tuple[str, ...] = tuple(name for name, _ in FEATURE_COLUMNS)
COLUMNS: tuple[str, ...] = tuple(col for _, col in FEATURE_COLUMNS)

FAULTS: tuple[str, ...] = tuple(f"fault{i}" for i in range(8))
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"  # FD-REST's `Time`, as sent and as stored (UTC)
DEFAULT_MACHINE = "default"  # the machine of a reading that names none (FD-REST's were all one)
MAX_MACHINE_LEN = 64

# Index i describes output fault<i>; copied into every model manifest so pages and
# alarms read it from the model, not from code.
CATALOGUE: tuple[dict[str, str], ...] = (
    {"fault": "fault0", "category": "Ultrasonic level",
     "observed": "The ultrasonic level rises.",
     "root_causes": "Lubrication is lacking."},
    {"fault": "fault1", "category": "Ultrasonic impulses",
     "observed": "Impulses appear in the ultrasonic range.",
     "root_causes": "Bearing or gear damage at an early stage."},
    {"fault": "fault2", "category": "Wide-band vibration impulses",
     "observed": "Ultrasonic level and peaks up, vibration level up, impulses across a wide frequency range.",
     "root_causes": "Bearing or gear damage at a later stage, wear, cracks."},
    {"fault": "fault3", "category": "Vibration impulses",
     "observed": "Vibration level up with wide-band impulses.",
     "root_causes": "Late-stage wear of rolling-element bearings or gears."},
    {"fault": "fault4", "category": "High-frequency vibration",
     "observed": "Energy rises in a high-frequency vibration band.",
     "root_causes": "Gear damage; electrical motor faults such as loose rotor bars."},
    {"fault": "fault5", "category": "Rotation frequency and harmonics",
     "observed": "Vibration up at 1x, 2x, 3x running speed, mostly horizontal/vertical.",
     "root_causes": "Misalignment, bent shaft, misaligned bearing or wrong clearance, unbalance, rotating looseness."},
    {"fault": "fault6", "category": "Rotation frequency",
     "observed": "Vibration up at 1x running speed, horizontal/vertical.",
     "root_causes": "Unbalance, rotor/stator eccentricity, mechanical looseness."},
    {"fault": "fault7", "category": "Low-frequency vibration",
     "observed": "Low-frequency vibration up, horizontal/vertical.",
     "root_causes": "Eccentricity, soft foot, worn or loose belt, turbulence, weak structure."},
)


CATALOGUE_TEXT = ("category", "observed", "root_causes")  # what each entry says about its fault
MAX_CATALOGUE_TEXT = 1000  # characters per field: a sentence or two on a page, not a document


def parse_catalogue(value: object, *, strict: bool = True) -> tuple[dict[str, str], ...]:
    """A model's own catalogue, checked: one entry per fault in FAULTS order (raises ValueError).

    Each entry holds non-empty `category` (the fault's name on the pages), `observed` (the
    symptoms) and `root_causes` strings; `fault` may be left out, and if given must be the
    entry's own fault. `strict` (the build step) refuses unknown keys so a misspelt field is
    not silently dropped; the runtime ignores them, so a newer converter's additions do not
    stop an older appliance.
    """
    if not isinstance(value, list):
        raise ValueError(f"must be a JSON list of {len(FAULTS)} entries, got {type(value).__name__}")
    if len(value) != len(FAULTS):
        raise ValueError(f"must have one entry per fault ({len(FAULTS)}, fault0..fault{len(FAULTS) - 1} in order), "
                         f"got {len(value)}")
    entries = []
    for i, entry in enumerate(value):
        where = f"entry {i} (fault{i})"
        if not isinstance(entry, dict):
            raise ValueError(f"{where} must be an object, got {type(entry).__name__}")
        unknown = sorted(set(entry) - {"fault", *CATALOGUE_TEXT})
        if unknown and strict:
            raise ValueError(f"{where} has unknown keys {unknown}; allowed: fault, {', '.join(CATALOGUE_TEXT)}")
        if entry.get("fault", FAULTS[i]) != FAULTS[i]:
            raise ValueError(f"{where} says fault {entry['fault']!r}: entries go in output order, fault0 first")
        for key in CATALOGUE_TEXT:
            text = entry.get(key)
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"{where}: {key!r} must be a non-empty string")
            if len(text) > MAX_CATALOGUE_TEXT:
                raise ValueError(f"{where}: {key!r} is {len(text)} characters, at most {MAX_CATALOGUE_TEXT}")
        entries.append({"fault": FAULTS[i], **{key: entry[key].strip() for key in CATALOGUE_TEXT}})
    return tuple(entries)


def format_time(dt: datetime, ms: bool = False) -> str:
    """A time as FD-REST's `YYYY-MM-DD HH:MM:SS` in UTC (naive times are taken as UTC), plus a
    fraction only when there is one: as stored, microseconds without trailing zeros; with `ms`,
    three-digit milliseconds, as a sensor sends them (every parser reads those).

    Text keeps FD-REST's column type and sorts chronologically, which the range queries rely on."""
    if dt.tzinfo is not None:
        dt = dt.astimezone(UTC).replace(tzinfo=None)
    text = dt.strftime(TIME_FORMAT)
    if ms:
        return f"{text}.{dt.microsecond // 1000:03d}" if dt.microsecond >= 1000 else text
    return f"{text}.{dt.microsecond:06d}".rstrip("0") if dt.microsecond else text


def now_text(ahead_s: float = 0.0) -> str:
    """The current time (plus `ahead_s`) as stored."""
    return format_time(datetime.now(UTC) + timedelta(seconds=ahead_s))


def iso(stored: str | None) -> str | None:
    """Stored time text (UTC) -> ISO 8601 with Z, as every JSON answer has it."""
    if not stored:
        return stored
    return stored.replace(" ", "T", 1) + ("" if stored.endswith("Z") or "+" in stored else "Z")


@lru_cache(maxsize=8192)
def epoch_seconds(stored: str) -> float:
    """Stored time text -> epoch seconds; 0.0 for text that is no time (FD-REST allowed any)."""
    text = stored.strip().replace("T", " ").removesuffix("Z")
    base, _, fraction = text.partition(".")
    try:
        dt = datetime.strptime(base, TIME_FORMAT).replace(tzinfo=UTC)
        return dt.timestamp() + (float("0." + fraction) if fraction.isdigit() else 0.0)
    except ValueError:
        return 0.0
