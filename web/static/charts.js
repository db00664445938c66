// Time-series charts (uPlot, vendored) over bounded, bucketed buffers.
//
// Live readings are folded into time buckets the same way the server downsamples
// /api/series (features averaged, faults take the bucket maximum), so a chart holds about
// POINTS points whatever the reading rate: a reading every 100 ms for an hour costs the
// same memory and redraw time as one a minute.

/* global uPlot */
import { makeAccessible } from "./chart_a11y.js"; // the drawing's label, the legend by keyboard

import { clampFault, fmtFault, fmtNum, timeZone, zoneLabel } from "./common.js";
import { FAULT_UNIT, featureInfo } from "./features.js";

export const POINTS = 600;

const DARK = window.matchMedia("(prefers-color-scheme: dark)");

function readInk() {
  const css = getComputedStyle(document.documentElement);
  return { text: css.getPropertyValue("--chart-text").trim() || "#555",
           grid: css.getPropertyValue("--chart-grid").trim() || "#e5e7eb" };
}

// Where the data pauses: after index i when the next point is more than three times the usual
// spacing away (and more than three buckets), so a sensor's own cadence is never a gap.
export function gapsIn(t, bucket) {
  if (t.length < 3) return [];
  const steps = [];
  for (let i = 1; i < t.length; i++) steps.push(t[i] - t[i - 1]);
  const usual = steps.slice().sort((a, b) => a - b)[Math.floor(steps.length / 2)];
  const limit = 3 * Math.max(usual, bucket || 0);
  const out = [];
  steps.forEach((step, i) => {
    if (step > limit) out.push(i);
  });
  return out;
}
// Canvas redraws are what costs (compositing four canvases, in software on a Pi or a
// phone); a chart of 600 buckets gains nothing from redrawing at the reading rate.
const MIN_REDRAW_MS = 500;

const AXIS3 = ["#1f6fb4", "#e07b00", "#2a9d3a"];
const FAULT_COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf"];

// Which features the live page charts: a display choice, not the catalogue (every name and
// its database column come from /api/model). Each series names the reading's feature (`key`).
const axes = (key) => ["Axial", "Vertical", "Horizontal"].map((ax, i) => (
  { from: "features", key: `${key}_${ax}`, label: ax, color: AXIS3[i] }));
// The unit of each chart is its features' (features.js, the one table of labels and units).
const CHARTED_FEATURES = [
  { title: "Temperature", agg: "mean",
    series: [{ from: "features", key: "Temperature", label: "Temperature", color: "#c0392b" }] },
  { title: "Kurtosis", agg: "mean", series: axes("KURTOSIS") },
  { title: "Vibration velocity (RMS)", agg: "mean", series: axes("VIBRATION_VEL") },
].map((c) => ({ ...c, unit: featureInfo(c.series[0].key).unit }));

// The y axis' label: the unit, or that there is none (kurtosis is a ratio).
const axisLabel = (spec) => (spec.faults ? `intensity ${FAULT_UNIT}` : spec.unit || "no unit");

// The charts for a model: the features above that it has, each with the column /api/series
// takes for it (`col`, from the model's `columns`), then every fault of the model (the fault
// names are their columns). Features are averaged per bucket, faults take its maximum.
export function chartSpecs(model) {
  const faults = model.faults || [];
  const columnOf = new Map((model.features || []).map((f, i) => [f, (model.columns || [])[i]]));
  const features = CHARTED_FEATURES.map((c) => ({
    ...c, series: c.series.filter((s) => columnOf.get(s.key)).map((s) => ({ ...s, col: columnOf.get(s.key) })),
  })).filter((c) => c.series.length);
  return [...features, {
    title: "Fault intensities", unit: FAULT_UNIT, agg: "max", faults: true,
    // the legend names each fault as the catalogue does, beside its key
    series: faults.map((f, i) => ({ from: "faults", key: f, col: f, label: faultLabel(model, f),
                                    color: FAULT_COLORS[i % FAULT_COLORS.length] })),
  }];
}

function faultLabel(model, fault) {
  const entry = (model.catalogue || []).find((c) => c.fault === fault);
  return entry && entry.category ? `${entry.category} (${fault})` : fault;
}

// The columns of those charts, with how a bucket combines readings ("mean" | "max").
export const chartColumns = (specs) => new Map(specs.flatMap((c) => c.series.map((s) => [s.col, c.agg])));

// 24-hour, ISO-ordered tick labels (uPlot's defaults are US 12-hour):
// [tick step s, label, then the extra line shown when year/month/day/hour/min/sec change, mode]
const TIME_TICKS = [
  [86400 * 365, "{YYYY}", null, null, null, null, null, null, 1],
  [86400 * 28, "{MMM}", "\n{YYYY}", null, null, null, null, null, 1],
  [86400, "{MM}-{DD}", "\n{YYYY}", null, null, null, null, null, 1],
  [3600, "{HH}:{mm}", "\n{YYYY}-{MM}-{DD}", null, "\n{MM}-{DD}", null, null, null, 1],
  [60, "{HH}:{mm}", "\n{YYYY}-{MM}-{DD}", null, "\n{MM}-{DD}", null, null, null, 1],
  [1, ":{ss}", "\n{YYYY}-{MM}-{DD} {HH}:{mm}", null, "\n{MM}-{DD} {HH}:{mm}", null, "\n{HH}:{mm}", null, 1],
];

// Columnar buffer: t (epoch s) plus one array per column, bucketed by `bucket` seconds.
// columns: Map column -> "mean" | "max" (chartColumns()).
export class SeriesBuffer {
  constructor(columns) {
    this.agg = columns;
    this.cols = [...columns.keys()];
    this.clear(1);
  }

  // Buckets are counted from `origin` like the server's (start + k * bucket).
  clear(bucket, origin = 0) {
    this.bucket = Math.max(bucket || 1, 0.001);
    this.origin = origin;
    this.t = [];
    this.n = [];
    this.v = Object.fromEntries(this.cols.map((c) => [c, []]));
    // Each bucket's min and max, drawn as an envelope behind the line once buckets come from
    // the server's rollups (a range of days: one point stands for minutes or hours of readings).
    this.lo = Object.fromEntries(this.cols.map((c) => [c, []]));
    this.hi = Object.fromEntries(this.cols.map((c) => [c, []]));
    this.envelope = false;
  }

  // Replace contents with an /api/series answer.
  load(answer, bucket) {
    this.clear(answer.bucket_seconds || bucket, Date.parse(answer.start) / 1000 || 0);
    this.t = answer.time.slice();
    this.n = this.t.map(() => 1);
    const column = (part, c) => {
      const src = (answer[part] && answer[part][c]) || [];
      return this.t.map((_, i) => (src[i] === undefined ? null : src[i]));
    };
    for (const c of this.cols) {
      this.v[c] = column("series", c);
      this.lo[c] = answer.min ? column("min", c) : this.v[c].slice();
      this.hi[c] = answer.max ? column("max", c) : this.v[c].slice();
    }
    this.envelope = Boolean(answer.resolution && answer.resolution !== "raw");
  }

  // Fold one reading in. values: {col: number}.
  // Readings usually arrive in time order (append); a late or back-dated one goes into
  // the bucket its time belongs to.
  push(t, values) {
    const key = (x) => Math.floor((x - this.origin) / this.bucket);
    const k = key(t);
    let i = this.t.length;
    if (i && t < this.t[i - 1]) {
      let lo = 0; // first index with a later time
      while (lo < i) {
        const mid = (lo + i) >> 1;
        if (this.t[mid] <= t) lo = mid + 1;
        else i = mid;
      }
    }
    if (i > 0 && key(this.t[i - 1]) === k) return this.merge(i - 1, values);
    if (i < this.t.length && key(this.t[i]) === k) return this.merge(i, values);
    this.t.splice(i, 0, t);
    this.n.splice(i, 0, 1);
    for (const c of this.cols) {
      this.v[c].splice(i, 0, values[c] ?? null);
      this.lo[c].splice(i, 0, values[c] ?? null);
      this.hi[c].splice(i, 0, values[c] ?? null);
    }
  }

  merge(i, values) {
    const n = this.n[i];
    for (const c of this.cols) {
      const x = values[c];
      if (x === undefined || x === null) continue;
      const old = this.v[c][i];
      if (old === null) this.v[c][i] = x;
      else this.v[c][i] = this.agg.get(c) === "max" ? Math.max(old, x) : old + (x - old) / (n + 1);
      const lo = this.lo[c][i];
      const hi = this.hi[c][i];
      this.lo[c][i] = lo === null ? x : Math.min(lo, x);
      this.hi[c][i] = hi === null ? x : Math.max(hi, x);
    }
    this.n[i] = n + 1;
  }

  // Drop points older than minT; hard cap as a second guard.
  trim(minT, cap = POINTS * 4) {
    let i = 0;
    while (i < this.t.length && this.t[i] < minT) i++;
    i = Math.max(i, this.t.length - cap);
    if (i > 0) {
      this.t.splice(0, i);
      this.n.splice(0, i);
      for (const c of this.cols) {
        this.v[c].splice(0, i);
        this.lo[c].splice(0, i);
        this.hi[c].splice(0, i);
      }
    }
  }
}

// One uPlot chart; xRange() -> [min, max] epoch seconds of the visible window;
// thresholds() -> {warning, alarm} (fault chart only; read at draw time, the model may load later).
// onZoom(min, max): a drag across the chart selected that time span (epoch s); onReset(): a
// double-click asked for the range before the zoom. The page owns the range (and the URL).
// marks() -> [{t: epoch s, label}]: moments to mark with a vertical line (a model switch).
export class Chart {
  constructor(container, spec, { xRange, thresholds, onZoom, onReset, marks }) {
    this.spec = spec;
    this.container = container;
    this.thresholds = thresholds;
    this.marks = marks || (() => []);
    // axis text and grid from the page's colours (app.css; dark mode has its own), read again
    // when the system switches scheme with the page open (a phone's dark mode at sunset)
    const ink = readInk();
    const text = () => ink.text;
    const grid = () => ink.grid;
    this.scheme = () => {
      Object.assign(ink, readInk());
      this.plot.redraw(false, true);
    };
    DARK.addEventListener("change", this.scheme);
    const opts = {
      // the page's zone (common.js): uPlot draws ticks and the legend in the browser's own
      tzDate: (ts) => (timeZone() === "UTC" ? uPlot.tzDate(new Date(ts * 1e3), "Etc/UTC") : new Date(ts * 1e3)),
      width: this.width(),
      height: this.height(),
      // drag to zoom: the selection goes to the page (setScale off), which loads that range
      cursor: { drag: { x: Boolean(onZoom), y: false, setScale: false } },
      legend: { live: true },
      scales: {
        x: { time: true, range: () => xRange() },
        y: {
          range: (u, min, max) => {
            if (min === null || max === null) return [0, 1];
            [min, max] = this.envelopeRange(min, max);
            if (spec.faults && thresholds) {
              // Keep both threshold lines in view so a value reads against them.
              return [Math.min(0, min), Math.max(max, thresholds().alarm * 1.1)];
            }
            const pad = (max - min) * 0.1 || Math.abs(max) * 0.1 || 1;
            return [min - pad, max + pad];
          },
        },
      },
      axes: [
        { stroke: text, grid: { stroke: grid }, ticks: { stroke: grid }, values: TIME_TICKS,
          label: `time (${zoneLabel()})`, labelSize: 18, labelFont: "12px system-ui, sans-serif" },
        { stroke: text, size: 48, grid: { stroke: grid }, ticks: { stroke: grid },
          label: axisLabel(spec), labelSize: 18, labelFont: "12px system-ui, sans-serif" },
      ],
      series: [
        { label: "time", value: "{YYYY}-{MM}-{DD} {HH}:{mm}:{ss}" },
        ...spec.series.map((s) => ({
          // uPlot's default point rule: dots only while points are sparse (a lone reading shows).
          label: s.label, stroke: s.color, width: 1.5, spanGaps: false,
          // faults: the value drawn (0 to 100) and the model's own when it was clamped
          value: spec.faults ? (u, v, si, i) => this.faultLegend(s.col, v, i) : (u, v) => fmtNum(v),
        })),
      ],
      hooks: {
        // before the lines: the envelope lies behind them
        drawAxes: [(u) => this.drawEnvelopes(u)],
        setSelect: [(u) => {
          const { left, width } = u.select;
          if (onZoom && width >= 8) onZoom(u.posToVal(left, "x"), u.posToVal(left + width, "x"));
          if (width) u.setSelect({ left: 0, top: 0, width: 0, height: 0 }, false);
        }],
        draw: [...(spec.faults ? [(u) => this.drawThresholds(u)] : []), (u) => this.drawMarks(u)],
      },
    };
    this.plot = new uPlot(opts, [[], ...spec.series.map(() => [])], container);
    // the axes' labels (drawn on the canvas) where a test or a tool can read them
    container.dataset.xLabel = opts.axes[0].label;
    container.dataset.yLabel = opts.axes[1].label;
    if (onReset) container.addEventListener("dblclick", () => onReset());
    this.buf = null;
    this.dirty = false;
    makeAccessible(this.plot, spec);
    this.visible = true;
    this.lastDraw = -Infinity;
    this.timer = 0;
    // Off-screen charts (a phone scrolled to the tiles) are not redrawn until shown.
    this.seen = new IntersectionObserver(([entry]) => {
      this.visible = entry.isIntersecting;
      if (this.visible) this.schedule();
    });
    this.seen.observe(container);
    // Charts follow their box (phone rotation, window resize).
    this.resized = new ResizeObserver(() => {
      const w = this.width();
      if (Math.abs(w - this.plot.width) > 2) this.plot.setSize({ width: w, height: this.height() });
    });
    this.resized.observe(container);
  }

  // Another model's faults: the page replaces its charts.
  destroy() {
    clearTimeout(this.timer);
    DARK.removeEventListener("change", this.scheme);
    this.seen.disconnect();
    this.resized.disconnect();
    this.plot.destroy();
  }

  width() {
    return Math.max(240, Math.floor(this.container.clientWidth));
  }

  height() {
    return this.container.clientWidth < 480 ? 160 : 200;
  }

  // New data; drawn at once, even off-screen, if `now` (a new range: the chart must not
  // be blank when scrolled to or printed), else within MIN_REDRAW_MS once visible.
  update(buf, now = false) {
    this.buf = buf;
    this.dirty = true;
    if (now) {
      clearTimeout(this.timer);
      this.timer = 0;
      this.draw();
    } else {
      this.schedule();
    }
  }

  schedule() {
    if (!this.dirty || !this.visible || this.timer) return;
    const wait = this.lastDraw + MIN_REDRAW_MS - performance.now();
    if (wait <= 0) this.draw();
    else this.timer = setTimeout(() => { this.timer = 0; this.schedule(); }, wait);
  }

  draw() {
    this.dirty = false;
    this.lastDraw = performance.now();
    const buf = this.buf;
    // fault intensities are drawn clamped to 0..100 (the buffer keeps the model's values)
    const shown = this.spec.faults ? (col) => buf.v[col].map(clampFault) : (col) => buf.v[col];
    const after = gapsIn(buf.t, buf.bucket);
    this.gapAfter = new Set(after);
    this.container.dataset.gaps = String(after.length);
    if (!after.length) {
      this.index = null;
      this.plot.setData([buf.t, ...this.spec.series.map((s) => shown(s.col))]);
      return;
    }
    // A null point inside each gap: uPlot breaks the line there (spanGaps: false). `index`
    // maps a plotted point back to the buffer's (-1: a gap), for the legend's raw values.
    const t = [];
    const index = [];
    for (let i = 0, g = 0; i < buf.t.length; i++) {
      t.push(buf.t[i]);
      index.push(i);
      if (after[g] === i) {
        t.push((buf.t[i] + buf.t[i + 1]) / 2);
        index.push(-1);
        g++;
      }
    }
    this.index = index;
    const plotted = (col) => {
      const v = shown(col);
      return index.map((i) => (i < 0 ? null : v[i]));
    };
    this.plot.setData([t, ...this.spec.series.map((s) => plotted(s.col))]);
  }

  // The legend's value of a fault: "100.0" when the model answered 100 or less, "100.0 (raw 104.2)"
  // when drawing clamped it.
  faultLegend(col, v, i) {
    if (v === null || v === undefined) return "–";
    const at = this.index && i !== null && i !== undefined ? this.index[i] : i;
    const raw = this.buf && at !== null && at !== undefined && at >= 0 ? this.buf.v[col][at] : v;
    return raw === v || raw === null || raw === undefined ? fmtFault(v) : `${fmtFault(v)} (raw ${fmtNum(raw)})`;
  }

  // An envelope's bounds as drawn: fault intensities clamped to 0..100 like their lines.
  band(values) {
    return this.spec.faults ? values.map(clampFault) : values;
  }

  // The y range widened to the envelopes, so a band is not cut off at the top or bottom.
  envelopeRange(min, max) {
    const buf = this.buf;
    if (!buf || !buf.envelope) return [min, max];
    for (const s of this.spec.series) {
      for (const v of this.band(buf.lo[s.col])) if (v !== null && v < min) min = v;
      for (const v of this.band(buf.hi[s.col])) if (v !== null && v > max) max = v;
    }
    return [min, max];
  }

  // Each series' min-max band, a pale fill of its colour, where buckets hold many readings.
  drawEnvelopes(u) {
    const buf = this.buf;
    if (!buf || !buf.envelope || !buf.t.length) return;
    const { ctx } = u;
    ctx.save();
    ctx.beginPath();
    ctx.rect(u.bbox.left, u.bbox.top, u.bbox.width, u.bbox.height);
    ctx.clip();
    ctx.globalAlpha = 0.18;
    this.spec.series.forEach((s, k) => {
      if (u.series[k + 1] && u.series[k + 1].show === false) return;
      const lo = this.band(buf.lo[s.col]);
      const hi = this.band(buf.hi[s.col]);
      ctx.fillStyle = s.color;
      let run = [];
      const flush = () => {
        if (run.length > 1) {
          ctx.beginPath();
          run.forEach((i, j) => {
            const x = u.valToPos(buf.t[i], "x", true);
            const y = u.valToPos(hi[i], "y", true);
            if (j) ctx.lineTo(x, y); else ctx.moveTo(x, y);
          });
          for (let j = run.length - 1; j >= 0; j--) {
            const i = run[j];
            ctx.lineTo(u.valToPos(buf.t[i], "x", true), u.valToPos(lo[i], "y", true));
          }
          ctx.closePath();
          ctx.fill();
        }
        run = [];
      };
      for (let i = 0; i < buf.t.length; i++) {
        if (lo[i] === null || hi[i] === null) flush(); // a gap: no band across it
        else run.push(i);
        if (this.gapAfter && this.gapAfter.has(i)) flush(); // nor across a pause in the data
      }
      flush();
    });
    ctx.restore();
  }

  // Dashed warning and alarm lines on the fault chart.
  // A vertical line at each mark inside the visible range, and a labelled element over it (its
  // title says which model scored from there; what a test or a screen reader can find).
  drawMarks(u) {
    const over = u.over;
    for (const old of over.querySelectorAll(".chart-mark")) old.remove();
    const { ctx } = u;
    ctx.save();
    ctx.strokeStyle = "#6d28d9";
    ctx.lineWidth = Math.max(1, devicePixelRatio);
    ctx.setLineDash([2 * devicePixelRatio, 3 * devicePixelRatio]);
    for (const m of this.marks()) {
      const x = u.valToPos(m.t, "x", true);
      if (x < u.bbox.left || x > u.bbox.left + u.bbox.width) continue;
      ctx.beginPath();
      ctx.moveTo(Math.round(x), u.bbox.top);
      ctx.lineTo(Math.round(x), u.bbox.top + u.bbox.height);
      ctx.stroke();
      const tag = document.createElement("span");
      tag.className = "chart-mark";
      tag.title = m.label;
      tag.textContent = "◆";
      tag.style.left = `${u.valToPos(m.t, "x")}px`;
      over.append(tag);
    }
    ctx.restore();
  }

  drawThresholds(u) {
    const { ctx } = u;
    const thr = this.thresholds();
    const lines = [[thr.warning, "#d97706"], [thr.alarm, "#dc2626"]];
    ctx.save();
    ctx.lineWidth = Math.max(1, devicePixelRatio);
    ctx.setLineDash([6 * devicePixelRatio, 4 * devicePixelRatio]);
    for (const [v, color] of lines) {
      const y = Math.round(u.valToPos(v, "y", true));
      if (y < u.bbox.top || y > u.bbox.top + u.bbox.height) continue;
      ctx.strokeStyle = color;
      ctx.beginPath();
      ctx.moveTo(u.bbox.left, y);
      ctx.lineTo(u.bbox.left + u.bbox.width, y);
      ctx.stroke();
    }
    ctx.restore();
  }
}
