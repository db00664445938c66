// Models page: the store's versions (GET /api/models), a shadow started or stopped, the shadow
// compared with the active model (GET /api/models/{version}/compare), and a promotion with that
// evidence on screen. Every /api/models* call takes the admin token as a header.

import { $, el, errorText, fetchJSON, fmtNum, fmtTime, initPage, withParams } from "./common.js";
import { startAlarmBadge } from "./alarm_badge.js";
import { StatusBanner } from "./status.js";

new StatusBanner();
startAlarmBadge(); // the active-alarm count in the top bar, as on every page
initPage();

const KEY = "fdedge_admin_token"; // sessionStorage: this tab only
const admin = () => sessionStorage.getItem(KEY) || "";

function show(kind, text) {
  const r = $("result");
  r.className = `result ${kind}`;
  r.textContent = text;
}

const call = (path, method = "GET") =>
  fetchJSON(path, { method, headers: { Authorization: `Bearer ${admin()}` } });

function roleOf(m) {
  return m.active ? "active" : m.shadow ? "shadow" : m.previous ? "previous" : "";
}

function button(text, action) {
  const b = el("button", "", text);
  b.type = "button";
  b.addEventListener("click", action);
  return b;
}

async function act(path, done) {
  try {
    const answer = await call(path, "POST");
    show("ok", done(answer));
    await load();
  } catch (err) {
    show("error", errorText(err));
  }
}

function row(m) {
  const tr = el("tr");
  tr.dataset.version = m.version;
  tr.append(el("td", "mono", m.version), el("td", "", m.name), el("td", "", m.created || ""), el("td", "", roleOf(m)));
  const actions = el("td");
  if (!m.active) {
    if (m.shadow) actions.append(button("Stop shadow", () => act("/api/models/shadow/off", () => "Shadow stopped.")));
    else actions.append(button("Shadow", () => act(`/api/models/${m.version}/shadow`, (a) => `Shadow: ${a.shadow}.`)));
    actions.append(button("Activate", () => {
      if (confirm(`Activate ${m.version}? It answers every reading from now on.`)) {
        act(`/api/models/${m.version}/activate`, (a) => `Active: ${a.active}.`);
      }
    }));
  }
  tr.append(actions);
  return tr;
}

function showStatus(s) {
  $("shadow-status").textContent = s
    ? `Shadow ${s.version}: ${s.scored} readings scored, ${s.dropped} dropped from the queue (${s.caught_up} read back), ${s.errors} errors.`
    : "No shadow is scoring.";
}

async function load() {
  if (!admin()) return;
  let listing;
  try {
    listing = await call("/api/models");
  } catch (err) {
    show("error", errorText(err));
    return;
  }
  $("admin-form").hidden = true;
  const body = $("versions").querySelector("tbody");
  body.replaceChildren(...listing.versions.map(row));
  $("versions").hidden = false;
  showStatus(listing.shadow_status);
  const select = $("compare-version");
  const candidates = listing.versions.filter((m) => !m.active);
  const keep = select.value;
  select.replaceChildren(...candidates.map((m) => {
    const o = el("option", "", `${m.version} ${m.name}${m.shadow ? " (shadow)" : ""}`);
    o.value = m.version;
    return o;
  }));
  select.value = keep || (listing.shadow || (candidates[0] && candidates[0].version) || "");
  $("compare-card").hidden = candidates.length === 0;
  if (listing.shadow && !keep) await compare();
}

const pct = (v) => (v === null || v === undefined ? "–" : `${(100 * v).toFixed(1)} %`);
const vector = (v) => v.map((x) => fmtNum(x)).join(" ");
const iso = (local) => (local ? new Date(local).toISOString() : "");

async function compare() {
  const version = $("compare-version").value;
  if (!version) return;
  let r;
  try {
    r = await call(withParams(`/api/models/${version}/compare`, {
      machine: $("compare-machine").value.trim(), start: iso($("compare-start").value), end: iso($("compare-end").value),
      top: 10,
    }));
  } catch (err) {
    $("compare-summary").textContent = errorText(err);
    return;
  }
  if (r.shadow_status) showStatus(r.shadow_status);
  $("compare-summary").textContent = r.readings
    ? `${r.readings} readings scored by both${r.truncated ? " (the newest only)" : ""}; all 8 faults on the same side of both thresholds: ${pct(r.alarm_agreement)}`
    : "No reading scored by both yet: start the shadow and let readings arrive.";
  const pf = $("per-fault");
  pf.querySelector("tbody").replaceChildren(...r.per_fault.map((f) => {
    const tr = el("tr");
    tr.append(el("td", "", f.fault), el("td", "", fmtNum(f.mean_abs_diff)), el("td", "", fmtNum(f.max_abs_diff)),
      el("td", "", pct(f.alarm_agreement)), el("td", "", fmtNum(f.active_mean)), el("td", "", fmtNum(f.shadow_mean)));
    return tr;
  }));
  pf.hidden = r.per_fault.length === 0;
  const d = $("disagreements");
  d.querySelector("tbody").replaceChildren(...r.disagreements.map((x) => {
    const tr = el("tr");
    tr.append(el("td", "mono", String(x.id)), el("td", "", fmtTime(`${x.time.replace(" ", "T")}Z`)), el("td", "", x.machine),
      el("td", "", x.fault), el("td", "", fmtNum(x.max_abs_diff)), el("td", "mono", vector(x.active)),
      el("td", "mono", vector(x.shadow)));
    return tr;
  }));
  d.hidden = r.disagreements.length === 0;
}

$("admin-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  sessionStorage.setItem(KEY, $("admin-token").value.trim());
  $("admin-token").value = "";
  show("", "");
  load();
});
$("compare-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  compare();
});

if (!admin()) show("", "Enter the admin token to manage models.");
load();
