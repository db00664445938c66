// FD-REST's 35 feature keys as people read them: a label and a unit each, the one table every
// page takes them from (the dashboard's feature grid, the charts' axes, the table's columns).
// The units are those the simulator's physics is calibrated in (simulator/SIGNATURES.md), the
// sensor's own: RMS acceleration and peaks in g, velocity in mm/s RMS (ISO 10816), ultrasonic
// levels in dB re the sensor's full scale. A key missing here is shown as it is, without a unit.

const AXES = ["Axial", "Vertical", "Horizontal"];

function build() {
  const t = new Map([
    ["Rotation Speed", { label: "Rotation speed", unit: "rpm" }],
    ["Temperature", { label: "Temperature", unit: "°C" }],
    ["Level", { label: "Ultrasonic level", unit: "dB" }],
  ]);
  const perAxis = [
    ["KURTOSIS", "Kurtosis", ""], // a ratio of moments: no unit (3 for Gaussian noise)
    ["PEAK", "Peak acceleration", "g"],
    ["VIBRATION_ACC", "RMS acceleration", "g"],
    ["VIBRATION_VEL", "RMS velocity", "mm/s"],
  ];
  for (const [key, label, unit] of perAxis) {
    for (const ax of AXES) t.set(`${key}_${ax}`, { label: `${label}, ${ax.toLowerCase()}`, unit });
  }
  for (let k = 0; k < 80; k += 8) t.set(`${k}-${k + 8} kHz`, { label: `Ultrasound ${k}–${k + 8} kHz`, unit: "dB" });
  const low = ["0-200 Hz", "200-400 Hz", "400-600 Hz", "600-800 Hz", "800-1000 Hz",
    "1-1.2 kHz", "1.2-1.4 kHz", "1.4-1.6 kHz", "1.6-1.8 kHz", "1.8-2 kHz"];
  for (const band of low) t.set(band, { label: `Vibration ${band.replace("-", "–")}`, unit: "g" });
  return t;
}

export const FEATURE_INFO = build();

// {label, unit} of a feature key (the key itself and no unit when the table does not know it).
export const featureInfo = (key) => FEATURE_INFO.get(key) || { label: key, unit: "" };

// The unit of a fault intensity, for axes and headers.
export const FAULT_UNIT = "0–100";

// What an explanation (/api/explain's `features`) names, as people read it:
// "Peak acceleration, axial +8.0 σ, RMS velocity, vertical +3.1 σ".
export const drivers = (features) => features
  .map((f) => `${featureInfo(f.feature).label} ${f.sigma >= 0 ? "+" : ""}${f.sigma.toFixed(1)} σ`).join("; ");
