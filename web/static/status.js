// The status banner every page carries (#status-banner): the appliance unreachable or the live
// stream offline, and machines gone stale ("pump-3: last reading 3 days ago").
//
// Staleness is the appliance's verdict (/api/machines: last_seen on its clock, stale_after_s per
// machine), recomputed here every second against serverNow() so "3 min ago" keeps counting and a
// machine turns stale on time without a poll; a reading seen live makes it fresh at once
// (heard()). /api/machines is polled every POLL_MS as well, for machines this page's stream does
// not carry. Everything goes in with textContent.

import { $, el, getJSON, isUnauthorized, serverNow } from "./common.js";

const POLL_MS = 15000;
const SHOWN = 3; // machines named in the banner; the rest are counted

// "12 s ago", "5 min ago", "3 h ago", "3 days ago".
export function ago(seconds) {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 172800) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} days ago`;
}

export class StatusBanner {
  // onChange() after every second's recomputation (pages grey their stale values then).
  constructor({ onChange } = {}) {
    this.onChange = onChange || (() => {});
    this.machines = new Map(); // name -> {seen: ms on the appliance's clock, limit: s or null}
    this.offline = ""; // why the page is not live, "" when it is
    this.unreachable = false; // the last /api/machines poll got no answer
    this.since = null; // when the page last was live (ms)
    this.loaded = false;
    document.addEventListener("fdedge:connection", (ev) => this.setConnection(ev.detail.state));
    this.poll();
    setInterval(() => this.poll(), POLL_MS);
    setInterval(() => this.render(), 1000);
  }

  async poll() {
    try {
      this.take(await getJSON("/api/machines"));
      this.unreachable = false;
    } catch (err) {
      this.unreachable = !isUnauthorized(err) && !(err && err.status);
    }
    this.render();
  }

  take(answer) {
    const next = new Map();
    for (const m of answer.machines || []) {
      const seen = Date.parse(m.last_seen || "");
      next.set(m.machine, { seen: Number.isNaN(seen) ? null : seen, limit: m.stale_after_s || null,
                            drift: m.drift || null });
    }
    // a reading this page saw live may be newer than the answer
    for (const [name, old] of this.machines) {
      const now = next.get(name);
      if (now && old.seen !== null && (now.seen === null || old.seen > now.seen)) now.seen = old.seen;
    }
    this.machines = next;
    this.loaded = true;
  }

  // The appliance's drift verdict for `name` ({score, drifted, top, ...}), or null (unknown).
  drift(name) {
    const m = this.machines.get(name);
    return m ? m.drift : null;
  }

  // A reading of `name` arrived live: it is not silent.
  heard(name) {
    const m = this.machines.get(name);
    if (m) m.seen = serverNow();
    else this.poll(); // a new machine: its threshold comes from the appliance
  }

  setConnection(state) {
    if (state === "live") {
      this.offline = "";
      this.since = serverNow();
    } else if (state === "offline" || state === "reconnecting") {
      this.offline = state;
    }
    this.render();
  }

  // Seconds since the machine's last reading arrived (null: unknown).
  silent(name) {
    const m = this.machines.get(name);
    return m && m.seen !== null ? (serverNow() - m.seen) / 1000 : null;
  }

  isStale(name) {
    const m = this.machines.get(name);
    const s = this.silent(name);
    return Boolean(m && m.limit && s !== null && s > m.limit);
  }

  // "last reading 3 days ago" ("" when unknown).
  lastReading(name) {
    const s = this.silent(name);
    return s === null ? "" : `last reading ${ago(s)}`;
  }

  stale() {
    return [...this.machines.keys()].filter((n) => this.isStale(n))
      .sort((a, b) => (this.silent(b) || 0) - (this.silent(a) || 0));
  }

  render() {
    const box = $("status-banner");
    if (!box) return;
    const lines = [];
    if (this.offline === "offline" || this.unreachable) {
      const when = this.since ? ` for ${ago((serverNow() - this.since) / 1000).replace(" ago", "")}` : "";
      const p = el("p", "banner-offline");
      p.append(el("strong", null, "Offline"), `: no live data from the appliance${when}; the values shown may be old.`);
      lines.push(p);
    }
    const stale = this.stale();
    if (stale.length) {
      const p = el("p", "banner-stale");
      p.append(el("strong", null, stale.length === 1 ? "Stale machine" : `${stale.length} stale machines`), ": ");
      stale.slice(0, SHOWN).forEach((name, i) => {
        if (i) p.append("; ");
        const b = el("span", "banner-machine", name);
        p.append(b, ` — ${this.lastReading(name)}`);
      });
      if (stale.length > SHOWN) p.append(`; and ${stale.length - SHOWN} more`);
      lines.push(p);
    }
    box.replaceChildren(...lines);
    box.hidden = lines.length === 0;
    box.dataset.offline = String(lines.some((l) => l.className === "banner-offline"));
    box.dataset.stale = String(stale.length);
    this.onChange();
  }
}
