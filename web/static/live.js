// Live readings from /events (Server-Sent Events) with resume.
//
// The browser's EventSource reconnects by itself and sends Last-Event-ID, but it gives up
// for good on an HTTP error (a restarting server answering 503, a 401): then we open a
// new EventSource with ?last_event_id= so the server replays what we missed. Row ids only
// grow, so anything at or below the last id seen is a duplicate from a replay.

const BACKOFF_MS = [500, 1000, 2000, 4000, 8000, 15000];
const OFFLINE_AFTER = 3; // failed reconnects before we call it "offline"

export class LiveFeed {
  // onReading(reading) per new reading; onState(state, detail) with state in
  // connecting | live | reconnecting | offline; onGap(skipped) when the server could not
  // replay everything missed; probe() -> Promise<"ok" | "unauthorized" | "down">
  constructor({ onReading, onState, onGap, probe }) {
    this.onReading = onReading;
    this.onGap = onGap || (() => {});
    this.onState = onState;
    this.probe = probe;
    this.machine = null;
    this.lastId = null;
    this.es = null;
    this.failures = 0;
    this.timer = null;
    this.state = null;
    addEventListener("online", () => this.reconnectSoon(0));
    // A phone that slept may hold a dead connection; check when the page is shown again.
    document.addEventListener("visibilitychange", () => {
      if (!document.hidden && (!this.es || this.es.readyState !== EventSource.OPEN)) this.reconnectSoon(0);
    });
  }

  // Start (or restart) the stream; sinceId: replay rows after this id (null: only new rows).
  start(machine, sinceId) {
    this.started = true;
    this.machine = machine || null;
    this.lastId = sinceId ?? null;
    this.failures = 0;
    this.open("connecting");
  }

  stop() {
    clearTimeout(this.timer);
    if (this.es) this.es.close();
    this.es = null;
  }

  setState(state, detail) {
    if (state === this.state && !detail) return;
    this.state = state;
    this.onState(state, detail || "");
  }

  url() {
    const u = new URL("/events", location.origin);
    if (this.machine) u.searchParams.set("machine", this.machine);
    if (this.lastId !== null) u.searchParams.set("last_event_id", String(this.lastId));
    return u.pathname + u.search;
  }

  open(state) {
    this.stop();
    this.setState(state);
    const es = new EventSource(this.url());
    this.es = es;
    es.addEventListener("open", () => {
      if (es !== this.es) return;
      this.failures = 0;
      this.setState("live");
    });
    es.addEventListener("reading", (ev) => {
      if (es !== this.es) return;
      let r;
      try {
        r = JSON.parse(ev.data);
      } catch {
        return; // a malformed event must not stop the stream
      }
      const id = Number(ev.lastEventId || r.id);
      if (this.lastId !== null && id <= this.lastId) return;
      if (this.machine && r.machine !== this.machine) return;
      this.lastId = id;
      this.onReading(r);
    });
    // First connect without an id: the server names its newest row, so a later manual
    // reconnect can still ask for everything after it.
    es.addEventListener("hello", (ev) => {
      if (es !== this.es || this.lastId !== null) return;
      const id = Number(ev.lastEventId);
      if (Number.isFinite(id)) this.lastId = id;
    });
    // Too many rows missed to replay: the server skips ahead; the page reloads history.
    es.addEventListener("gap", (ev) => {
      if (es !== this.es) return;
      try {
        const gap = JSON.parse(ev.data);
        this.lastId = Math.max(this.lastId ?? 0, Number(gap.resume_id) || 0);
        this.onGap(gap.skipped);
      } catch {
        // ignore a malformed notice
      }
    });
    es.addEventListener("error", () => {
      if (es !== this.es) return;
      if (es.readyState === EventSource.CONNECTING) {
        // The browser retries on its own, sending Last-Event-ID.
        this.failures += 1;
        this.setState(this.failures > OFFLINE_AFTER || !navigator.onLine ? "offline" : "reconnecting");
        return;
      }
      this.failures += 1;
      this.reconnectSoon();
    });
  }

  reconnectSoon(delay) {
    if (!this.started) return; // "online"/"visible" before the page has started the feed
    clearTimeout(this.timer);
    if (this.es) this.es.close();
    const wait = delay ?? BACKOFF_MS[Math.min(this.failures - 1, BACKOFF_MS.length - 1)] ?? 500;
    this.setState(this.failures > OFFLINE_AFTER || !navigator.onLine ? "offline" : "reconnecting");
    this.timer = setTimeout(async () => {
      // EventSource hides the status code; ask the server what it wants first.
      const answer = this.probe ? await this.probe() : "ok";
      if (answer === "unauthorized") {
        this.setState("offline", "read token needed");
        return; // the token form calls start() again
      }
      if (answer === "down") {
        this.failures += 1;
        this.reconnectSoon();
        return;
      }
      this.open("reconnecting");
    }, wait);
  }
}

// Counts readings per second over a sliding window (for the header).
export class RateMeter {
  constructor(windowMs = 5000) {
    this.windowMs = windowMs;
    this.stamps = [];
  }
  tick(now = performance.now()) {
    this.stamps.push(now);
    if (this.stamps.length > 10000) this.stamps.splice(0, this.stamps.length - 10000);
  }
  rate(now = performance.now()) {
    const cut = now - this.windowMs;
    let i = 0;
    while (i < this.stamps.length && this.stamps[i] < cut) i++;
    if (i) this.stamps.splice(0, i);
    return this.stamps.length / (this.windowMs / 1000);
  }
}

// Probe used by LiveFeed: a tiny authenticated read tells 401 from a dead server.
export async function probeServer(machine) {
  const u = new URL("/api/latest", location.origin);
  u.searchParams.set("limit", "1");
  if (machine) u.searchParams.set("machine", machine);
  try {
    const res = await fetch(u.pathname + u.search, { cache: "no-store" });
    if (res.status === 401) return "unauthorized";
    return res.ok ? "ok" : "down";
  } catch {
    return "down";
  }
}
