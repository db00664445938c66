// Live readings from /events (Server-Sent Events) with resume.
//
// The browser's EventSource reconnects by itself and sends Last-Event-ID, but it gives up
// for good on an HTTP error (a restarting server answering 503, a 401): then we open a
// new EventSource with ?last_event_id= so the server replays what we missed. Row ids only
// grow, so anything at or below the last id seen is a duplicate from a replay.
//
// ...unless the appliance came back with a new, empty database: its ids start again at 1 and
// both the server (resuming "after" our old id) and this page would drop every new row. So on
// every reconnect we ask for the newest row id (and a `hello` names it too): lower than the
// highest id we have seen means a different database, and the page starts over (onReset).
//
// The stream is asked for the compact `arrays` shape: a reading is {"id", "time", "machine",
// "x": [feature values], "y": [fault values]}, named by the lists in every `hello` (FD-REST
// order, which the model's own feature order need not be). onReading gets the reading object
// of /api/latest ({..., "features": {name: value}, "faults": {fault: value}}).

import { TOKEN_NEEDED, UNREACHABLE, getJSON, isUnauthorized, showConnection } from "./common.js";

const BACKOFF_MS = [500, 1000, 2000, 4000, 8000, 15000];
const OFFLINE_AFTER = 3; // failed reconnects before we call it "offline"

export class LiveFeed {
  // onReading(reading) per new reading; onState(state, detail) with state in
  // connecting | live | reconnecting | offline and detail TOKEN_NEEDED, UNREACHABLE or ""
  // (default: the page's #conn, common.js); onGap(skipped) when the server could not replay
  // everything missed; onAlarm(change) per `alarm` event ({"event": "raise|...|ack", "alarm":
  // {...}} or {"event": "reload"}); onConnect() whenever the stream (re)connects or says hello
  // (alarm events carry no id and are not replayed: reload them then); onReset() when the
  // appliance's database is not the one we saw rows from (reload everything, then start()).
  constructor({ onReading, onState, onGap, onAlarm, onConnect, onReset }) {
    this.onReading = onReading;
    this.onGap = onGap || (() => {});
    this.onState = onState || showConnection;
    this.onAlarm = onAlarm || (() => {});
    this.onConnect = onConnect || (() => {});
    this.onReset = onReset || (() => this.start(this.machine, null));
    this.names = null; // {features: [...], faults: [...]} from the latest hello
    this.databaseId = null; // the appliance's database identity, from hello
    this.started = false;
    this.machine = null;
    this.lastId = null;
    this.maxSeen = null; // highest row id this page has shown (any machine): the reset check
    this.opened = false; // connected at least once since start(): a later open is a reconnect
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
    this.seen(this.lastId);
    this.opened = false;
    this.failures = 0;
    this.open("connecting");
  }

  seen(id) {
    if (id !== null && Number.isFinite(id) && (this.maxSeen === null || id > this.maxSeen)) this.maxSeen = id;
  }

  // The appliance's newest row is older than rows we have shown: a new database.
  isReset(newest) {
    return newest !== null && Number.isFinite(newest) && this.maxSeen !== null && newest < this.maxSeen;
  }

  reset() {
    this.stop();
    this.lastId = null;
    this.maxSeen = null;
    this.onReset();
  }

  stop() {
    clearTimeout(this.timer);
    if (this.es) this.es.close();
    this.es = null;
  }

  // The appliance answered 401: no stream until the token form calls start() again.
  needToken() {
    this.stop();
    this.setState("offline", TOKEN_NEEDED);
  }

  setState(state, detail) {
    if (state === this.state && !detail) return;
    this.state = state;
    this.onState(state, detail || "");
  }

  url() {
    const u = new URL("/events", location.origin);
    u.searchParams.set("shape", "arrays");
    if (this.machine) u.searchParams.set("machine", this.machine);
    if (this.lastId !== null) u.searchParams.set("last_event_id", String(this.lastId));
    return u.pathname + u.search;
  }

  open(state) {
    this.stop();
    this.setState(state);
    const es = new EventSource(this.url());
    this.es = es;
    es.addEventListener("open", async () => {
      if (es !== this.es) return;
      this.failures = 0;
      this.setState("live");
      const reconnect = this.opened;
      this.opened = true;
      this.onConnect();
      if (!reconnect) return; // start() came right after the page read the newest row
      // The browser resumes with Last-Event-ID by itself; check that ids did not start over.
      const newest = await newestId();
      if (es === this.es && this.isReset(newest)) this.reset();
    });
    es.addEventListener("reading", (ev) => {
      if (es !== this.es) return;
      let r;
      try {
        r = toReading(JSON.parse(ev.data), this.names);
      } catch {
        return; // a malformed event must not stop the stream
      }
      if (!r) return;
      const id = Number(ev.lastEventId || r.id);
      if (this.lastId !== null && id <= this.lastId) return;
      if (this.machine && r.machine !== this.machine) return;
      this.lastId = id;
      this.seen(id);
      this.onReading(r);
    });
    // Connect without an id: the server names its newest row, so a later manual reconnect
    // can still ask for everything after it. Lower than what we have seen: a new database.
    es.addEventListener("hello", (ev) => {
      if (es !== this.es) return;
      let id = Number(ev.lastEventId);
      let databaseId = null;
      try {
        const hello = JSON.parse(ev.data);
        if (Number.isFinite(hello.last_id)) id = hello.last_id;
        databaseId = typeof hello.database_id === "string" ? hello.database_id : null;
        if (Array.isArray(hello.features) && Array.isArray(hello.faults)) {
          this.names = { features: hello.features, faults: hello.faults };
        }
      } catch {
        // the SSE id says the same
      }
      if (!Number.isFinite(id)) return;
      // A different database identity means a replaced database, whatever its row ids say.
      const replaced = databaseId && this.databaseId && databaseId !== this.databaseId;
      if (databaseId) this.databaseId = databaseId;
      if (replaced || this.isReset(id)) {
        this.reset();
        return;
      }
      if (this.lastId === null) this.lastId = id;
      this.onConnect();
    });
    es.addEventListener("alarm", (ev) => {
      if (es !== this.es) return;
      let change;
      try {
        change = JSON.parse(ev.data);
      } catch {
        return; // a malformed event must not stop the stream
      }
      if (change && typeof change === "object") this.onAlarm(change);
    });
    // Too many rows missed to replay: the server skips ahead; the page reloads history.
    es.addEventListener("gap", (ev) => {
      if (es !== this.es) return;
      try {
        const gap = JSON.parse(ev.data);
        this.lastId = Math.max(this.lastId ?? 0, Number(gap.resume_id) || 0);
        this.seen(this.lastId);
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
        this.setState(...this.trouble());
        return;
      }
      this.failures += 1;
      this.reconnectSoon();
    });
  }

  // [state, detail] while not connected. The first error is the drop itself; after a failed
  // reconnect (or with the browser offline) the page says the appliance cannot be reached.
  trouble() {
    const state = this.failures > OFFLINE_AFTER || !navigator.onLine ? "offline" : "reconnecting";
    return [state, this.failures > 1 || !navigator.onLine ? UNREACHABLE : ""];
  }

  reconnectSoon(delay) {
    if (!this.started) return; // "online"/"visible" before the page has started the feed
    clearTimeout(this.timer);
    if (this.es) this.es.close();
    const wait = delay ?? BACKOFF_MS[Math.min(this.failures - 1, BACKOFF_MS.length - 1)] ?? 500;
    this.setState(...this.trouble());
    this.timer = setTimeout(async () => {
      // EventSource hides the status code; ask the server what it wants first.
      const answer = await probeServer(this.machine);
      if (answer === "unauthorized") {
        this.needToken();
        return;
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

// A reading event's data (the arrays shape) as the reading object, named by hello's lists.
// null when it cannot be named (no hello seen: never from FD-Edge).
function toReading(data, names) {
  if (!names || !data || !Array.isArray(data.x) || !Array.isArray(data.y)) return null;
  const features = {};
  const faults = {};
  names.features.forEach((name, i) => { features[name] = data.x[i]; });
  names.faults.forEach((name, i) => { faults[name] = data.y[i]; });
  const r = { id: data.id, time: data.time, machine: data.machine, features, faults, model_version: data.model_version };
  if (data.quality && typeof data.quality === "object") r.quality = data.quality; // the reading-quality verdict
  return r;
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

// A tiny authenticated read tells 401 from a dead server (EventSource hides the status).
async function probeServer(machine) {
  try {
    await getJSON("/api/latest", { limit: 1, machine });
    return "ok";
  } catch (err) {
    return isUnauthorized(err) ? "unauthorized" : "down";
  }
}

// The newest row id on the appliance (0: no rows), or null when it cannot be asked.
async function newestId() {
  try {
    const r = ((await getJSON("/api/latest", { limit: 1 })).readings || [])[0];
    return r ? Number(r.id) : 0;
  } catch {
    return null;
  }
}
