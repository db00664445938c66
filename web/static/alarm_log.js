// Alarm log (/alarms): every alarm, filtered by machine, fault, state, acknowledgement and the
// time it was raised, newest first, paged back 200 at a time, and the same selection as CSV
// (/api/alarms.csv). The filters live in the URL, so a filtered log can be shared and reloaded.

import {
  $, el, fmtTime, getJSON, initPage, inputTime, isUnauthorized, loadModel, parseInputTime, showError, showFault,
  withParams, zoneLabel,
} from "./common.js";
import { startAlarmBadge } from "./alarm_badge.js";
import { StatusBanner } from "./status.js";

new StatusBanner(); // stale machines and an unreachable appliance, as on every page
startAlarmBadge();

const PAGE = 200;
const HEADS = ["Raised", "Machine", "Fault", "Severity", "State", "Peak (0–100)", "Cleared", "Acknowledged"];
const S = { catalogue: new Map(), rows: [], oldest: null, seq: 0 };
const FIELDS = ["machine", "fault", "state", "acked", "start", "end"];

// A datetime-local value (the page's zone) as ISO UTC for the API; "" stays "".
function isoOf(value) {
  const ms = parseInputTime(value);
  return Number.isNaN(ms) ? "" : new Date(ms).toISOString().replace(".000Z", "Z");
}

function filters() {
  const f = {
    machine: $("f-machine").value.trim(), fault: $("f-fault").value, state: $("f-state").value,
    acked: $("f-acked").value, start: isoOf($("f-start").value), end: isoOf($("f-end").value),
  };
  for (const k of FIELDS) if (!f[k] || (k === "state" && f[k] === "all")) delete f[k];
  return f;
}

function fromUrl() {
  const q = new URLSearchParams(location.search);
  $("f-machine").value = q.get("machine") || "";
  $("f-fault").value = q.get("fault") || "";
  $("f-state").value = q.get("state") || "all";
  $("f-acked").value = q.get("acked") || "";
  $("f-start").value = q.get("start") ? inputTime(q.get("start")) : ""; // the URL keeps ISO UTC
  $("f-end").value = q.get("end") ? inputTime(q.get("end")) : "";
}

function describe(f, shown, more) {
  const parts = [];
  if (f.machine) parts.push(`machine ${f.machine}`);
  if (f.fault) parts.push(f.fault);
  if (f.state) parts.push(f.state);
  if (f.acked) parts.push(f.acked === "true" ? "acknowledged" : "not acknowledged");
  if (f.start) parts.push(`raised from ${fmtTime(f.start)}`);
  if (f.end) parts.push(`before ${fmtTime(f.end)}`);
  const what = `${shown}${more ? "+" : ""} alarm${shown === 1 ? "" : "s"}`;
  return parts.length ? `${what}: ${parts.join(", ")}` : `${what}, newest first`;
}

function row(a) {
  const tr = el("tr");
  const active = a.state === "active";
  tr.className = `sev-${a.severity}${active ? " is-active" : " is-cleared"}${a.acked ? " is-acked" : ""}`;
  tr.dataset.id = a.id;
  const cat = S.catalogue.get(a.fault) || {};
  const cell = (text, cls) => {
    const td = el("td", cls, text);
    td.dataset.label = HEADS[tr.children.length]; // a phone shows each row as a card, labelled
    tr.append(td);
    return td;
  };
  cell(fmtTime(a.raised_at), "l");
  cell(a.machine, "l name");
  cell(a.kind === "stale" ? "stale (silent)" : `${a.category || cat.category || a.fault} (${a.fault})`, "l");
  cell(a.severity, "l");
  const state = cell(active ? "active" : "cleared", "l");
  if (active && !a.acked) state.append(" ", el("span", "badge new-badge", "new"));
  const peak = cell(a.kind === "stale" ? "–" : "");
  if (a.kind !== "stale") showFault(peak, Number(a.peak));
  cell(active ? "–" : fmtTime(a.cleared_at), "l");
  const ack = cell(a.acked ? `${a.acked_by} at ${fmtTime(a.acked_at)}` : "–", "l ack");
  if (a.ack_note) ack.append(el("q", "ack-note", a.ack_note));
  return tr;
}

async function load(more = false) {
  const f = filters();
  const seq = ++S.seq;
  const params = { ...f, limit: PAGE, ...(more && S.oldest ? { before: S.oldest } : {}) };
  try {
    const ans = await getJSON("/api/alarms", params);
    if (seq !== S.seq) return; // a newer query was started meanwhile
    const got = ans.alarms || [];
    if (!more) {
      S.rows = [];
      $("log-rows").replaceChildren();
    }
    S.rows.push(...got);
    S.oldest = got.length ? got[got.length - 1].id : S.oldest;
    $("log-rows").append(...got.map(row));
    $("older").hidden = got.length < PAGE;
    $("log-summary").textContent = S.rows.length ? describe(f, S.rows.length, got.length === PAGE)
      : "No alarms match.";
  } catch (err) {
    showError(err);
    if (!isUnauthorized(err)) $("log-summary").textContent = "The log could not be read.";
  }
  $("csv").href = withParams("/api/alarms.csv", f);
}

function apply(ev) {
  ev?.preventDefault();
  const f = filters();
  if (f.start && f.end && f.end <= f.start) {
    $("log-summary").textContent = "The end is before the start.";
    return;
  }
  history.replaceState(null, "", withParams("/alarms", f));
  load();
}

initPage({ onToken: () => load() });

async function init() {
  $("zone-name").textContent = zoneLabel();
  fromUrl();
  $("filters").addEventListener("submit", apply);
  for (const id of ["f-fault", "f-state", "f-acked"]) $(id).addEventListener("change", apply);
  $("older").addEventListener("click", () => load(true));
  load();
  const model = await loadModel();
  for (const c of model.catalogue || []) {
    S.catalogue.set(c.fault, c);
    const opt = el("option", null, `${c.category || c.fault} (${c.fault})`);
    opt.value = c.fault;
    $("f-fault").append(opt);
  }
  $("f-fault").value = new URLSearchParams(location.search).get("fault") || "";
  try {
    const machines = await getJSON("/api/machines");
    $("machines").replaceChildren(...(machines.machines || []).map((m) => {
      const o = el("option");
      o.value = m.machine;
      return o;
    }));
  } catch (err) {
    showError(err);
  }
}

init();
