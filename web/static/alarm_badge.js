// The active-alarm count every page's top bar shows (#alarm-count), for pages without the
// dashboard's live alarm list: /api/alarms?state=active, polled. A page that knows better (the
// dashboard, the fleet overview) sets the badge itself and does not load this.

import { $, getJSON } from "./common.js";

const POLL_MS = 10000;
const MAX = 1000;

export function startAlarmBadge() {
  const badge = $("alarm-count");
  if (!badge) return;
  const poll = async () => {
    try {
      const ans = await getJSON("/api/alarms", { state: "active", limit: MAX });
      const n = (ans.alarms || []).length;
      const unacked = (ans.alarms || []).filter((a) => !a.acked).length;
      badge.dataset.count = String(n);
      badge.textContent = n === 0 ? "no alarms"
        : `${n === MAX ? `${MAX}+` : n} active alarm${n === 1 ? "" : "s"}${unacked && unacked < n ? ` (${unacked} new)` : ""}`;
    } catch {
      badge.dataset.count = "";
      badge.textContent = "alarms –"; // unreachable or no read token: the banner says which
    }
  };
  poll();
  setInterval(poll, POLL_MS);
}
