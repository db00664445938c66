"""FD-REST's fixed vocabulary: feature names, database columns and fault catalogue.

These names are a wire and storage contract with existing sensors, clients and
``sensor_data.db`` files, so they live in one place and are never derived at run time.
"""

from __future__ import annotations

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
COLUMN_OF: dict[str, str] = dict(FEATURE_COLUMNS)

FAULTS: tuple[str, ...] = tuple(f"fault{i}" for i in range(8))
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"

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
