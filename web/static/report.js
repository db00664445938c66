// Report page: count the matching rows (/api/count), then download the CSV
// (/generate_csv, streamed by the server straight to disk via a plain navigation).
// Counting first turns "nothing matches" and bad input into a message on the page
// instead of a JSON error document replacing it.

import {
  $, el, getJSON, initPage, inputTime, isUnauthorized, loadModel, serverNow, showError, timeZone, withParams, zoneLabel,
} from "./common.js";
import { startAlarmBadge } from "./alarm_badge.js";
import { labelRangeCard } from "./label_range.js";
import { StatusBanner } from "./status.js";

new StatusBanner(); // stale machines and an unreachable appliance, as on every page
startAlarmBadge(); // the active-alarm count in the top bar, as on every page

const form = $("report");
let countSeq = 0; // answers can come back out of order; only the newest is shown

// The page's zone (common.js) as the appliance takes it: the browser's IANA zone for local
// time, nothing for UTC (the server's default, FD-REST's days).
const LOCAL_ZONE = (() => {
  try {
    return Intl.DateTimeFormat().resolvedOptions().timeZone || "";
  } catch {
    return "";
  }
})();
const tz = () => (timeZone() === "UTC" ? "" : LOCAL_ZONE);

function params() {
  return {
    start: $("start").value,
    end: $("end").value,
    threshold: $("threshold").value.trim(),
    fault: $("fault").value,
    machine: $("machine").value,
    tz: tz(),
    offset: $("offset").checked ? "1" : "",
  };
}

// Which zone the dates are read in, said beside the form and in the offset option.
function showZone() {
  const now = new Date(serverNow());
  const name = timeZone() === "UTC" ? "UTC" : `local time, ${zoneLabel(now)}${LOCAL_ZONE ? ` (${LOCAL_ZONE})` : ""}`;
  $("report-zone").textContent = name;
  $("offset-zone").textContent = name;
  const off = zoneLabel(now) === "UTC" ? "+00:00" : zoneLabel(now).slice(3).replace("−", "-");
  $("offset-example").textContent = `${inputTime(now).slice(0, 16)}:00${off}`;
}

// Client-side checks for what the browser already knows; the server checks again.
function validate(p) {
  if (!p.start || !p.end) return "Choose a start and an end date.";
  if (p.start > p.end) return "The start date is after the end date.";
  if (p.threshold !== "" && !Number.isFinite(Number(p.threshold))) return "The threshold must be a number.";
  if ($("threshold").validity.badInput) return "The threshold must be a number.";
  return null;
}

function show(kind, text) {
  const r = $("result");
  r.className = `result ${kind}`;
  r.textContent = text;
}

function describe(p) {
  const parts = [`${p.start} to ${p.end} (${p.tz || "UTC"})`];
  if (p.threshold !== "") parts.push(`${p.fault || "largest fault"} ≥ ${p.threshold}`);
  else if (p.fault) parts.push(p.fault);
  if (p.machine) parts.push(`machine ${p.machine}`);
  return parts.join(", ");
}

// Returns the count, or null after showing why there is none.
async function count() {
  const p = params();
  const bad = validate(p);
  const seq = ++countSeq;
  if (bad) {
    $("count").textContent = "";
    show("error", bad);
    return null;
  }
  $("count").textContent = "counting…";
  try {
    const ans = await getJSON("/api/count", { ...p, offset: "" }); // the format does not change the count
    if (seq !== countSeq) return null;
    const n = ans.count;
    $("count").textContent = `${n.toLocaleString()} matching row${n === 1 ? "" : "s"}`;
    if (n === 0) show("info", `No readings match (${describe(p)}).`);
    else show("", "");
    $("download").disabled = n === 0;
    return n;
  } catch (err) {
    if (seq !== countSeq) return null;
    $("count").textContent = "";
    showError(err, (text) => show("error", text));
    return null;
  }
}

let debounce = 0;
function recount() {
  clearTimeout(debounce);
  $("download").disabled = false;
  debounce = setTimeout(count, 300);
}

async function download(ev) {
  ev.preventDefault();
  clearTimeout(debounce);
  const n = await count();
  if (!n) return;
  const p = params();
  const a = el("a");
  a.href = withParams("/generate_csv", p);
  a.download = `fdedge_${p.start}_${p.end}.csv`;
  document.body.append(a);
  a.click();
  a.remove();
  show("ok", `Downloading ${n.toLocaleString()} row${n === 1 ? "" : "s"} (${describe(p)}).`);
}

// A refilled <select> keeps the operator's choice when it is still there.
function reselect(sel, value) {
  if ([...sel.options].some((o) => o.value === value)) sel.value = value;
}

// The model's faults (with their catalogue category) and the machines seen.
async function loadChoices() {
  const model = await loadModel((text) => show("error", text));
  const category = new Map((model.catalogue || []).map((c) => [c.fault, c.category]));
  if (!$("label-range")) labelRangeCard(model); // the labelling card, once the faults are known
  const faults = $("fault");
  const chosen = faults.value;
  faults.replaceChildren(faults.firstElementChild, ...(model.faults || []).map((f) => {
    const o = el("option", null, category.has(f) ? `${f} · ${category.get(f)}` : f);
    o.value = f;
    return o;
  }));
  reselect(faults, chosen);
  try {
    const ans = await getJSON("/api/machines");
    const sel = $("machine");
    const picked = sel.value;
    sel.replaceChildren(sel.firstElementChild, ...(ans.machines || []).map((m) => {
      const o = el("option", null, m.machine);
      o.value = m.machine;
      return o;
    }));
    reselect(sel, picked);
  } catch (err) {
    if (isUnauthorized(err)) showError(err);
  }
}

const MB = 1e6;
const bytes = (n) => (n === null || n === undefined ? "not known here"
  : n >= 1e9 ? `${(n / 1e9).toFixed(2)} GB` : n >= MB ? `${(n / MB).toFixed(1)} MB` : `${Math.round(n / 1e3)} kB`);

function lifeText(days) {
  if (!days) return "known after a minute of running";
  if (days > 3650) return `more than 10 years (${Math.round(days / 365)} years)`;
  return days > 730 ? `about ${(days / 365).toFixed(1)} years` : `about ${Math.round(days)} days`;
}

// The database's size and what it costs the card (/api/storage).
async function loadStorage() {
  let s;
  try {
    s = await getJSON("/api/storage");
  } catch (err) {
    if (isUnauthorized(err)) showError(err);
    return;
  }
  const w = s.wear || {};
  const facts = [
    ["Database", `${bytes(s.file_bytes)} + WAL ${bytes(s.wal_bytes)}${s.cap_bytes ? ` of at most ${bytes(s.cap_bytes)}` : ""}`],
    ["Readings stored", Number(s.readings).toLocaleString()],
    ["Free inside the file", `${bytes(s.free_pages * s.page_bytes)} (reused first${s.auto_vacuum === "incremental" ? "; retention hands it back" : ""})`],
    ["Written since start", `${bytes(w.bytes_written)}${w.bytes_per_reading ? `, ${Math.round(w.bytes_per_reading).toLocaleString()} bytes per reading` : ""}`],
    ["Written per day", w.bytes_per_day ? bytes(w.bytes_per_day) : "known after a minute of running"],
    ["Card", `${bytes(w.card_bytes)}, ${Number(w.card_pe_cycles).toLocaleString()} program/erase cycles`],
    ["Estimated card life", lifeText(w.card_life_days)],
    ["Integrity check", s.integrity ? `${s.integrity.state}${s.integrity.detail ? ` (${s.integrity.detail})` : ""}` : "–"],
    ["Rollups", s.rollups.ready ? "ready" : `building from earlier readings (id ${s.rollups.backfill_next_id.toLocaleString()} of ${s.rollups.backfill_end_id.toLocaleString()})`],
  ];
  const uplink = await uplinkFact();
  if (uplink) facts.push(uplink);
  $("storage").replaceChildren(...facts.flatMap(([k, v]) => [el("dt", null, k), el("dd", null, v)]));
  $("storage").classList.toggle("bad", s.integrity && s.integrity.state === "corrupt");
}

// The uplink to a central broker (/api/uplink): connected or not, and how far behind, in readings and seconds.
async function uplinkFact() {
  let u;
  try {
    u = await getJSON("/api/uplink");
  } catch (err) {
    return null;
  }
  if (!u.enabled) return null;
  const behind = u.lag_rows
    ? `${Number(u.lag_rows).toLocaleString()} readings behind (${Math.round(u.lag_seconds).toLocaleString()} s)`
    : "nothing waiting";
  const skipped = u.skipped_rows.backlog + u.skipped_rows.retention;
  return ["Uplink", `${u.connected ? "connected to" : `${u.state}:`} ${u.broker} as ${u.appliance_id}; ${behind}` +
    (skipped ? `; ${skipped.toLocaleString()} readings skipped (backlog bound or retention)` : "")];
}

initPage({
  onToken: () => {
    loadChoices();
    count();
    loadStorage();
  },
});
loadStorage();
setInterval(loadStorage, 15000); // the uplink's lag and the card's figures move while the page is open

// Default: the last 7 days, in the page's zone like the dates sent.
const today = new Date(serverNow());
$("end").value = inputTime(today).slice(0, 10);
$("start").value = inputTime(new Date(today.getTime() - 6 * 86400e3)).slice(0, 10);
showZone();

form.addEventListener("submit", download);
form.addEventListener("input", recount);
form.addEventListener("change", recount);
$("count-btn").addEventListener("click", () => count());
loadChoices().then(count);
