// Alarm panel for the live dashboard: active alarms (severity alarm before warning, newest
// first), then the recently cleared ones, each with the catalogue's symptoms and causes and
// an Acknowledge form. Data: GET /api/alarms (on every (re)connect, hello and "reload"), then
// the `alarm` events of /events, which carry the whole alarm after each change.
//
// Alarm events have no SSE id and a reload can cross an event in flight, so two copies of
// one alarm are merged field by field: every lifecycle step only moves forward (the peak
// only rises, a warning only escalates, clear and ack happen once), so the merge never
// goes back in time whichever copy is older.
//
// Everything from the server goes in with textContent (el()); no HTML is parsed.

import { $, ApiError, el, errorText, fetchJSON, fmtTime, getJSON, isUnauthorized, showError, showFault } from "./common.js";
import { AlarmLabels } from "./labels.js";
import { drivers } from "./features.js";

const CLEARED_MAX = 10; // recently cleared alarms kept for the shown machine
const ACTIVE_MAX = 1000; // the server's page limit; far more than any screen of alarms
const TOKEN_KEY = "fdedge_write_token"; // sessionStorage: this tab only, gone when it closes
const NAME_KEY = "fdedge_ack_by"; // localStorage: who acknowledges, to save typing
const HEADER_SAFE = /^[\x21-\x7E]+$/; // what an Authorization header value can hold as-is

// --- the write token (ingest token): memory + this tab's sessionStorage, never a URL or cookie

let writeToken = null;
try {
  writeToken = sessionStorage.getItem(TOKEN_KEY);
} catch {
  writeToken = null; // storage disabled: memory only
}

function setWriteToken(token) {
  writeToken = token || null;
  try {
    if (writeToken) sessionStorage.setItem(TOKEN_KEY, writeToken);
    else sessionStorage.removeItem(TOKEN_KEY);
  } catch {
    // memory only
  }
}

function rememberedName() {
  try {
    return localStorage.getItem(NAME_KEY) || "";
  } catch {
    return "";
  }
}

function rememberName(name) {
  try {
    localStorage.setItem(NAME_KEY, name);
  } catch {
    // not remembered
  }
}

function postAck(id, body) {
  const headers = { "Content-Type": "application/json" };
  const token = writeToken;
  if (token) headers.Authorization = `Bearer ${token}`;
  return fetchJSON(`/api/alarms/${encodeURIComponent(id)}/ack`, {
    method: "POST",
    headers,
    body: JSON.stringify(body),
    // With a bearer token, no cookie: the read-token cookie must not stand in for it.
    credentials: token ? "omit" : "same-origin",
  });
}

// --- merging two copies of one alarm ----------------------------------------------------

const time = (t) => {
  const v = Date.parse(t || "");
  return Number.isNaN(v) ? 0 : v;
};

function mergeAlarm(a, b) {
  if (!a) return b;
  if (!b) return a;
  const out = { ...a, ...b };
  const group = (keys, has) => {
    const src = has(b) ? b : has(a) ? a : b;
    for (const k of keys) out[k] = src[k] ?? null;
  };
  group(["escalated_at", "escalated_reading"], (x) => x.escalated_at);
  group(["cleared_at", "cleared_reading"], (x) => x.cleared_at);
  group(["acked_at", "acked_by", "ack_note"], (x) => x.acked_at);
  const peak = (Number(a.peak) > Number(b.peak)) ? a : b;
  out.peak = peak.peak;
  out.peak_at = peak.peak_at;
  out.peak_reading = peak.peak_reading;
  out.severity = a.severity === "alarm" || b.severity === "alarm" ? "alarm" : "warning";
  out.state = out.cleared_at ? "cleared" : "active";
  out.acked = Boolean(out.acked_at);
  return out;
}

const isActive = (a) => !a.cleared_at;

// Active: alarm before warning, then newest raised first. Cleared: newest cleared first.
function byActive(a, b) {
  const sev = (b.severity === "alarm") - (a.severity === "alarm");
  return sev || time(b.raised_at) - time(a.raised_at) || b.id - a.id;
}

function byCleared(a, b) {
  return time(b.cleared_at) - time(a.cleared_at) || b.id - a.id;
}

const plural = (n, one, many) => `${n} ${n === 1 ? one : many}`;

const STALE_OBSERVED = "No reading has arrived from this machine for longer than expected.";
const STALE_CAUSES = "The sensor, its network or power supply, or the sending program stopped; or the machine is off.";
const QUALITY_CAUSES = "A stuck, miswired or failing sensor, a unit error, or a machine unlike anything the model was " +
  "trained on: fault alarms ignore these readings until their data quality is ok again.";

// A silence in words: "45 s", "12 min", "3.5 h", "3.2 days".
function duration(seconds) {
  if (!Number.isFinite(seconds)) return "–";
  if (seconds < 60) return `${Math.round(seconds)} s`;
  if (seconds < 3600) return `${Math.round(seconds / 60)} min`;
  if (seconds < 172800) return `${(seconds / 3600).toFixed(1)} h`;
  return `${(seconds / 86400).toFixed(1)} days`;
}

// --- the panel ------------------------------------------------------------------------

export class AlarmPanel {
  // catalogue() -> Map fault -> {category, observed, root_causes} (the model's);
  // onCount(total, here) after each render; onPickMachine(name) when the operator asks to see
  // another machine's alarms. A load answered 401 opens the read-token form (common.js).
  constructor({ catalogue, onCount, onPickMachine }) {
    this.catalogue = catalogue;
    this.onCount = onCount || (() => {});
    this.onPickMachine = onPickMachine || (() => {});
    this.machine = null; // null: every machine
    this.alarms = new Map(); // id -> alarm: active ones of every machine, cleared ones of this machine
    this.touched = new Set(); // ids changed by events while a reload was in flight
    this.gen = 0; // bumped by reset() and setMachine(): an answer for an older view is redone
    this.inflight = null;
    this.again = false;
    this.loaded = false;
    this.frame = 0;
    this.items = new Map(); // id -> item (DOM nodes kept across renders: an open form survives)
    this.labels = new AlarmLabels((item) => item.alarm && this.update(item, item.alarm)); // verdicts (labels.js)
    $("alarms-elsewhere").addEventListener("click", (ev) => {
      const b = ev.target.closest("button[data-machine]");
      if (b) this.onPickMachine(b.dataset.machine);
    });
  }

  // Show this machine's alarms (null: all). reload=false when a reconnect follows anyway.
  setMachine(machine, reload = true) {
    machine = machine || null;
    if (machine === this.machine) return;
    this.machine = machine;
    this.gen += 1;
    for (const [id, a] of this.alarms) if (!isActive(a)) this.alarms.delete(id);
    this.schedule();
    if (reload) this.reload();
  }

  // A different database: ids mean other alarms now. Forget everything, then reload.
  reset() {
    this.gen += 1;
    this.alarms.clear();
    this.touched.clear();
    for (const item of this.items.values()) item.li.remove();
    this.items.clear();
    this.loaded = false;
    this.render();
  }

  // Coalesced: a request while one is in flight runs once more after it.
  reload() {
    if (this.inflight) {
      this.again = true;
      return this.inflight;
    }
    this.inflight = this.load().finally(() => {
      this.inflight = null;
    });
    return this.inflight;
  }

  async load() {
    do {
      this.again = false;
      this.touched.clear();
      const gen = this.gen;
      try {
        const [active, cleared] = await Promise.all([
          getJSON("/api/alarms", { state: "active", limit: ACTIVE_MAX }),
          getJSON("/api/alarms", { state: "cleared", machine: this.machine, limit: CLEARED_MAX }),
          this.labels.load(),
        ]);
        if (gen !== this.gen) {
          this.again = true; // the view changed meanwhile: this answer is for another one
          continue;
        }
        const next = new Map();
        for (const a of [...(active.alarms || []), ...(cleared.alarms || [])]) next.set(a.id, mergeAlarm(next.get(a.id), a));
        for (const id of this.touched) {
          const mine = this.alarms.get(id);
          if (mine) next.set(id, mergeAlarm(next.get(id), mine));
        }
        this.alarms = next;
        this.loaded = true;
        $("alarms-status").textContent = "";
      } catch (err) {
        $("alarms-status").textContent = `Alarms could not be loaded: ${errorText(err)}`;
        if (isUnauthorized(err)) showError(err);
      }
      this.render();
    } while (this.again);
  }

  // An `alarm` event's data.
  onEvent(change) {
    if (change.event === "reload") {
      this.reload();
      return;
    }
    const a = change.alarm;
    if (!a || typeof a !== "object" || !Number.isFinite(a.id)) return;
    this.upsert(a);
  }

  upsert(a) {
    this.alarms.set(a.id, mergeAlarm(this.alarms.get(a.id), a));
    this.touched.add(a.id);
    this.schedule();
  }

  // One render per frame; the timer for when frames do not come (a hidden tab, a covered or
  // background window): the header count and the title must follow all the same.
  schedule() {
    if (this.frame) return;
    const run = () => this.render();
    this.frame = {
      raf: document.hidden ? 0 : requestAnimationFrame(run),
      timer: setTimeout(run, document.hidden ? 0 : 250),
    };
  }

  shown(a) {
    return this.machine === null || a.machine === this.machine;
  }

  render() {
    if (this.frame) {
      cancelAnimationFrame(this.frame.raf);
      clearTimeout(this.frame.timer);
      this.frame = 0;
    }
    const all = [...this.alarms.values()];
    const activeAll = all.filter(isActive);
    const active = activeAll.filter((a) => this.shown(a)).sort(byActive);
    const cleared = all.filter((a) => !isActive(a) && this.shown(a)).sort(byCleared);
    for (const a of cleared.slice(CLEARED_MAX)) this.alarms.delete(a.id);
    cleared.length = Math.min(cleared.length, CLEARED_MAX);

    const keep = new Set();
    this.place($("alarms-active"), active, keep);
    this.place($("alarms-cleared"), cleared, keep);
    for (const [id, item] of this.items) {
      if (!keep.has(id)) {
        item.li.remove();
        this.items.delete(id);
      }
    }

    const none = $("alarms-none");
    none.hidden = active.length > 0;
    none.textContent = this.loaded ? "No active alarms." : "Loading alarms…";
    $("alarms-cleared-box").hidden = cleared.length === 0;
    $("alarms-cleared-count").textContent = `(${cleared.length})`;
    $("alarms-scope").textContent = this.machine === null ? "all machines" : `machine ${this.machine}`;
    this.renderElsewhere(activeAll.filter((a) => !this.shown(a)));
    this.onCount(this.loaded ? activeAll.length : null, active.length);
  }

  renderElsewhere(others) {
    const box = $("alarms-elsewhere");
    const per = new Map();
    for (const a of others) per.set(a.machine, (per.get(a.machine) || 0) + 1);
    box.hidden = per.size === 0;
    if (!per.size) {
      box.replaceChildren();
      return;
    }
    const parts = [el("span", "muted", "Other machines:")];
    for (const [machine, n] of [...per].sort((x, y) => String(x[0]).localeCompare(String(y[0])))) {
      const b = el("button", "link-button", `${machine} (${plural(n, "active alarm", "active alarms")})`);
      b.type = "button";
      b.dataset.machine = machine;
      parts.push(b);
    }
    box.replaceChildren(...parts);
  }

  // Moves nodes only where the order changed, so an open form elsewhere keeps its focus.
  place(list, alarms, keep) {
    alarms.forEach((a, i) => {
      keep.add(a.id);
      let item = this.items.get(a.id);
      if (!item) {
        item = this.build(a.id);
        this.items.set(a.id, item);
      }
      this.update(item, a);
      if (list.children[i] !== item.li) list.insertBefore(item.li, list.children[i] || null);
    });
  }

  build(id) {
    const li = el("li", "alarm");
    li.dataset.id = id;
    const head = el("div", "alarm-head");
    const sev = el("span", "badge alarm-sev");
    const title = el("span", "alarm-title");
    const category = el("span", "alarm-category");
    const fault = el("span", "alarm-fault mono muted");
    title.append(category, " ", fault);
    const state = el("span", "alarm-state");
    const ackBtn = el("button", "ack-open", "Acknowledge");
    ackBtn.type = "button";
    head.append(sev, title, state, ackBtn);

    const facts = el("dl", "alarm-facts");
    const fact = (label, cls) => {
      const div = el("div", cls);
      const dd = el("dd");
      div.append(el("dt", null, label), dd);
      facts.append(div);
      return { div, dd };
    };
    const machine = fact("Machine", "f-machine");
    const raised = fact("Raised", "f-raised");
    const peak = fact("Peak", "f-peak");
    const cleared = fact("Cleared", "f-cleared");

    const detail = el("dl", "alarm-detail");
    const observed = el("dd", "alarm-observed");
    const causes = el("dd", "alarm-causes");
    const d1 = el("div");
    d1.append(el("dt", null, "Observed symptoms"), observed);
    const d2 = el("div");
    d2.append(el("dt", null, "Likely root causes"), causes);
    const why = el("dd", "alarm-why");
    const d0 = el("div", "alarm-why-row");
    d0.append(el("dt", null, "What drove it"), why);
    detail.append(d0, d1, d2);

    const ack = el("p", "alarm-ack");
    li.append(head, facts, detail, ack);
    const item = { id, li, sev, category, fault, state, ackBtn, machine, raised, peak, cleared, observed, causes, ack,
                   why, whyRow: d0, explained: false, form: null };
    ackBtn.addEventListener("click", () => this.openForm(item));
    this.labels.build(item);
    return item;
  }

  update(item, a) {
    const cat = this.catalogue().get(a.fault) || {};
    const active = isActive(a);
    item.alarm = a;
    item.li.className = `alarm sev-${a.severity === "alarm" ? "alarm" : "warning"}${active ? "" : " is-cleared"}`;
    item.li.dataset.state = active ? "active" : "cleared";
    item.li.dataset.fault = a.fault;
    item.li.dataset.acked = String(Boolean(a.acked_at));
    item.sev.textContent = a.severity;
    item.category.textContent = a.category || cat.category || a.fault;
    item.fault.textContent = a.fault;
    item.state.textContent = active ? "active" : "cleared";
    if (a.acked_at) item.state.textContent += " · acknowledged";
    item.machine.dd.textContent = a.machine;
    item.raised.dd.textContent = fmtTime(a.raised_at);
    if (a.raised_severity && a.raised_severity !== a.severity && a.escalated_at) {
      item.raised.dd.textContent += ` as ${a.raised_severity}, ${a.severity} since ${fmtTime(a.escalated_at)}`;
    }
    const stale = a.kind === "stale"; // the machine fell silent: no fault, no intensity
    item.peak.div.firstChild.textContent = stale ? "Silent since" : "Peak";
    if (stale) {
      item.peak.dd.replaceChildren(fmtTime(a.since));
      if (!active) item.peak.dd.append(el("span", "muted", ` (${duration(Number(a.peak))})`));
    } else {
      item.peak.dd.replaceChildren(showFault(el("span", "mono"), Number(a.peak)));
      if (a.peak_at && a.peak_at !== a.raised_at) item.peak.dd.append(el("span", "muted", ` at ${fmtTime(a.peak_at)}`));
    }
    item.cleared.div.hidden = active;
    item.cleared.dd.textContent = active ? "" : fmtTime(a.cleared_at);
    const quality = a.kind === "quality"; // the data, not the machine: feature and reason of the raising reading
    const reasons = (a.reasons || []).map((r) => `${r.feature}: ${r.kind.replace("_", " ")}`).join(", ");
    item.observed.textContent = stale ? STALE_OBSERVED : quality ? `Suspect data: ${reasons || "–"}` : cat.observed || "–";
    item.causes.textContent = stale ? STALE_CAUSES : quality ? QUALITY_CAUSES : cat.root_causes || "–";
    item.whyRow.hidden = stale || quality;
    if (!stale && !quality && !item.explained && a.raised_reading) this.explain(item, a);
    if (a.acked_at) {
      item.ack.replaceChildren(
        "Acknowledged by ", el("strong", "ack-by", a.acked_by), ` at ${fmtTime(a.acked_at)}`,
        ...(a.ack_note ? [": ", el("q", "ack-note", a.ack_note)] : []),
      );
    } else {
      item.ack.replaceChildren();
    }
    item.ack.hidden = !a.acked_at;
    if (a.acked_at && item.form && !item.form.form.hidden && !item.form.busy) this.closeForm(item);
    item.ackBtn.hidden = Boolean(a.acked_at) || Boolean(item.form && !item.form.form.hidden);
    this.labels.update(item, a);
  }

  // The features behind the raising reading's value of this alarm's fault (GET /api/explain),
  // asked once per alarm: the raising reading does not change.
  async explain(item, a) {
    item.explained = true;
    try {
      const ans = await getJSON("/api/explain", { id: a.raised_reading, fault: a.fault });
      item.why.textContent = ans.features.length
        ? drivers(ans.features)
        : "no single feature stands out";
    } catch (err) {
      item.why.textContent = "–"; // the reading is gone (retention), or an appliance without /api/explain
    }
  }

  // --- acknowledging ------------------------------------------------------------------

  openForm(item) {
    if (!item.form) item.form = this.buildForm(item);
    const f = item.form;
    f.form.hidden = false;
    item.ackBtn.hidden = true; // the form has its own Acknowledge and Cancel
    f.msg.textContent = "";
    if (!f.by.value) f.by.value = rememberedName();
    (f.by.value ? f.note : f.by).focus();
  }

  closeForm(item) {
    const f = item.form;
    if (!f) return;
    f.form.hidden = true;
    f.tokenRow.hidden = true;
    f.token.value = "";
    f.token.required = false;
    f.msg.textContent = "";
    item.ackBtn.hidden = Boolean(item.alarm && item.alarm.acked_at);
  }

  buildForm(item) {
    const form = el("form", "ack-form");
    form.noValidate = true; // our own messages, in the form, for every case
    const field = (label, input, cls) => {
      const l = el("label", `ack-field ${cls || ""}`.trim());
      l.append(el("span", null, label), input);
      return l;
    };
    const by = el("input");
    by.name = "by";
    by.maxLength = 100;
    by.autocomplete = "name";
    by.required = true;
    const note = el("textarea");
    note.name = "note";
    note.maxLength = 2000;
    note.rows = 2;
    const token = el("input");
    token.type = "password";
    token.name = "token";
    token.autocomplete = "off";
    const tokenRow = field("Write token", token, "ack-token");
    tokenRow.append(el("small", "muted", "The appliance's ingest token. Kept in this tab only."));
    tokenRow.hidden = true;
    const send = el("button", "primary", "Acknowledge");
    send.type = "submit";
    const cancel = el("button", null, "Cancel");
    cancel.type = "button";
    const actions = el("div", "ack-actions");
    actions.append(send, cancel);
    const msg = el("p", "ack-msg");
    msg.setAttribute("role", "status");
    form.append(field("Your name", by), field("Note", note, "ack-note-field"), tokenRow, actions, msg);
    item.li.append(form);
    const f = { form, by, note, token, tokenRow, send, msg, busy: false };
    cancel.addEventListener("click", () => {
      this.closeForm(item);
      item.ackBtn.focus();
    });
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      this.submit(item);
    });
    return f;
  }

  async submit(item) {
    const f = item.form;
    if (f.busy) return;
    const by = f.by.value.trim();
    const note = f.note.value.trim();
    if (!by) {
      f.msg.textContent = "Enter your name.";
      f.by.focus();
      return;
    }
    if (!f.tokenRow.hidden) {
      const t = f.token.value.trim();
      if (!t) {
        f.msg.textContent = "Enter the write token.";
        f.token.focus();
        return;
      }
      if (!HEADER_SAFE.test(t)) {
        f.msg.textContent = "A token has no spaces or special characters; check what was pasted.";
        f.token.focus();
        return;
      }
      setWriteToken(t);
    }
    f.busy = true;
    f.send.disabled = true;
    f.msg.textContent = "Sending…";
    try {
      const data = await postAck(item.id, { by, note });
      rememberName(by);
      f.busy = false;
      if (data && data.alarm) {
        item.alarm = mergeAlarm(item.alarm, data.alarm);
        this.upsert(data.alarm);
      }
      this.closeForm(item);
    } catch (err) {
      f.busy = false;
      if (isUnauthorized(err)) {
        const hadToken = Boolean(writeToken);
        setWriteToken(null);
        f.tokenRow.hidden = false;
        f.token.required = true;
        f.token.value = "";
        f.msg.textContent = hadToken
          ? "That write token was not accepted. Enter the appliance's ingest token."
          : "Acknowledging needs the appliance's write token.";
        f.token.focus();
      } else if (err instanceof ApiError && err.status === 409) {
        f.msg.textContent = err.message; // acknowledged differently by someone else
        this.refresh(item.id);
      } else {
        f.msg.textContent = errorText(err);
      }
    } finally {
      f.send.disabled = false;
    }
  }

  async refresh(id) {
    try {
      const ans = await getJSON(`/api/alarms/${encodeURIComponent(id)}`);
      if (ans && ans.alarm) this.upsert(ans.alarm);
    } catch {
      // the next reload shows it
    }
  }
}
