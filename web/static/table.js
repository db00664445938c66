// /dashboard: the latest readings as a table, newest on top, at most MAX_ROWS rows.
// Rows come from /api/latest, then /events resumes after the newest id shown (and starts
// over when the appliance comes back with a new database: live.js).

import { ApiError, dominantFault, el, faultState, fmtFault, fmtNum, fmtTime, getJSON, tokenForm } from "./api.js";
import { LiveFeed, probeServer } from "./live.js";

const MAX_ROWS = 50;
const FAULTS = Array.from({ length: 8 }, (_, i) => `fault${i}`);
const $ = (id) => document.getElementById(id);
let thresholds = { warning: 30, alarm: 60 };
let pending = [];
let frame = 0;

const showToken = tokenForm(() => init());
const feed = new LiveFeed({
  onReading: (r) => {
    pending.push(r);
    if (pending.length > MAX_ROWS) pending = pending.slice(-MAX_ROWS);
    frame ||= requestAnimationFrame(flush);
  },
  onState: (state, detail) => {
    const c = $("conn");
    c.dataset.state = state;
    c.textContent = detail ? `${state} (${detail})` : state;
    if (detail === "read token needed") showToken();
  },
  probe: () => probeServer(null),
  // A new, empty database behind the same address: its rows replace the ones shown.
  onReset: () => {
    pending = [];
    init();
  },
});

function header() {
  const cols = [["id", "l"], ["time", "l"], ["machine", "l"], ["max", ""], ["dominant", "l"],
    ...FAULTS.map((f) => [f, ""]), ["temp.", ""], ["rpm", ""]];
  $("head").replaceChildren(...cols.map(([t, cls]) => {
    const th = el("th", cls, t);
    th.scope = "col";
    return th;
  }));
}

function row(r) {
  const faults = r.faults || {};
  const dom = dominantFault(faults);
  const max = dom ? faults[dom] : NaN;
  const tr = el("tr", `state-${dom ? faultState(max, thresholds) : "normal"}`);
  tr.dataset.id = r.id;
  const feats = r.features || {};
  tr.append(
    el("td", "l", r.id),
    el("td", "l", fmtTime(r.time)),
    el("td", "l name", r.machine),
    el("td", "hot", fmtFault(max)),
    el("td", "l name", dom || "–"),
    ...FAULTS.map((f) => el("td", f === dom ? "hot" : "", fmtFault(faults[f]))),
    el("td", "", fmtNum(feats.Temperature)),
    el("td", "", fmtNum(feats["Rotation Speed"])),
  );
  const name = tr.children[2];
  name.title = r.machine ?? ""; // full name on hover when it is cut off
  return tr;
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
  $("notice").textContent = "";
  try {
    const model = await getJSON("/api/model");
    thresholds = model.thresholds || thresholds;
  } catch {
    // the table still works with default thresholds
  }
  $("thr-warning").textContent = fmtFault(thresholds.warning);
  $("thr-alarm").textContent = fmtFault(thresholds.alarm);
  let sinceId = null;
  try {
    const ans = await getJSON("/api/latest", { limit: MAX_ROWS });
    const rows = ans.readings || []; // newest first
    $("rows").replaceChildren(...rows.map(row));
    $("empty").hidden = rows.length > 0;
    if (rows.length) sinceId = rows[0].id;
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) {
      feed.stop();
      feed.setState("offline", "read token needed");
      showToken(err.message);
      return;
    }
    $("notice").textContent = err instanceof ApiError ? err.message : `Cannot reach the appliance (${err.message}).`;
  }
  feed.start(null, sinceId);
}

$("max-rows").textContent = MAX_ROWS;
header();
init();
