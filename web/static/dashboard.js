// Live dashboard (/): alarms, fault intensities, dominant fault, trends, latest reading.
//
// Data flow: /api/model (names, catalogue, thresholds) -> /api/machines -> /api/latest
// (the newest row and its id) -> /api/series (chart history) -> /events from that id, so
// nothing committed between the page load and the stream is missed. Incoming readings
// are queued and applied once per animation frame: a burst of replayed rows costs one
// DOM update and one chart redraw. Alarms: /api/alarms on every (re)connect, then the
// stream's `alarm` events (alarms.js). A reconnect to a new, empty database (row ids lower
// than those shown) reloads everything (live.js tells us).

import {
  $, clampFault, dominantFault, el, faultState, fmtFault, fmtNum, fmtTime, getJSON, initPage, isUnauthorized, loadModel, notice,
  inputTime, parseInputTime, serverNow, showError, showFault, zoneLabel,
} from "./common.js";
import { Chart, POINTS, SeriesBuffer, chartColumns, chartSpecs } from "./charts.js";
import { LiveFeed, RateMeter } from "./live.js";
import { AlarmPanel } from "./alarms.js";
import { drivers, featureInfo } from "./features.js";
import { StatusBanner } from "./status.js";

const RANGES = { "15m": 900, "1h": 3600, "24h": 86400, "7d": 604800 };

const S = {
  thresholds: null, // {warning, alarm}: the model's
  catalogue: new Map(), // fault -> {category, observed, root_causes}
  machines: [],
  machine: null, // null: no filter (fresh appliance, or a single unnamed source)
  range: "15m",
  custom: null, // [startSec, endSec] when range === "custom"
  unzoomed: null, // the preset range a drag-to-zoom left (a double-click goes back to it)
  marks: [], // [{t, label}]: where the scoring model changed (GET /api/model/changes)
  latest: null,
  chartQueue: [],
  loadingSeries: false,
  frame: 0,
  modelVersion: null, // the model store version shown; a reading stamped with another one refetches
  modelFetch: false,
};
const tiles = new Map(); // fault -> {li, value, state, bar}
const featureCells = new Map(); // feature name -> <dd>
const rate = new RateMeter();
let specs = []; // the charts' specs (charts.js), once the model named its faults
let buffer = null; // SeriesBuffer of every charted column
const charts = [];

const TITLE = document.title;
const status = new StatusBanner({ onChange: renderStale });
const alarms = new AlarmPanel({
  catalogue: () => S.catalogue,
  onCount: showAlarmCount,
  onPickMachine: (name) => {
    S.machine = name;
    renderMachines();
    restart();
  },
});
const feed = new LiveFeed({
  onReading,
  onAlarm: (change) => alarms.onEvent(change),
  onConnect: () => alarms.reload(),
  onReset: () => {
    // A new database: its machines, rows and alarms are not the ones on the page.
    alarms.reset();
    clearLatest();
    S.machine = null;
    S.machines = [];
    init();
  },
  onGap: async (skipped) => {
    // Too many missed rows to replay one by one: the charts reload them (downsampled).
    if (S.range !== "custom") await loadSeries();
    $("range-msg").textContent = `${skipped} missed readings were not replayed live; the charts include them.`;
  },
});
initPage({ onToken: () => init(), onUnauthorized: () => feed.needToken() });

// --- model: thresholds, fault tiles, feature list, charts ----------------------------

function buildModel(model) {
  S.thresholds = model.thresholds;
  S.catalogue = new Map((model.catalogue || []).map((c) => [c.fault, c]));
  showModel(model);
  $("thr-warning").textContent = fmtFault(S.thresholds.warning);
  $("thr-alarm").textContent = fmtFault(S.thresholds.alarm);

  const list = $("faults");
  list.replaceChildren();
  tiles.clear();
  for (const f of model.faults || []) {
    const cat = S.catalogue.get(f);
    const li = el("li", "fault state-normal");
    li.dataset.fault = f;
    const head = el("div", "fault-head");
    head.append(el("span", "fault-id", f), el("span", "fault-state", "–"));
    const value = el("div", "fault-value", "–");
    const track = el("div", "bar");
    const bar = el("div", "bar-fill");
    track.append(bar);
    li.append(head, el("div", "fault-cat", cat ? cat.category : f), value, track);
    list.append(li);
    tiles.set(f, { li, value, state: head.lastChild, bar });
  }

  const dl = $("features");
  dl.replaceChildren();
  featureCells.clear();
  for (const name of model.features || []) {
    const div = el("div", "feat");
    const dd = el("dd", null, "–");
    const info = featureInfo(name); // a readable label and its unit (features.js); the key in the title
    const dt = el("dt", null, info.label);
    dt.title = name;
    if (info.unit) dt.append(" ", el("span", "unit", info.unit));
    div.append(dt, dd);
    dl.append(div);
    featureCells.set(name, dd);
  }
  buildCharts(model);
}

// Which model scores: its name, manifest version and model store version (GET /api/models).
function showModel(model) {
  S.modelVersion = model.store_version || null;
  $("model-name").textContent = model.name || "–";
  $("model-version").textContent = model.version || "–";
  $("model-store").textContent = model.store_version || "–";
}

// A reading scored by another store version than the one shown: the model was swapped (an
// activation or a rollback); name and versions are fetched again. Faults and features are the
// same for every model the store keeps (FD-REST's), so nothing else is rebuilt.
async function modelChanged(version) {
  if (S.modelFetch) return;
  S.modelFetch = true;
  try {
    const model = await getJSON("/api/model");
    showModel(model);
    if (model.store_version !== version) S.modelVersion = version; // not asked again for every reading
    loadMarks(); // the switch is a new mark
  } catch (err) {
    // the next reading asks again
  } finally {
    S.modelFetch = false;
  }
}

// The feature charts the page shows (charts.js) and one of every fault the model has.
function buildCharts(model) {
  const next = chartSpecs(model);
  if (JSON.stringify(next) === JSON.stringify(specs)) return;
  for (const c of charts.splice(0)) c.destroy();
  $("charts").replaceChildren();
  specs = next;
  buffer = new SeriesBuffer(chartColumns(specs));
  for (const spec of specs) {
    const fig = el("figure", "chart");
    fig.append(el("figcaption", null, spec.title));
    const box = el("div", "chart-box");
    fig.append(box);
    if (spec.faults) {
      // what the numbers mean, beside the chart that shows them
      const t = S.thresholds || { warning: 30, alarm: 60 };
      fig.append(el("p", "chart-note muted small",
        `Fault intensity, 0 (none) to 100 (the strongest the model was trained on): warning from ${t.warning}, `
        + `alarm from ${t.alarm} (the dashed lines). Drag across a chart to zoom, double-click to go back, ◀ Earlier and Later ▶ to pan.`));
    }
    $("charts").append(fig);
    charts.push(new Chart(box, spec, { xRange, thresholds: () => S.thresholds, onZoom: zoomTo, onReset: unzoom,
                                       marks: () => S.marks }));
  }
}

// --- header: active alarms ------------------------------------------------------------

// total: active alarms on every machine (null: not loaded yet); here: on the machine shown.
function showAlarmCount(total, here) {
  const a = $("alarm-count");
  a.dataset.count = total === null ? "" : String(total);
  a.textContent = total === null ? "alarms –" : total === 0 ? "no alarms" : `${total} active alarm${total === 1 ? "" : "s"}`;
  a.title = total && here !== total ? `${here} on this machine, ${total - here} on other machines` : "Active alarms";
  document.title = total ? `(${total}) ${TITLE}` : TITLE;
}

// --- rendering the newest reading ----------------------------------------------------

function setState(node, state) {
  node.classList.remove("state-normal", "state-warning", "state-alarm");
  node.classList.add(`state-${state}`);
}

function renderLatest(r) {
  const faults = r.faults || {};
  // Bars span 0..(alarm x 1.25) so both thresholds sit at fixed places.
  const full = S.thresholds.alarm * 1.25 || 100;
  for (const [f, t] of tiles) {
    const v = faults[f];
    const st = v === undefined ? "normal" : faultState(v, S.thresholds);
    setState(t.li, st);
    showFault(t.value, v);
    t.state.textContent = v === undefined ? "–" : st;
    t.bar.style.transform = `scaleX(${Math.min(Math.max((clampFault(v) || 0) / full, 0), 1)})`;
  }

  const dom = dominantFault(faults);
  const box = $("dominant");
  if (dom) {
    const v = faults[dom];
    const st = faultState(v, S.thresholds);
    const cat = S.catalogue.get(dom) || {};
    setState(box, st);
    // Healthy: no causes listed for a 0.3 (they would read as a diagnosis).
    $("dom-name").textContent = st === "normal" ? "Healthy" : `${cat.category || dom} (${dom})`;
    if (st === "normal") showFault($("dom-value"), null).textContent = "";
    else showFault($("dom-value"), v);
    $("dom-state").textContent = st;
    $("dom-detail").hidden = st === "normal";
    $("dom-observed").textContent = cat.observed || "–";
    $("dom-causes").textContent = cat.root_causes || "–";
    $("dom-note").textContent = st === "normal"
      ? `All intensities are below the warning threshold (${S.thresholds.warning}); the largest is ${dom} at ${fmtFault(clampFault(v))}.`
      : "";
    if (st === "normal") $("dom-why").textContent = "–";
    else explainSoon(r);
  }
  renderDrift(r.machine);

  $("latest-time").textContent = fmtTime(r.time);
  $("latest-machine").textContent = r.machine ?? "–";
  $("latest-id").textContent = r.id ?? "–";
  const feats = r.features || {};
  for (const [name, dd] of featureCells) dd.textContent = fmtNum(feats[name]);
}

// --- why: the features behind the shown reading's fault (GET /api/explain) ---------------

// At most one request in flight, and only for the newest reading shown: a burst of alarm-level
// readings asks once for the last of them, not once each.
const why = { wanted: null, busy: false, shown: null };
function explainSoon(r) {
  if (r.id === undefined || r.id === null || r.id === why.shown) return;
  why.wanted = r.id;
  if (!why.busy) explainNext();
}
async function explainNext() {
  const id = why.wanted;
  if (id === null) return;
  why.busy = true;
  try {
    const ans = await getJSON("/api/explain", { id });
    if (S.latest && S.latest.id === id) {
      why.shown = id;
      $("dom-why").textContent = ans.healthy || !ans.features.length
        ? "no single feature stands out"
        : drivers(ans.features)
          + ` (from the ${ans.baseline} mean)`;
    }
  } catch (err) {
    $("dom-why").textContent = "–"; // an older appliance without /api/explain, or the reading is gone
  } finally {
    why.busy = false;
    if (why.wanted !== id) explainNext();
    else why.wanted = null;
  }
}

// Drift (the appliance's, from /api/machines): the model is being asked about data unlike its
// training data, so its numbers say less.
function renderDrift(machine) {
  const d = machine == null ? null : status.drift(machine);
  const note = $("dom-drift");
  note.hidden = !(d && d.drifted);
  note.textContent = d && d.drifted
    ? `Readings of ${machine} have drifted from the model's training data (score ${d.score.toFixed(1)}: `
      + `${d.top.map((t) => `${t.feature} ${t.score.toFixed(1)} σ outside its range`).join(", ")}). Trust the fault values less.`
    : "";
}

// Nothing shown yet (a new database): back to the empty page's state.
function clearLatest() {
  S.latest = null;
  S.chartQueue.length = 0;
  for (const t of tiles.values()) {
    setState(t.li, "normal");
    showFault(t.value, null);
    t.state.textContent = "–";
    t.bar.style.transform = "scaleX(0)";
  }
  setState($("dominant"), "normal");
  $("dom-name").textContent = "Waiting for the first reading…";
  for (const id of ["dom-value", "dom-state", "dom-note"]) $(id).textContent = "";
  for (const id of ["dom-observed", "dom-causes", "latest-time", "latest-machine", "latest-id"]) $(id).textContent = "–";
  for (const dd of featureCells.values()) dd.textContent = "–";
}

// The shown machine silent past its threshold: its values greyed, and how old they are.
function renderStale() {
  const name = S.machine ?? S.latest?.machine ?? null;
  const stale = name !== null && status.isStale(name);
  const seen = name !== null ? status.lastReading(name) : "";
  for (const id of ["dominant", "faults-card", "latest-card"]) $(id).classList.toggle("is-stale", stale);
  $("machine-seen").textContent = seen;
  $("machine-seen").classList.toggle("is-stale", stale);
  renderDrift(name);
  $("stale-note").hidden = !stale;
  $("stale-note").textContent = stale
    ? `${name} is silent: no reading for longer than expected. The values below are its ${seen}.`
    : "";
}

// --- live stream -------------------------------------------------------------------

function onReading(r) {
  rate.tick();
  if (r.machine) status.heard(r.machine);
  if (r.machine && !S.machines.some((m) => m.machine === r.machine)) refreshMachines();
  if (r.model_version && S.modelVersion !== null && r.model_version !== S.modelVersion) modelChanged(r.model_version);
  S.latest = r;
  S.chartQueue.push(r);
  // Bounded even if frames stall (hidden tab): older queued rows only matter to charts.
  if (S.chartQueue.length > 20000) S.chartQueue.splice(0, S.chartQueue.length - 20000);
  scheduleFrame();
}

function scheduleFrame() {
  if (S.frame) return;
  S.frame = requestAnimationFrame(() => {
    S.frame = 0;
    if (S.latest) renderLatest(S.latest);
    flushCharts();
  });
}

function flushCharts(now = false) {
  if (S.loadingSeries || !buffer) return; // the series answer replaces the buffer; keep the queue
  if (S.range !== "custom" && S.chartQueue.length) {
    for (const r of S.chartQueue) {
      const t = Date.parse(r.time) / 1000;
      if (Number.isNaN(t)) continue;
      const values = {};
      for (const c of specs) for (const s of c.series) values[s.col] = r[s.from]?.[s.key];
      buffer.push(t, values);
    }
    const [min] = xRange();
    buffer.trim(min);
    if (buffer.t.length) $("range-msg").textContent = "";
  }
  S.chartQueue.length = 0;
  for (const c of charts) c.update(buffer, now);
}

// --- ranges and history ------------------------------------------------------------

function xRange() {
  if (S.range === "custom" && S.custom) return S.custom;
  const now = serverNow() / 1000;
  return [now - RANGES[S.range], now];
}

const iso = (sec) => new Date(sec * 1000).toISOString().replace(/\.\d{3}Z$/, "Z");

// The model switches inside the range: a line on every chart where another model took over.
async function loadMarks() {
  const [start, end] = xRange();
  try {
    // every switch (one row each: few), placed at the first reading the new model scored of the
    // shown machine, in the readings' own time as the charts are
    const ans = await getJSON("/api/model/changes", { machine: S.machine });
    const changes = ans.changes || [];
    S.marks = changes.slice(1).filter((c) => c.time).map((c) => ({
      t: Date.parse(c.time) / 1000,
      label: `model ${c.name || ""} ${c.version} from reading ${c.first_id} (switched ${fmtTime(c.at)})`,
    })).filter((m) => m.t >= start && m.t <= end + 60);
    for (const c of charts) c.plot.redraw(false);
  } catch (err) {
    S.marks = []; // an appliance without a model store: nothing to mark
  }
}

async function loadSeries() {
  if (!buffer) return; // the model has not loaded: init() loads the series after it
  loadMarks();
  const [start, end] = xRange();
  S.loadingSeries = true;
  $("range-msg").textContent = "";
  try {
    const ans = await getJSON("/api/series", {
      start: iso(start), end: iso(end), machine: S.machine, metrics: buffer.cols.join(","), points: POINTS,
    });
    buffer.load(ans, (end - start) / POINTS);
    if (!ans.time.length) $("range-msg").textContent = "No readings in this range.";
  } catch (err) {
    buffer.clear((end - start) / POINTS, start);
    showError(err, (text) => { $("range-msg").textContent = text; });
  } finally {
    S.loadingSeries = false;
    // Live rows that arrived meanwhile: keep only those newer than the history.
    const lastT = buffer.t.length ? buffer.t[buffer.t.length - 1] : -Infinity;
    S.chartQueue = S.chartQueue.filter((r) => Date.parse(r.time) / 1000 >= lastT);
    flushCharts(true);
  }
}

function wireRanges() {
  for (const b of document.querySelectorAll("#ranges button[data-range]")) {
    b.addEventListener("click", () => {
      S.range = b.dataset.range;
      S.custom = null;
      $("custom-range").hidden = S.range !== "custom";
      markRange();
      saveUrl();
      if (S.range !== "custom") loadSeries();
    });
  }
  $("pan-earlier").addEventListener("click", () => pan(-1));
  $("pan-later").addEventListener("click", () => pan(1));
  $("custom-range").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const start = parseInputTime($("custom-start").value);
    const end = parseInputTime($("custom-end").value);
    if (Number.isNaN(start) || Number.isNaN(end) || end <= start) {
      $("range-msg").textContent = "Pick a start before the end.";
      return;
    }
    S.custom = [start / 1000, end / 1000];
    saveUrl();
    loadSeries();
  });
}

// Pan: the window shown (live or fixed) moved by half its span, as a fixed range; never past now.
function pan(direction) {
  const [min, max] = xRange();
  const span = max - min;
  const now = serverNow() / 1000;
  let end = Math.min(max + (direction * span) / 2, now);
  if (direction > 0 && end < max) end = max; // already at now
  zoomTo(end - span, end);
}

// A drag across any chart: that span as a custom range (in the URL, so it survives a reload and
// can be shared); a double-click goes back to the range before the first zoom.
function zoomTo(min, max) {
  if (!(max > min)) return;
  if (S.range !== "custom") S.unzoomed = S.range;
  S.range = "custom";
  showCustom(min, max);
  markRange();
  saveUrl();
  loadSeries();
}

function unzoom() {
  if (S.range !== "custom" || !S.unzoomed) return;
  S.range = S.unzoomed;
  S.unzoomed = null;
  S.custom = null;
  $("custom-range").hidden = true;
  markRange();
  saveUrl();
  loadSeries();
}

// The custom range [min, max] epoch s, and its form's inputs in the page's zone.
function showCustom(min, max) {
  S.custom = [min, max];
  $("custom-range").hidden = false;
  $("custom-start").value = inputTime(min * 1000);
  $("custom-end").value = inputTime(max * 1000);
}

function markRange() {
  for (const b of document.querySelectorAll("#ranges button[data-range]")) {
    b.setAttribute("aria-pressed", String(b.dataset.range === S.range));
  }
  $("live-mode").textContent = S.range === "custom" ? "fixed range" : "live";
}

// --- machines ----------------------------------------------------------------------

let machinesInFlight = null;
function refreshMachines() {
  machinesInFlight ??= getJSON("/api/machines")
    .then((ans) => {
      S.machines = ans.machines || [];
      if (pickDefault()) {
        // The stream so far was unfiltered; with one machine it carried the same rows.
        if (S.machines.length > 1) restart();
        else {
          feed.machine = S.machine;
          alarms.setMachine(S.machine);
        }
      }
      renderMachines();
    })
    .catch((err) => showError(err))
    .finally(() => { machinesInFlight = null; });
  return machinesInFlight;
}

// With no machine chosen yet, take the one that reported last. Returns true if it changed.
function pickDefault() {
  if (S.machine !== null || !S.machines.length) return false;
  const newest = [...S.machines].sort((a, b) => String(b.last_time).localeCompare(String(a.last_time)))[0];
  S.machine = newest.machine;
  return true;
}

function renderMachines() {
  const sel = $("machine");
  const names = S.machines.map((m) => m.machine);
  sel.replaceChildren(...names.map((n) => {
    const o = el("option", null, n);
    o.value = n;
    return o;
  }));
  sel.value = S.machine ?? "";
  $("machine-pick").hidden = names.length < 2;
  $("machine-one").hidden = names.length >= 2;
  $("machine-one").textContent = S.machine ?? "no readings yet";
  // more than one machine: the fleet overview (/machines) is where an operator starts
  $("fleet-link").hidden = names.length < 2;
  $("fleet-link").textContent = `all ${names.length} machines`;
}

// --- start / restart ---------------------------------------------------------------

// (Re)load everything for the current machine and resume the stream from the newest row.
async function restart() {
  feed.stop();
  alarms.setMachine(S.machine, false); // the stream's connect reloads them
  S.chartQueue.length = 0;
  saveUrl();
  notice("");
  let sinceId = null;
  try {
    const ans = await getJSON("/api/latest", { machine: S.machine, limit: 1 });
    const r = (ans.readings || [])[0];
    if (r) {
      S.latest = r;
      sinceId = r.id;
      renderLatest(r);
      // The stream resumes after this row, and the history below can miss it: its end is
      // "now" from the Date header, which has whole seconds. Queued, it is drawn either way
      // (twice into one bucket changes nothing).
      S.chartQueue.push(r);
    }
  } catch (err) {
    showError(err);
    if (isUnauthorized(err)) return;
  }
  await loadSeries();
  feed.start(S.machine, sinceId);
}

async function init() {
  buildModel(await loadModel());
  try {
    const ans = await getJSON("/api/machines");
    S.machines = ans.machines || [];
  } catch (err) {
    showError(err);
    if (isUnauthorized(err)) return;
  }
  const names = S.machines.map((m) => m.machine);
  const wanted = new URLSearchParams(location.search).get("machine");
  if (wanted && names.includes(wanted)) S.machine = wanted;
  pickDefault();
  renderMachines();
  await restart();
}

function saveUrl() {
  const q = new URLSearchParams(location.search);
  if (S.machine && S.machines.length > 1) q.set("machine", S.machine);
  else q.delete("machine");
  q.set("range", S.range);
  if (S.range === "custom" && S.custom) {
    q.set("start", iso(S.custom[0]));
    q.set("end", iso(S.custom[1]));
  } else {
    q.delete("start");
    q.delete("end");
  }
  if (S.unzoomed) q.set("from", S.unzoomed);
  else q.delete("from");
  history.replaceState(null, "", `${location.pathname}?${q}`);
}

function setup() {
  $("chart-zone").textContent = `(${zoneLabel()})`;
  $("custom-zone").textContent = zoneLabel();
  const q = new URLSearchParams(location.search);
  const r = q.get("range");
  if (r && RANGES[r]) S.range = r;
  const start = Date.parse(q.get("start") || ""), end = Date.parse(q.get("end") || "");
  if (r === "custom" && end > start) {
    S.range = "custom";
    showCustom(start / 1000, end / 1000);
    if (RANGES[q.get("from")]) S.unzoomed = q.get("from");
  }
  markRange();
  wireRanges();
  $("machine").addEventListener("change", (ev) => {
    S.machine = ev.target.value;
    restart();
  });
  init();
  setInterval(() => {
    $("rate").textContent = rate.rate().toFixed(1);
    // Slide the live window even when no reading arrives.
    if (S.range !== "custom" && buffer) {
      buffer.trim(xRange()[0]);
      scheduleFrame();
    }
  }, 1000);
  setInterval(refreshMachines, 30000); // a new machine shows up in the selector
  // The stream carries the shown machine's alarm events; other machines' come from here.
  setInterval(() => {
    if (S.machines.length > 1 && !document.hidden) alarms.reload();
  }, 15000);
}

setup();
