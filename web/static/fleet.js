// /machines: the fleet overview. A tile per machine with its worst state, last seen, active
// alarms, dominant fault and a sparkline; worst first; filtered by name (?q= in the URL).
//
// Data flow: /api/model (catalogue, thresholds) -> /api/fleet?spark= (every machine, its newest
// reading, its alarms and the largest fault per bucket over the hour before that reading, in one
// request) -> /events for every machine. A reading updates its tile and sparkline at once (a new
// machine gets a tile from its first reading); alarm events, reconnects and a 15 s poll re-read
// /api/fleet without sparklines (cheap) for alarms and staleness. Rendering is batched (one
// animation frame, at most every RENDER_MS); staleness is recomputed every second against the
// appliance's clock.

import {
  $, clampFault, dominantFault, el, fmtTime, getJSON, initPage, isUnauthorized, loadModel, serverNow, showError, showFault,
  zoneLabel,
} from "./common.js";
import { LiveFeed } from "./live.js";
import { StatusBanner, ago } from "./status.js";

const SPARK_POINTS = 30;
const SPARK_SECONDS = 3600;
const POLL_MS = 15000;
// The appliance's order (edge/plant/latest.py, Modbus register 8): the worst that applies.
const RANK = { normal: 0, warning: 1, alarm: 2, stale: 3, suspect: 4 };
const LABEL = { normal: "normal", warning: "warning", alarm: "alarm", stale: "stale", suspect: "suspect data" };
const SVG = "http://www.w3.org/2000/svg";

const S = {
  thresholds: { warning: 30, alarm: 60 },
  catalogue: new Map(), // fault -> {category, ...}
  staleAfter: null, // the appliance's --stale-after (s), for a machine it has not listed yet
  machines: new Map(), // name -> machine record (below)
  filter: "",
  frame: 0,
  order: "", // the tiles' order last drawn
};

const TITLE = document.title;
const status = new StatusBanner();
const feed = new LiveFeed({
  onReading,
  onAlarm: () => reloadSoon(),
  onConnect: () => reloadSoon(),
  onReset: () => {
    S.machines.clear();
    $("tiles").replaceChildren();
    init();
  },
  onGap: () => loadFleet(true).catch((err) => showError(err)), // missed readings: sparklines again
});
initPage({ onToken: () => init(), onUnauthorized: () => feed.needToken() });

// --- one machine ------------------------------------------------------------------------

// A machine: {name, seen (ms, appliance clock, arrival), limit (s), latest, alarms, spark, tile}.
function record(name) {
  let m = S.machines.get(name);
  if (!m) {
    m = { name, seen: null, limit: null, latest: null, alarms: { count: 0, unacked: 0, severity: null },
      spark: null, sparkDirty: true, tile: buildTile(name) };
    S.machines.set(name, m);
  }
  return m;
}

function buildTile(name) {
  const li = el("li", "tile");
  li.dataset.machine = name;
  const a = el("a", "tile-link");
  a.href = `/?machine=${encodeURIComponent(name)}`;
  const head = el("div", "tile-head");
  const title = el("span", "tile-name", name);
  title.title = name;
  const alarms = el("span", "tile-alarms");
  head.append(title, alarms);
  const state = el("span", "tile-state");
  const fault = el("div", "tile-fault");
  const cat = el("span", "tile-cat");
  const value = el("span", "tile-value mono");
  fault.append(cat, value);
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("class", "spark");
  svg.setAttribute("viewBox", `0 0 ${SPARK_POINTS} 100`);
  svg.setAttribute("preserveAspectRatio", "none");
  svg.setAttribute("aria-hidden", "true");
  const path = document.createElementNS(SVG, "path");
  path.setAttribute("vector-effect", "non-scaling-stroke");
  const warn = document.createElementNS(SVG, "line");
  warn.setAttribute("class", "spark-warn");
  const alarm = document.createElementNS(SVG, "line");
  alarm.setAttribute("class", "spark-alarm");
  for (const line of [warn, alarm]) {
    line.setAttribute("x1", "0");
    line.setAttribute("x2", String(SPARK_POINTS));
    line.setAttribute("vector-effect", "non-scaling-stroke");
  }
  svg.append(warn, alarm, path);
  const seen = el("div", "tile-seen");
  const ago_ = el("span", "tile-ago");
  const when = el("time", "tile-when mono");
  seen.append(ago_, state, when);
  a.append(head, fault, svg, seen);
  li.append(a);
  return { li, a, alarms, state, cat, value, svg, path, warn, alarm, ago: ago_, when };
}

// The machine's worst state now: suspect data > stale > alarm > warning > normal.
function worst(m) {
  const q = m.latest && m.latest.quality;
  if (q && q.status === "suspect") return "suspect";
  if (isStale(m)) return "stale";
  const peak = peakOf(m.latest);
  if (m.alarms.severity === "alarm" || (peak !== null && peak >= S.thresholds.alarm)) return "alarm";
  if (m.alarms.count > 0 || (peak !== null && peak >= S.thresholds.warning)) return "warning";
  return "normal";
}

// Silent past its threshold (arrival, the appliance's clock), or its newest reading's own time
// is that old (a sensor sending old data): what edge/plant/latest.py calls stale.
function isStale(m) {
  const limit = m.limit ?? S.staleAfter;
  if (!limit) return false;
  const now = serverNow();
  if (m.seen !== null && (now - m.seen) / 1000 > limit) return true;
  const t = m.latest ? Date.parse(m.latest.time) : NaN;
  return !Number.isNaN(t) && (now - t) / 1000 > limit;
}

function peakOf(r) {
  const faults = r && r.faults;
  const dom = dominantFault(faults);
  return dom === null ? null : faults[dom];
}

// Writes only what changed: 200 tiles are redrawn every second.
function set(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

function renderTile(m) {
  const t = m.tile;
  const st = worst(m);
  if (t.li.dataset.state !== st) t.li.dataset.state = st;
  const id = m.latest ? String(m.latest.id) : "";
  if (t.li.dataset.id !== id) t.li.dataset.id = id; // the newest reading shown (the soak test reads it)
  t.li.classList.toggle("is-stale", isStale(m));
  set(t.state, LABEL[st]);
  const n = m.alarms.count;
  set(t.alarms, n ? `${n} alarm${n === 1 ? "" : "s"}` : "");
  t.alarms.title = n ? `${n} active (${m.alarms.unacked} not acknowledged)` : "";
  t.alarms.dataset.count = String(n);
  const faults = m.latest && m.latest.faults;
  const dom = dominantFault(faults);
  if (dom !== null) {
    const v = faults[dom];
    const cat = (S.catalogue.get(dom) || {}).category || dom;
    set(t.cat, cat);
    t.cat.title = `${cat} (${dom})`;
    showFault(t.value, v); // 0 to 100, the model's own value in its title when clamped
    t.li.dataset.fault = dom;
    t.cat.parentNode.classList.toggle("is-low", v < S.thresholds.warning);
  } else {
    set(t.cat, "no reading yet");
    showFault(t.value, null).textContent = "";
  }
  renderSeen(m);
  if (m.sparkDirty) renderSpark(m);
}

function renderSeen(m) {
  const t = m.tile;
  const now = serverNow();
  const s = m.seen === null ? null : (now - m.seen) / 1000;
  const limit = m.limit ?? S.staleAfter;
  const own = m.latest ? (now - Date.parse(m.latest.time)) / 1000 : NaN;
  // heard lately but its data is old (a sensor sending an old buffer): say how old the data is
  const oldData = limit && own > limit && s !== null && s <= limit;
  set(t.ago, s === null ? "never seen" : oldData ? `data ${ago(own).replace(" ago", " old")}` : ago(s));
  if (m.seen !== null) {
    const abs = fmtTime(new Date(m.seen));
    set(t.when, abs);
    t.when.dateTime = new Date(m.seen).toISOString();
    t.ago.title = `last seen ${abs}`;
    t.when.title = m.latest ? `last seen ${abs}; newest reading's own time ${fmtTime(m.latest.time)}` : `last seen ${abs}`;
  }
}

function renderSpark(m) {
  m.sparkDirty = false;
  const t = m.tile;
  const y = (v) => (100 - clampFault(v)).toFixed(1);
  t.warn.setAttribute("y1", y(S.thresholds.warning));
  t.warn.setAttribute("y2", y(S.thresholds.warning));
  t.alarm.setAttribute("y1", y(S.thresholds.alarm));
  t.alarm.setAttribute("y2", y(S.thresholds.alarm));
  const peak = m.spark ? m.spark.peak : [];
  let d = "";
  let open = false;
  peak.forEach((v, i) => {
    if (v === null || v === undefined) {
      open = false; // a gap stays a gap
      return;
    }
    const x = (i + 0.5).toFixed(1);
    // a lone point still shows: a short flat stroke across its bucket
    const alone = !open && (peak[i + 1] === null || peak[i + 1] === undefined);
    d += alone ? `M${i} ${y(v)}H${i + 1}` : `${open ? "L" : "M"}${x} ${y(v)}`;
    open = !alone;
  });
  t.path.setAttribute("d", d);
  t.svg.dataset.points = String(peak.filter((v) => v !== null && v !== undefined).length);
}

// A live reading at time t joins its bucket; past the window's end the window slides on.
function sparkAdd(m, r) {
  const t = Date.parse(r.time);
  const v = peakOf(r);
  if (Number.isNaN(t) || v === null) return;
  if (!m.spark) {
    // a new machine's first hour ends with this reading, as the server would place it
    const bucket = (SPARK_SECONDS / SPARK_POINTS) * 1000;
    m.spark = { start: t + 1000 - SPARK_SECONDS * 1000, bucket, peak: new Array(SPARK_POINTS).fill(null) };
  }
  const sp = m.spark;
  let k = Math.floor((t - sp.start) / sp.bucket);
  if (k < 0) return;
  if (k >= sp.peak.length) {
    const shift = k - sp.peak.length + 1;
    sp.peak = sp.peak.slice(Math.min(shift, sp.peak.length));
    while (sp.peak.length < SPARK_POINTS) sp.peak.push(null);
    sp.start += shift * sp.bucket;
    k = sp.peak.length - 1;
  }
  sp.peak[k] = sp.peak[k] === null ? v : Math.max(sp.peak[k], v);
  m.sparkDirty = true;
}

// --- the grid ---------------------------------------------------------------------------

function sorted() {
  return [...S.machines.values()].map((m) => ({ m, st: RANK[worst(m)], peak: peakOf(m.latest) ?? -Infinity }))
    .sort((a, b) => b.st - a.st || b.m.alarms.count - a.m.alarms.count || b.peak - a.peak ||
      (a.m.name < b.m.name ? -1 : a.m.name > b.m.name ? 1 : 0))
    .map((x) => x.m);
}

function matches(name) {
  return !S.filter || name.toLowerCase().includes(S.filter.toLowerCase());
}

function render() {
  S.frame = 0;
  lastRender = performance.now();
  const list = sorted();
  const order = list.map((m) => m.name).join("\n");
  if (order !== S.order) {
    $("tiles").append(...list.map((m) => m.tile.li)); // moves each node once, in order
    S.order = order;
  }
  const counts = { normal: 0, warning: 0, alarm: 0, stale: 0, suspect: 0 };
  let shownCount = 0;
  let alarms = 0;
  for (const m of list) {
    renderTile(m);
    counts[worst(m)] += 1;
    alarms += m.alarms.count;
    const show = matches(m.name);
    m.tile.li.hidden = !show;
    if (show) shownCount += 1;
  }
  $("tiles").classList.toggle("dense", list.length > 40);
  $("empty").hidden = list.length > 0;
  const parts = ["suspect", "stale", "alarm", "warning", "normal"].filter((k) => counts[k])
    .map((k) => `${counts[k]} ${LABEL[k]}`);
  const total = `${list.length} machine${list.length === 1 ? "" : "s"}`;
  const filtered = S.filter ? `showing ${shownCount} of ${total} matching “${S.filter}”` : total;
  set($("summary"), list.length ? `${filtered} · ${parts.join(" · ")}` : "No machines yet.");
  $("summary").dataset.shown = String(shownCount);
  const badge = $("alarm-count");
  badge.dataset.count = String(alarms);
  set(badge, alarms === 0 ? "no alarms" : `${alarms} active alarm${alarms === 1 ? "" : "s"}`);
  document.title = alarms ? `(${alarms}) ${TITLE}` : TITLE;
  set($("zone-name"), zoneLabel());
}

// At most one redraw per RENDER_MS: 200 machines sending every second are 200 readings a second,
// and a tile redrawn 4 times a second looks as live as one redrawn 60 times.
const RENDER_MS = 250;
let lastRender = -Infinity;
let renderTimer = 0;
function renderSoon() {
  if (S.frame || renderTimer) return;
  const wait = lastRender + RENDER_MS - performance.now();
  if (wait <= 0) S.frame = requestAnimationFrame(render);
  else renderTimer = setTimeout(() => {
    renderTimer = 0;
    S.frame = requestAnimationFrame(render);
  }, wait);
}

// --- loading and live -------------------------------------------------------------------

function take(answer, withSpark) {
  if (Number.isFinite(answer.stale_after_s)) S.staleAfter = answer.stale_after_s;
  const names = new Set();
  for (const f of answer.machines || []) {
    names.add(f.machine);
    const m = record(f.machine);
    const seen = Date.parse(f.last_seen || "");
    // a reading this page saw live may be newer than the answer
    if (!Number.isNaN(seen) && (m.seen === null || seen > m.seen)) m.seen = seen;
    m.limit = f.stale_after_s || null;
    if (f.latest && (!m.latest || Number(f.latest.id) >= Number(m.latest.id))) m.latest = f.latest;
    m.alarms = f.alarms || m.alarms;
    if (withSpark && f.spark) {
      m.spark = { start: Date.parse(f.spark.start), bucket: f.spark.bucket_s * 1000, peak: f.spark.peak.slice() };
      m.sparkDirty = true;
    }
  }
  // machines retention removed: gone from the appliance, gone from the page
  for (const [name, m] of S.machines) {
    if (!names.has(name)) {
      m.tile.li.remove();
      S.machines.delete(name);
    }
  }
  S.order = "";
}

// The newest row id of the answer: the stream resumes after it.
async function loadFleet(withSpark) {
  const params = withSpark ? { spark: SPARK_POINTS, spark_s: SPARK_SECONDS } : {};
  const answer = await getJSON("/api/fleet", params);
  take(answer, withSpark);
  renderSoon();
  return Math.max(0, ...(answer.machines || []).map((f) => Number(f.last_id) || 0));
}

let reloadTimer = 0;
let reloading = null;
function reloadSoon() {
  clearTimeout(reloadTimer);
  reloadTimer = setTimeout(() => {
    reloading ??= loadFleet(false).catch((err) => showError(err)).finally(() => { reloading = null; });
  }, 300);
}

function onReading(r) {
  if (!r.machine) return;
  const isNew = !S.machines.has(r.machine);
  const m = record(r.machine);
  m.seen = serverNow();
  status.heard(r.machine);
  if (!m.latest || Number(r.id) > Number(m.latest.id)) m.latest = r;
  sparkAdd(m, r);
  if (isNew) {
    S.order = "";
    reloadSoon(); // its threshold and alarms come from the appliance
  }
  renderSoon();
}

async function init() {
  const model = await loadModel();
  S.thresholds = model.thresholds || S.thresholds;
  S.catalogue = new Map((model.catalogue || []).map((c) => [c.fault, c]));
  let sinceId = null;
  try {
    sinceId = await loadFleet(true);
  } catch (err) {
    showError(err);
    if (isUnauthorized(err)) return;
  }
  feed.start(null, sinceId);
}

function setup() {
  // offline: every tile's values may be old, so the whole grid is greyed (the banner says why)
  document.addEventListener("fdedge:connection", (ev) => {
    $("tiles").classList.toggle("is-offline", ev.detail.state === "offline");
  });
  const q = new URLSearchParams(location.search).get("q") || "";
  S.filter = q;
  const input = $("filter");
  input.value = q;
  input.addEventListener("input", () => {
    S.filter = input.value.trim();
    const params = new URLSearchParams(location.search);
    if (S.filter) params.set("q", S.filter);
    else params.delete("q");
    const search = params.toString();
    history.replaceState(null, "", `${location.pathname}${search ? `?${search}` : ""}`);
    renderSoon();
  });
  init();
  setInterval(renderSoon, 1000); // "3 min ago" counts on; stale turns stale on time
  setInterval(() => {
    if (!document.hidden) reloadSoon();
  }, POLL_MS);
}

setup();
