// Labels from the floor (POST /api/labels): a verdict on an alarm (confirmed fault, false alarm,
// maintenance done) from the alarm list, and a fault class and intensity on a machine's time
// range from the report page. The labels become training data (GET /generate_csv?labelled=1).
//
// Writes carry the tab's write token (the one alarms.js keeps for acknowledgements) or, without
// one, the page's login cookie (an operator's token may label). Everything from the server goes
// in with textContent (el()); no HTML is parsed.

import { el, errorText, fetchJSON, fmtTime, getJSON, isUnauthorized } from "./common.js";

const TOKEN_KEY = "fdedge_write_token"; // alarms.js's key: one token for acks and labels in a tab
const NAME_KEY = "fdedge_ack_by";
const HEADER_SAFE = /^[\x21-\x7E]+$/;
export const VERDICTS = [
  ["confirmed", "Confirmed fault"],
  ["false_alarm", "False alarm"],
  ["maintenance_done", "Maintenance done"],
];
const VERDICT_TEXT = new Map(VERDICTS);

function stored(store, key) {
  try {
    return store.getItem(key) || "";
  } catch {
    return "";
  }
}

function keep(store, key, value) {
  try {
    if (value) store.setItem(key, value);
    else store.removeItem(key);
  } catch {
    // not kept
  }
}

export const rememberedName = () => stored(localStorage, NAME_KEY);

function writeInit(method, body) {
  const t = stored(sessionStorage, TOKEN_KEY);
  const headers = body === undefined ? {} : { "Content-Type": "application/json" };
  if (t) headers.Authorization = `Bearer ${t}`;
  return { method, headers, body, credentials: t ? "omit" : "same-origin" };
}

// DELETE /api/labels/{id}, with the tab's write token or the login cookie.
export const deleteLabel = (id) => fetchJSON(`/api/labels/${encodeURIComponent(id)}`, writeInit("DELETE"));

// POST /api/labels; the caller shows errors. `token` (optional) replaces the tab's write token.
export function postLabel(body, token) {
  if (token) keep(sessionStorage, TOKEN_KEY, token);
  return fetchJSON("/api/labels", writeInit("POST", JSON.stringify(body))).then((ans) => {
    if (body.by) keep(localStorage, NAME_KEY, body.by);
    return ans;
  });
}

// The text shown for a stored label.
export function labelText(label) {
  const what = label.kind === "alarm"
    ? VERDICT_TEXT.get(label.verdict) || label.verdict
    : label.fault === "healthy" ? "healthy" : `${label.fault} at ${label.intensity}`;
  return `${what}, by ${label.by} at ${fmtTime(label.created)}${label.note ? `: “${label.note}”` : ""}`;
}

// A small form: name, note, a token row shown after a 401, Save and Cancel. submit(body, token)
// returns a promise; the form shows its errors and hides itself on success.
export function labelForm(extra, submit, onDone) {
  const form = el("form", "label-form");
  form.noValidate = true;
  const field = (label, input, cls) => {
    const l = el("label", `ack-field ${cls || ""}`.trim());
    l.append(el("span", null, label), input);
    return l;
  };
  const by = el("input");
  by.name = "by";
  by.maxLength = 100;
  by.autocomplete = "name";
  by.value = rememberedName();
  const note = el("textarea");
  note.name = "note";
  note.maxLength = 1000;
  note.rows = 2;
  const token = el("input");
  token.type = "password";
  token.name = "token";
  token.autocomplete = "off";
  const tokenRow = field("Write token", token, "ack-token");
  tokenRow.append(el("small", "muted", "An operator's token (or the ingest token). Kept in this tab only."));
  tokenRow.hidden = true;
  const send = el("button", "primary", "Save label");
  send.type = "submit";
  const cancel = el("button", null, "Cancel");
  cancel.type = "button";
  const actions = el("div", "ack-actions");
  actions.append(send, cancel);
  const msg = el("p", "ack-msg label-msg");
  msg.setAttribute("role", "status");
  form.append(...extra, field("Your name", by), field("Note", note, "ack-note-field"), tokenRow, actions, msg);
  cancel.addEventListener("click", () => onDone(null));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const name = by.value.trim();
    if (!name) {
      msg.textContent = "Enter your name.";
      by.focus();
      return;
    }
    const t = token.value.trim();
    if (!tokenRow.hidden && (!t || !HEADER_SAFE.test(t))) {
      msg.textContent = "Enter the write token (no spaces or special characters).";
      token.focus();
      return;
    }
    send.disabled = true;
    msg.classList.remove("label-ok");
    msg.textContent = "Sending…";
    try {
      const ans = await submit({ by: name, note: note.value.trim() }, tokenRow.hidden ? null : t);
      msg.textContent = "";
      tokenRow.hidden = true; // accepted: kept for this tab
      token.value = "";
      onDone(ans && ans.label);
    } catch (err) {
      if (isUnauthorized(err)) {
        keep(sessionStorage, TOKEN_KEY, "");
        tokenRow.hidden = false;
        token.value = "";
        msg.textContent = "Labelling needs an operator's token.";
        token.focus();
      } else {
        msg.textContent = err instanceof TypeError ? errorText(err) : err.message; // ours, the server's, or no answer
      }
    } finally {
      send.disabled = false;
    }
  });
  return { form, by, note, msg };
}

// --- on the alarm list (alarms.js) ----------------------------------------------------

export class AlarmLabels {
  constructor(onChange) {
    this.byAlarm = new Map(); // alarm id -> its label
    this.onChange = onChange;
  }

  async load() {
    try {
      const ans = await getJSON("/api/labels", { limit: 1000 });
      this.byAlarm.clear();
      for (const l of ans.labels || []) if (l.alarm != null) this.byAlarm.set(l.alarm, l);
    } catch {
      // labels are extra: the alarms show without them
    }
  }

  // The label row of one alarm item: its label, or the three verdict buttons.
  build(item) {
    const box = el("div", "alarm-label");
    const text = el("p", "alarm-label-text");
    const buttons = el("div", "label-buttons");
    for (const [verdict, title] of VERDICTS) {
      const b = el("button", "label-open", title);
      b.type = "button";
      b.dataset.verdict = verdict;
      b.addEventListener("click", () => this.open(item, verdict));
      buttons.append(b);
    }
    const change = el("button", "link-button label-change", "Change label");
    change.type = "button";
    change.addEventListener("click", () => this.remove(item));
    const msg = el("p", "ack-msg label-msg");
    msg.setAttribute("role", "status");
    box.append(text, change, buttons, msg);
    item.li.append(box);
    item.label = { box, text, change, buttons, msg, form: null };
  }

  update(item, a) {
    const l = item.label;
    const label = this.byAlarm.get(a.id);
    l.box.hidden = a.kind === "stale"; // a silence is no fault to label here
    item.li.dataset.label = label ? label.verdict : "";
    l.text.hidden = !label;
    l.text.replaceChildren(...(label ? ["Labelled ", el("strong", "label-verdict", labelText(label))] : []));
    l.buttons.hidden = Boolean(label) || Boolean(l.form);
    l.change.hidden = !label;
  }

  // "Change label": the label is removed (DELETE), then the verdict buttons are offered again.
  async remove(item) {
    const label = this.byAlarm.get(item.id);
    if (!label) return;
    item.label.msg.textContent = "";
    try {
      await deleteLabel(label.id);
      this.byAlarm.delete(item.id);
    } catch (err) {
      item.label.msg.textContent = isUnauthorized(err)
        ? "Changing a label needs an operator's token."
        : errorText(err);
      if (err.status === 404) this.byAlarm.delete(item.id); // removed elsewhere meanwhile
    }
    this.onChange(item);
  }

  open(item, verdict) {
    const l = item.label;
    if (l.form) l.form.form.remove();
    const heading = el("p", "label-title", `Label as: ${VERDICT_TEXT.get(verdict)}`);
    l.form = labelForm([heading], (body, token) => postLabel({ alarm: item.id, verdict, ...body }, token),
      (label) => {
        l.form.form.remove();
        l.form = null;
        if (label) this.byAlarm.set(item.id, label);
        this.onChange(item);
      });
    l.form.form.dataset.verdict = verdict;
    l.box.append(l.form.form);
    l.buttons.hidden = true;
    (l.form.by.value ? l.form.note : l.form.by).focus();
  }
}
