// What every page shares: `$`, JSON fetches, the model, the connection-state display, the
// read-token form (401) and "cannot reach the appliance"; and formatting.
// Everything that puts server data into the page goes through textContent (el()).

export const $ = (id) => document.getElementById(id);

// --- JSON over HTTP -------------------------------------------------------------------

export class ApiError extends Error {
  constructor(status, body) {
    super((body && body.message) || `HTTP ${status}`);
    this.status = status;
  }
}

export const isUnauthorized = (err) => err instanceof ApiError && err.status === 401;

// Offset between the appliance's clock and this browser's (ms), from the Date header:
// "last 15 min" means the appliance's last 15 min even when a phone's clock is off.
let clockOffset = 0;
export const serverNow = () => Date.now() + clockOffset;

// fetch() answering JSON; throws ApiError for an HTTP error, TypeError when nothing answered.
// Reads send the read-token cookie (same origin); a write passes its own headers.
export async function fetchJSON(path, init = {}) {
  const res = await fetch(path, { cache: "no-store", ...init, headers: { Accept: "application/json", ...init.headers } });
  const date = Date.parse(res.headers.get("Date") || "");
  if (!Number.isNaN(date)) clockOffset = date - Date.now();
  let body = null;
  try {
    body = await res.json();
  } catch {
    body = null;
  }
  if (!res.ok) throw new ApiError(res.status, body);
  return body;
}

export const getJSON = (path, params) => fetchJSON(withParams(path, params));

export function withParams(path, params) {
  const url = new URL(path, location.origin);
  for (const [k, v] of Object.entries(params || {})) {
    if (v !== undefined && v !== null && v !== "") url.searchParams.set(k, String(v));
  }
  return url.pathname + url.search;
}

// The model: {name, version, features, faults, catalogue, thresholds}. The pages take every
// fault and feature name from here. Retried every 5 s until the appliance answers (it may be
// starting); show(text) tells why meanwhile.
export async function loadModel(show = notice) {
  for (;;) {
    try {
      const model = await getJSON("/api/model");
      clearNotice(UNREACHABLE);
      return model;
    } catch (err) {
      showError(err, show);
      await new Promise((resolve) => setTimeout(resolve, 5000));
    }
  }
}

// --- the page: notice, connection state, read token -----------------------------------

export const TOKEN_NEEDED = "read token needed";
export const UNREACHABLE = "cannot reach the appliance";

const page = { onToken: () => location.reload(), onUnauthorized: () => {} };

// Once per page: onToken() runs after a token is stored (load again); onUnauthorized() when an
// answer was 401 (stop the stream until a token is given).
export function initPage({ onToken, onUnauthorized } = {}) {
  if (onToken) page.onToken = onToken;
  if (onUnauthorized) page.onUnauthorized = onUnauthorized;
  addZonePicker();
  const form = $("token-form");
  const input = form.querySelector("input");
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      await logIn(input.value.trim());
    } catch (err) {
      form.querySelector(".token-msg").textContent = err.message;
      return;
    }
    form.hidden = true;
    input.value = "";
    page.onToken();
  });
}

// The page's #notice (dashboard, table): one line; kind says what put it there.
export function notice(text, kind = "error") {
  const n = $("notice");
  if (!n) return;
  n.textContent = text;
  n.dataset.kind = text ? kind : "";
}

function clearNotice(kind) {
  const n = $("notice");
  if (n && n.dataset.kind === kind) notice("");
}

// The server's message, or why there is none.
export function errorText(err) {
  return err instanceof ApiError ? err.message : `Cannot reach the appliance (${err.message}).`;
}

// A failed request: 401 opens the read-token form, anything else goes to show(text).
export function showError(err, show = notice) {
  if (isUnauthorized(err)) {
    page.onUnauthorized();
    askForToken();
    return;
  }
  if (show === notice) notice(errorText(err), err instanceof ApiError ? "error" : UNREACHABLE);
  else show(errorText(err));
}

// Reveals #token-form: a token is needed, or the one stored was not accepted.
function askForToken() {
  const form = $("token-form");
  form.querySelector(".token-msg").textContent = storedToken()
    ? "The read token was not accepted. Enter the appliance's read token."
    : "This appliance needs a read token to show data.";
  form.hidden = false;
  form.querySelector("input").focus();
}

// #conn shows the live stream's state: connecting | live | reconnecting | offline (and the
// "fdedge:connection" event tells the status banner). The
// detail TOKEN_NEEDED opens the token form; UNREACHABLE puts a notice on the page until live.
export function showConnection(state, detail = "") {
  const c = $("conn");
  if (c) {
    if (c.dataset.state !== state) c.dataset.state = state;
    c.textContent = detail === TOKEN_NEEDED ? `${state} (${detail})` : state;
  }
  // the status banner (status.js) says "offline" in words too
  document.dispatchEvent(new CustomEvent("fdedge:connection", { detail: { state, detail } }));
  if (detail === TOKEN_NEEDED) askForToken();
  else if (detail === UNREACHABLE) notice("Cannot reach the appliance; reconnecting by itself.", UNREACHABLE);
  else if (state === "live") clearNotice(UNREACHABLE);
}

// The read token lives in a cookie so EventSource (which sends no headers) carries it too.
// cookie-octet (RFC 6265): the server compares the cookie value verbatim, so a token
// that needs escaping cannot be stored as-is; say so rather than store a mangled one.
const COOKIE_SAFE = /^[\x21\x23-\x2B\x2D-\x3A\x3C-\x5B\x5D-\x7E]+$/;

// The server checks the token and sets it as an HttpOnly, SameSite=Strict cookie (POST /login):
// no script on the page can read it afterwards, so whether one is held is remembered here.
let triedToken = false;
async function logIn(token) {
  if (!COOKIE_SAFE.test(token)) throw new Error("The token has characters a cookie cannot hold.");
  const r = await fetch("/login", {
    method: "POST", credentials: "same-origin",
    headers: { "Content-Type": "application/json" }, body: JSON.stringify({ token }),
  });
  triedToken = true;
  if (!r.ok) {
    const answer = await r.json().catch(() => ({}));
    throw new Error(r.status === 401 ? "The read token was not accepted. Enter the appliance's read token."
      : answer.message || `HTTP ${r.status}`);
  }
}

const storedToken = () => triedToken;

// --- formatting -----------------------------------------------------------------------

const pad = (n) => String(n).padStart(2, "0");

// The page's zone (timeZone()), sortable, without the zone: 2023-11-06 16:00:00, for places
// that name the zone once (a column head). Anywhere else use fmtTime, which says it.
export function fmtClock(t) {
  const d = t instanceof Date ? t : new Date(t);
  if (Number.isNaN(d.getTime())) return String(t);
  if (timeZone() === "UTC") return d.toISOString().slice(0, 19).replace("T", " ");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

// The time with its zone: 2023-11-06 16:00:00 UTC+01:00, or 2023-11-06 15:00:00 UTC.
export function fmtTime(t) {
  const d = t instanceof Date ? t : new Date(t);
  if (Number.isNaN(d.getTime())) return String(t);
  return `${fmtClock(d)} ${zoneLabel(d)}`;
}

// Four significant digits: enough to read a sensor value, short enough for a phone.
export function fmtNum(v) {
  if (v === null || v === undefined || Number.isNaN(v)) return "–";
  return String(Number(v.toPrecision(4)));
}

export function fmtFault(v) {
  if (v === null || v === undefined || Number.isNaN(v)) return "–";
  const s = v.toFixed(1);
  return s === "-0.0" ? "0.0" : s; // -0.04 is no fault, not a negative one
}

// Fault intensities read 0 (none) to 100 (the strongest the model was trained on); a model may
// answer -1.2 or 104. Every page shows such a value as 0 or 100 (the API and the CSV keep the
// model's own number): clampFault() for what is drawn, showFault() for what is written.
export function clampFault(v) {
  if (v === null || v === undefined || Number.isNaN(v)) return v;
  return Math.min(100, Math.max(0, v));
}

// node shows the intensity v clamped (fmtFault); when clamping changed it, node says so: a
// title with the model's own value and data-raw holding it (else both are removed).
export function showFault(node, v) {
  const text = fmtFault(clampFault(v));
  if (node.textContent !== text) node.textContent = text;
  const clamped = typeof v === "number" && clampFault(v) !== v;
  if (clamped) {
    node.title = `The model answered ${fmtNum(v)}; shown as ${text} (the scale is 0 to 100)`;
    node.dataset.raw = String(v);
    node.dataset.clamp = v > 100 ? "high" : "low"; // app.css marks it "≥100.0" / "≤0.0"
  } else if (node.dataset.raw !== undefined) {
    node.removeAttribute("title");
    delete node.dataset.raw;
    delete node.dataset.clamp;
  }
  return node;
}

// normal | warning | alarm, from the model's thresholds.
export function faultState(v, thresholds) {
  if (v >= thresholds.alarm) return "alarm";
  if (v >= thresholds.warning) return "warning";
  return "normal";
}

export function dominantFault(faults) {
  let best = null;
  for (const [k, v] of Object.entries(faults || {})) {
    if (best === null || v > faults[best]) best = k;
  }
  return best;
}

// Small element builder: text only, never HTML.
export function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined && text !== null) e.textContent = String(text);
  return e;
}

// --- time with its zone ---------------------------------------------------------------

// One choice for every page of this browser: local time or UTC (localStorage; local by default).
const ZONE_KEY = "fdedge.timeZone";

export function timeZone() {
  try {
    return localStorage.getItem(ZONE_KEY) === "UTC" ? "UTC" : "local";
  } catch {
    return "local"; // storage blocked: the browser's zone, still named
  }
}

// "UTC", or the browser's offset at instant d: "UTC+01:00", "UTC−05:30".
export function zoneLabel(d = new Date()) {
  if (timeZone() === "UTC") return "UTC";
  return localOffset(d);
}

function localOffset(d) {
  const off = -d.getTimezoneOffset();
  if (off === 0) return "UTC";
  const a = Math.abs(off);
  return `UTC${off > 0 ? "+" : "−"}${pad(Math.floor(a / 60))}:${pad(a % 60)}`;
}

// A time as a datetime-local input's value in the page's zone ("" if not a time): what
// parseInputTime reads back.
export function inputTime(t) {
  const d = t instanceof Date ? t : new Date(t);
  return Number.isNaN(d.getTime()) ? "" : fmtClock(d).replace(" ", "T");
}

// A datetime-local input's value as epoch ms, read in the page's zone (NaN if not a time).
export function parseInputTime(value) {
  if (!value) return NaN;
  return timeZone() === "UTC" ? Date.parse(`${value}Z`) : Date.parse(value);
}

// The "Times in" picker every page's top bar carries (initPage adds it). Changing it reloads
// the page: charts, tables and forms are all drawn again in the new zone.
function addZonePicker() {
  const bar = document.querySelector(".topbar");
  if (!bar || $("zone")) return;
  const label = el("label", "zone-pick");
  const sel = el("select");
  sel.id = "zone";
  const local = el("option", null, `local (${localOffset(new Date())})`);
  local.value = "local";
  const utc = el("option", null, "UTC");
  utc.value = "UTC";
  sel.append(local, utc);
  sel.value = timeZone();
  sel.addEventListener("change", () => {
    try {
      localStorage.setItem(ZONE_KEY, sel.value);
    } catch {
      return;
    }
    location.reload();
  });
  label.append(el("span", null, "Times in"), " ", sel);
  bar.insertBefore(label, $("alarm-count") || $("conn"));
}
