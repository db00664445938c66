// /login: the token goes to POST /login, which answers with an HttpOnly, SameSite=Strict cookie
// (no script, this one included, can read it afterwards); then back to the page that sent us here.

const $ = (id) => document.getElementById(id);

function back() {
  const next = new URLSearchParams(location.search).get("next") || "/";
  return next.startsWith("/") && !next.startsWith("//") ? next : "/"; // this appliance's pages only
}

async function post(path, body) {
  const r = await fetch(path, {
    method: "POST", credentials: "same-origin",
    headers: { "Content-Type": "application/json" }, body: JSON.stringify(body || {}),
  });
  const answer = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(answer.message || `HTTP ${r.status}`);
  return answer;
}

$("login").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  try {
    const who = await post("/login", { token: $("login-token").value.trim() });
    $("login-token").value = "";
    $("login-msg").textContent = `Logged in as ${who.name ? `${who.name} (${who.role})` : who.role}.`;
    location.assign(back());
  } catch (err) {
    $("login-msg").textContent = err.message;
  }
});

$("logout").addEventListener("click", async () => {
  try {
    await post("/logout");
    $("login-msg").textContent = "Logged out: this browser keeps no token.";
  } catch (err) {
    $("login-msg").textContent = err.message;
  }
});
