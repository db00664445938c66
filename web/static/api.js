// Shared helpers for the pages: JSON fetches, the read-token cookie, formatting.
// Everything that puts server data into the page goes through textContent.

export class ApiError extends Error {
  constructor(status, body) {
    super((body && body.message) || `HTTP ${status}`);
    this.status = status;
    this.body = body || {};
  }
}

// Offset between the appliance's clock and this browser's (ms), from the Date header:
// "last 15 min" means the appliance's last 15 min even when a phone's clock is off.
let clockOffset = 0;
export const serverNow = () => Date.now() + clockOffset;

export async function getJSON(path, params) {
  const url = withParams(path, params);
  const res = await fetch(url, { headers: { Accept: "application/json" }, cache: "no-store" });
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

export function withParams(path, params) {
  const url = new URL(path, location.origin);
  for (const [k, v] of Object.entries(params || {})) {
    if (v !== undefined && v !== null && v !== "") url.searchParams.set(k, String(v));
  }
  return url.pathname + url.search;
}

// --- read token (401 handling) -------------------------------------------------------

// cookie-octet (RFC 6265): the server compares the cookie value verbatim, so a token
// that needs escaping cannot be stored as-is; say so rather than store a mangled one.
const COOKIE_SAFE = /^[\x21\x23-\x2B\x2D-\x3A\x3C-\x5B\x5D-\x7E]+$/;

export function storeToken(token) {
  if (!COOKIE_SAFE.test(token)) throw new Error("The token has characters a cookie cannot hold.");
  const secure = location.protocol === "https:" ? "; Secure" : "";
  document.cookie = `fdedge_token=${token}; SameSite=Strict; path=/${secure}`;
}

// Wires the page's token form (#token-form). onToken() runs after a token is stored.
// Returns show(message) to reveal the form when the server answers 401.
export function tokenForm(onToken) {
  const form = document.getElementById("token-form");
  const input = form.querySelector("input");
  const msg = form.querySelector(".token-msg");
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    try {
      storeToken(input.value.trim());
    } catch (err) {
      msg.textContent = err.message;
      return;
    }
    form.hidden = true;
    input.value = "";
    onToken();
  });
  return (message) => {
    msg.textContent = message || "This appliance needs a read token to show data.";
    form.hidden = false;
    input.focus();
  };
}

// --- formatting -----------------------------------------------------------------------

const pad = (n) => String(n).padStart(2, "0");

// Local time, sortable and unambiguous: 2023-11-06 16:00:00
export function fmtTime(t) {
  const d = t instanceof Date ? t : new Date(t);
  if (Number.isNaN(d.getTime())) return String(t);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
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
