// /dashboard: the latest readings as a table, newest on top, at most MAX_ROWS rows.
// Rows come from /api/latest, then /events resumes after the newest id shown (and starts
// over when the appliance comes back with a new database: live.js). One column per fault of
// the model (/api/model).

import {
  $, dominantFault, el, faultState, fmtClock, fmtFault, fmtNum, getJSON, initPage, isUnauthorized, loadModel, notice, showError,
  showFault, zoneLabel,
} from "./common.js";
import { FAULT_UNIT, featureInfo } from "./features.js";
import { LiveFeed } from "./live.js";
import { startAlarmBadge } from "./alarm_badge.js";
import { StatusBanner } from "./status.js";

const MAX_ROWS = 50;
// The features the table shows after the faults: a display choice; their headers say the unit
// (features.js).
const TABLE_FEATURES = ["Temperature", "Rotation Speed"].map((key) => {
  const info = featureInfo(key);
  return [key, `${info.label} (${info.unit})`];
});
// The machine shown (null: every machine), from ?machine= so a filtered table can be shared.
let machine = new URLSearchParams(location.search).get("machine") || null;
let faults = []; // the model's fault names
let thresholds = null; // the model's {warning, alarm}
let pending = [];
let frame = 0;

// Rows of machines silent past their threshold are greyed, with how old their last reading is.
const status = new StatusBanner({ onChange: greyStale });
startAlarmBadge(); // the active-alarm count in the top bar, as on every page
const feed = new LiveFeed({
  onReading: (r) => {
    if (r.machine) status.heard(r.machine);
    if (machine && r.machine !== machine) return; // the stream is filtered too; a late row of another is not shown
    pending.push(r);
    if (pending.length > MAX_ROWS) pending = pending.slice(-MAX_ROWS);
    frame ||= requestAnimationFrame(flush);
  },
  // A new, empty database behind the same address: its rows replace the ones shown.
  onReset: () => {
    pending = [];
    init();
  },
});
initPage({ onToken: () => init(), onUnauthorized: () => feed.needToken() });

function header() {
  const cols = [["id", "l"], [`time (${zoneLabel()})`, "l"], ["machine", "l"], [`max (${FAULT_UNIT})`, ""], ["dominant", "l"],
    ...faults.map((f) => [f, ""]), ...TABLE_FEATURES.map(([, label]) => [label, ""])];
  $("head").replaceChildren(...cols.map(([t, cls]) => {
    const th = el("th", cls, t);
    th.scope = "col";
    return th;
  }));
}

function row(r) {
  const values = r.faults || {};
  const dom = dominantFault(values);
  const max = dom ? values[dom] : NaN;
  const tr = el("tr", `state-${dom ? faultState(max, thresholds) : "normal"}`);
  tr.dataset.id = r.id;
  tr.dataset.machine = r.machine ?? "";
  const feats = r.features || {};
  tr.append(
    el("td", "l", r.id),
    el("td", "l when", fmtClock(r.time)),
    el("td", "l name", r.machine),
    showFault(el("td", "hot"), max),
    el("td", "l name", dom || "–"),
    ...faults.map((f) => showFault(el("td", f === dom ? "hot" : ""), values[f])),
    ...TABLE_FEATURES.map(([key]) => el("td", "", fmtNum(feats[key]))),
  );
  const name = tr.children[2];
  name.title = r.machine ?? ""; // full name on hover when it is cut off
  markStale(tr);
  return tr;
}

function markStale(tr) {
  const stale = status.isStale(tr.dataset.machine);
  if (tr.classList.contains("is-stale") !== stale) tr.classList.toggle("is-stale", stale);
  const name = tr.children[2];
  const seen = stale ? ` (stale: ${status.lastReading(tr.dataset.machine)})` : "";
  if (name.title !== tr.dataset.machine + seen) name.title = tr.dataset.machine + seen;
}

function greyStale() {
  for (const tr of $("rows").rows) markStale(tr);
}

// Newest on top; batch per frame so a replay of many rows is one DOM update.
function flush() {
  frame = 0;
  const body = $("rows");
  const frag = document.createDocumentFragment();
  for (let i = pending.length - 1; i >= 0; i--) frag.append(row(pending[i]));
  pending = [];
  body.prepend(frag);
  while (body.rows.length > MAX_ROWS) body.lastElementChild.remove();
  $("empty").hidden = body.rows.length > 0;
}

async function init() {
  const model = await loadModel();
  faults = model.faults || [];
  thresholds = model.thresholds;
  header();
  $("thr-warning").textContent = fmtFault(thresholds.warning);
  $("thr-alarm").textContent = fmtFault(thresholds.alarm);
  notice("");
  let sinceId = null;
  try {
    const ans = await getJSON("/api/latest", { limit: MAX_ROWS, machine });
    const rows = ans.readings || []; // newest first
    $("rows").replaceChildren(...rows.map(row));
    $("empty").hidden = rows.length > 0;
    if (rows.length) sinceId = rows[0].id;
  } catch (err) {
    showError(err);
    if (isUnauthorized(err)) return;
  }
  feed.start(machine, sinceId);
  loadMachines();
}

// The machine filter: every machine the appliance knows, the chosen one kept (and in the URL).
async function loadMachines() {
  const sel = $("table-machine");
  let names = [];
  try {
    names = ((await getJSON("/api/machines")).machines || []).map((m) => m.machine);
  } catch (err) {
    return; // the table still shows every machine
  }
  if (machine && !names.includes(machine)) names.push(machine);
  sel.replaceChildren(sel.firstElementChild, ...names.map((n) => {
    const o = el("option", null, n);
    o.value = n;
    return o;
  }));
  sel.value = machine || "";
}

$("table-machine").addEventListener("change", (ev) => {
  machine = ev.target.value || null;
  const url = new URL(location.href);
  if (machine) url.searchParams.set("machine", machine);
  else url.searchParams.delete("machine");
  history.replaceState(null, "", url);
  pending = [];
  feed.stop();
  init();
});

$("max-rows").textContent = MAX_ROWS;
init();
