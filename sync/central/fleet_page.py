"""The fleet page's HTML, CSS and JavaScript (served by `fleet.render_page`; no build step).

Kept as Python strings, so the page travels with the package wherever `sync` is installed. The
script fetches `/_admin/fleet` and refreshes every few seconds; it writes everything central
says through `textContent`, never as markup. The stop switch posts JSON to
`/_admin/programs/{program}/pause|resume` from the page's own origin (with the admin token as a
bearer header when the page was opened with `?token=`).
"""

from __future__ import annotations

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Loyalty central: fleet</title>
<style nonce="{{nonce}}">{{css}}</style>
</head>
<body data-central="unknown">
<!-- Shown while central does not answer: the rows below are its last answer. -->
<div id="unreachable" class="banner" role="alert" hidden>
  <strong>NOT ANSWERING</strong> <span id="unreachable-detail"></span>
</div>
<header>
  <h1>Loyalty central: fleet</h1>
  <div class="summary"><span id="store-count">…</span> stores ·
    <span id="offline-count">…</span> offline · <span id="behind-count">…</span> behind</div>
  <div class="muted small">rules <span id="rules-version">…</span> ·
    latest change <span id="change-seq">…</span> · offline after
    <span id="offline-after">…</span> without a heartbeat · updated
    <span id="updated">never</span></div>
</header>
<div id="alert" class="alert" role="alert" hidden></div>
<main>
  <section id="programs" class="panel">
    <h2>Stop switch, whole chain</h2>
    <p class="muted small">A switch publishes a new version of the rules document; each store's
      registers follow it with their next request once the store has it (within about a
      second for a store that is online).</p>
    <label class="small">Your name (kept in the rules document)
      <input id="operator" autocomplete="off" maxlength="64" placeholder="loyalty team"></label>
    <div id="program-list"></div>
  </section>
  <section class="panel">
    <h2>Stores <span class="muted small">offline first, then the furthest behind</span></h2>
    <div class="scroll">
      <table id="fleet">
        <thead><tr>
          <th>Store</th><th>State</th><th>Last heartbeat</th><th class="num">Outbox</th>
          <th>Oldest waiting</th><th class="num">Dead letters</th><th>Version</th>
          <th class="num">Cursor lag</th><th>Registers</th><th>Gateway</th><th>Last request</th>
        </tr></thead>
        <tbody id="stores"></tbody>
      </table>
    </div>
    <p id="no-stores" class="muted" hidden>No store has been heard from yet.</p>
  </section>
</main>
<script type="application/json" id="config">{{config}}</script>
<script nonce="{{nonce}}">{{js}}</script>
</body>
</html>
"""

REFUSED = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Loyalty central: token needed</title>
<style nonce="{{nonce}}">{{css}}</style>
</head>
<body>
<main class="login">
  <section class="panel">
    <h1>Loyalty central: fleet</h1>
    <p id="refused">{{message}}</p>
    <form method="get" action="/_admin/fleet/page">
      <label>Admin token <input name="token" type="password" autocomplete="off" required></label>
      <button type="submit">Open the fleet</button>
    </form>
  </section>
</main>
<script nonce="{{nonce}}">
  // A token kept from earlier in this tab opens the page again; a refused one is forgotten.
  if ({{wrong}}) sessionStorage.removeItem("centralAdminToken");
  else if (sessionStorage.getItem("centralAdminToken"))
    location.replace("/_admin/fleet/page?token=" +
      encodeURIComponent(sessionStorage.getItem("centralAdminToken")));
</script>
</body>
</html>
"""

CSS = """
:root { --ok: #1b7f3b; --warn: #b35c00; --bad: #b3261e; --line: #d0d4da; --bg: #f5f6f8;
  --stale: #9aa1a9; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.4 system-ui, sans-serif; color: #1d2126; background: var(--bg); }
header { padding: 12px 16px; background: #fff; border-bottom: 1px solid var(--line);
  display: flex; flex-wrap: wrap; gap: 4px 24px; align-items: baseline; }
h1 { font-size: 20px; margin: 0; }
h2 { font-size: 15px; margin: 0 0 8px; text-transform: uppercase; letter-spacing: .04em;
  color: #4a525c; }
h2 .small { text-transform: none; letter-spacing: 0; font-weight: 400; }
main { display: grid; gap: 12px; padding: 12px; grid-template-columns: minmax(0, 1fr); }
.panel { background: #fff; border: 1px solid var(--line); border-radius: 6px; padding: 12px;
  min-width: 0; }
.summary { font-weight: 600; }
.scroll { overflow-x: auto; }
table { width: 100%; border-collapse: collapse; }
th, td { text-align: left; padding: 4px 6px; border-bottom: 1px solid var(--line);
  white-space: nowrap; }
th { color: #4a525c; font-weight: 600; font-size: 13px; }
.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.OFFLINE td { background: #fdf0ef; }
.muted { color: #5f6873; }
.small { font-size: 13px; }
.badge { display: inline-block; padding: 2px 10px; border-radius: 12px; font-weight: 700;
  color: #fff; background: #5f6873; }
.badge.ONLINE, .badge.running { background: var(--ok); }
.badge.OFFLINE, .badge.paused { background: var(--bad); }
.warn { color: var(--warn); font-weight: 600; }
.bad { color: var(--bad); font-weight: 600; }
[hidden] { display: none !important; }
.banner { padding: 10px 16px; background: #3d4147; color: #fff; font-weight: 600; }
.banner strong { display: inline-block; padding: 1px 10px; margin-right: 8px;
  border-radius: 12px; background: var(--bad); letter-spacing: .04em; }
body.stale main td, body.stale #updated { color: var(--stale); }
body.stale main .badge { background: var(--stale); }
.alert { margin: 12px 12px 0; padding: 8px 12px; border-radius: 6px; background: #fde7e5;
  color: var(--bad); font-weight: 600; }
button { font: inherit; padding: 8px 16px; border-radius: 6px; border: 1px solid #1d2126;
  background: #fff; cursor: pointer; min-height: 40px; }
button.pause { background: var(--bad); border-color: var(--bad); color: #fff; font-weight: 700; }
button.resume { background: var(--ok); border-color: var(--ok); color: #fff; font-weight: 700; }
button:disabled { opacity: .5; cursor: wait; }
input { font: inherit; padding: 6px 8px; border: 1px solid var(--line); border-radius: 4px; }
label input { display: block; margin-top: 2px; width: min(100%, 280px); }
.program { display: flex; flex-wrap: wrap; align-items: center; gap: 8px 16px; padding: 10px 0;
  border-top: 1px solid var(--line); margin-top: 10px; }
.program-name { font-weight: 700; font-size: 17px; min-width: 80px; }
.login { display: block; max-width: 420px; margin: 10vh auto; }
.login button { margin-top: 10px; }
@media (max-width: 480px) {
  main { padding: 8px; gap: 8px; }
  header { padding: 10px 8px; }
  .program button { width: 100%; }
}
"""

SCRIPT = r"""
// The fleet page's script: fetches /_admin/fleet, fills the table, flips the chain's switch.
// Central's data goes in through textContent only. With an admin token, the page was opened
// once with ?token=; the token is kept in this tab's sessionStorage and sent as a bearer header.
"use strict";
(() => {
  const config = JSON.parse(document.getElementById("config").textContent);
  const TOKEN_KEY = "centralAdminToken";
  const params = new URLSearchParams(location.search);
  if (params.has("token")) {
    sessionStorage.setItem(TOKEN_KEY, params.get("token"));
    history.replaceState(null, "", location.pathname); // out of the address bar and history
  }
  const $ = (id) => document.getElementById(id);
  const operator = $("operator");
  operator.value = localStorage.getItem("centralOperator") || "";
  operator.addEventListener("change", () => {
    localStorage.setItem("centralOperator", operator.value);
  });

  let lastFleet = null;

  function headers(json) {
    const h = {};
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) h.Authorization = "Bearer " + token;
    if (json) h["Content-Type"] = "application/json";
    return h;
  }

  class Unreachable extends Error {}

  async function api(path, body) {
    const controller = new AbortController();
    const init = body === undefined
      ? { headers: headers(false), cache: "no-store" }
      : { method: "POST", headers: headers(true), body: JSON.stringify(body), cache: "no-store" };
    init.signal = controller.signal;
    const timer = setTimeout(() => controller.abort(), config.timeoutMs);
    let response;
    try {
      response = await fetch(path, init);
    } catch (error) {
      clearTimeout(timer);
      throw new Unreachable(controller.signal.aborted
        ? "no answer within " + Math.round(config.timeoutMs / 1000) + " s"
        : "no connection");
    }
    try {
      if (response.status === 401) {
        throw new Error("The admin token was refused: open the page again with ?token=");
      }
      if (!response.ok) {
        const why = await response.json().then((b) => b.message || b.error, () => null);
        throw new Error(path + " answered " + response.status + (why ? ": " + why : ""));
      }
      return await response.json();
    } catch (error) {
      if (controller.signal.aborted) throw new Unreachable("the answer stopped half-way");
      throw error;
    } finally {
      clearTimeout(timer);
    }
  }

  function show(el, value, cls) {
    el.textContent = value === null || value === undefined ? "—" : String(value);
    if (cls !== undefined) el.className = cls;
  }

  function ago(seconds) {
    if (seconds === null || seconds === undefined) return "—";
    seconds = Math.max(0, Math.round(seconds));
    if (seconds < 60) return seconds + " s";
    if (seconds < 3600) return Math.floor(seconds / 60) + " min " + (seconds % 60) + " s";
    if (seconds < 86400) {
      return Math.floor(seconds / 3600) + " h " + Math.floor((seconds % 3600) / 60) + " min";
    }
    return Math.floor(seconds / 86400) + " d " + Math.floor((seconds % 86400) / 3600) + " h";
  }

  // A stamp of central's clock, and its age as central counted it (not this browser's clock).
  function when(stamp, age) {
    if (!stamp) return "never";
    const clock = new Date(stamp).toLocaleTimeString([], {
      hour: "2-digit", minute: "2-digit", second: "2-digit",
    });
    return clock + " (" + ago(age) + " ago)";
  }

  const ACTION_ALERT_MS = 60000;
  let actionAlertUntil = 0;

  function alertBox(message) {
    const box = $("alert");
    box.hidden = !message;
    box.textContent = message || "";
  }

  function switches() {
    return [...document.querySelectorAll(".program-switch")];
  }

  function settle(button) {
    button.disabled = Boolean(button.dataset.offline || button.dataset.busy);
  }

  function showUnreachable(why) {
    document.body.classList.add("stale");
    document.body.dataset.central = "unreachable";
    show($("unreachable-detail"), "Central's admin API is not answering (" + why +
      "); what is below is its last answer.");
    $("unreachable").hidden = false;
    for (const button of switches()) {
      button.dataset.offline = "1";
      settle(button);
    }
  }

  function showReachable() {
    document.body.classList.remove("stale");
    document.body.dataset.central = "answering";
    $("unreachable").hidden = true;
    for (const button of switches()) {
      delete button.dataset.offline;
      settle(button);
    }
  }

  function renderHeader(fleet) {
    show($("store-count"), fleet.summary.stores);
    show($("offline-count"), fleet.summary.offline, fleet.summary.offline ? "bad" : "");
    show($("behind-count"), fleet.summary.behind, fleet.summary.behind ? "warn" : "");
    show($("rules-version"), fleet.rules ? fleet.rules.version : "none published");
    show($("change-seq"), "#" + fleet.change_seq);
    show($("offline-after"), ago(fleet.offline_after_s));
    show($("updated"), new Date().toLocaleTimeString());
  }

  function renderPrograms(fleet) {
    const list = $("program-list");
    for (const name of config.programs) {
      const program = (fleet.programs || {})[name];
      if (!program) continue;
      let row = list.querySelector('[data-program="' + name + '"]');
      if (!row) {
        row = document.createElement("div");
        row.className = "program";
        row.dataset.program = name;
        const label = document.createElement("span");
        label.className = "program-name";
        label.textContent = name.charAt(0).toUpperCase() + name.slice(1);
        const state = document.createElement("span");
        state.className = "program-state badge";
        const button = document.createElement("button");
        button.type = "button";
        button.className = "program-switch";
        button.addEventListener("click", () => flip(name, button));
        const note = document.createElement("span");
        note.className = "program-note muted small";
        row.append(label, state, button, note);
        list.append(row);
      }
      const state = row.querySelector(".program-state");
      const word = program.paused ? "paused" : "running";
      state.textContent = word;
      state.className = "program-state badge " + word;
      const button = row.querySelector(".program-switch");
      button.dataset.action = program.paused ? "resume" : "pause";
      button.textContent = (program.paused ? "Resume " : "Pause ") + name + " in every store";
      button.className = "program-switch " + (program.paused ? "resume" : "pause");
      const notes = [];
      if (program.by) {
        notes.push((program.paused ? "paused" : "resumed") + " by " + program.by +
          (program.at ? " at " + new Date(program.at).toLocaleString() : ""));
      }
      if (fleet.rules) notes.push("rules version " + fleet.rules.version);
      row.querySelector(".program-note").textContent = notes.join(" · ");
    }
  }

  function lagText(store) {
    if (store.last_heartbeat_at === null) return ["no heartbeat", "muted"];
    switch (store.cursor_mode) {
      case "snapshot": return ["bootstrapping", "warn"];
      case "none": return ["no cursor yet", "warn"];
      case "unknown": return ["unknown cursor", "bad"];
      case null: return ["—", ""];
    }
    if (!store.cursor_lag) return ["0", ""];
    const since = store.behind_s === null ? "" : " (behind " + ago(store.behind_s) + ")";
    return [store.cursor_lag + since, "warn"];
  }

  function registers(adapters) {
    const parts = Object.entries(adapters || {}).map(
      ([name, a]) => name + ": " + a.state + ", " + a.connections);
    return parts.length ? parts.join("; ") : "—";
  }

  function renderStores(fleet) {
    const body = $("stores");
    body.replaceChildren();
    $("no-stores").hidden = fleet.stores.length > 0;
    for (const store of fleet.stores) {
      const row = document.createElement("tr");
      row.dataset.store = store.store_id;
      row.dataset.state = store.state;
      row.className = store.state;
      const cell = (col, value, cls) => {
        const td = document.createElement("td");
        td.dataset.col = col;
        show(td, value, cls || "");
        row.append(td);
        return td;
      };
      cell("store", store.store_id);
      const state = document.createElement("span");
      state.className = "badge " + store.state;
      state.textContent = store.state;
      cell("state", "").replaceChildren(state);
      cell("heartbeat", when(store.last_heartbeat_at, store.heartbeat_age_s),
        store.state === "OFFLINE" ? "bad" : "");
      cell("outbox", store.queue_depth, "num");
      const oldest = store.oldest_event_age_s === null && store.queue_depth === 0
        ? "nothing waiting" : ago(store.oldest_event_age_s);
      cell("oldest", oldest);
      cell("dead-letters", store.dead_letters, store.dead_letters ? "num bad" : "num");
      cell("version", store.version);
      const [lag, lagClass] = lagText(store);
      cell("lag", lag, "num " + lagClass);
      cell("registers", registers(store.adapters));
      cell("gateway", store.gateway_id);
      cell("seen", when(store.last_seen_at, store.last_seen_age_s));
      body.append(row);
    }
  }

  async function flip(name, button) {
    const action = button.dataset.action;
    const question = action === "pause"
      ? "Pause the " + name + " in EVERY store of the chain? Registers stop offering it as " +
        "soon as their store has the new rules document."
      : "Resume the " + name + " in every store of the chain?";
    if (!confirm(question)) return;
    button.dataset.busy = "1";
    settle(button);
    try {
      await api("/_admin/programs/" + encodeURIComponent(name) + "/" + action,
        { by: operator.value.trim() || "fleet page" });
      actionAlertUntil = 0;
      await refresh(); // show the change at once, not at the next poll
    } catch (error) {
      if (error instanceof Unreachable) {
        await refresh();
        actionAlert("Central did not answer the switch (" + error.message + "): whether it " +
          "was made shows when central answers again.");
      } else {
        actionAlert(error.message);
      }
    } finally {
      delete button.dataset.busy;
      settle(button);
    }
  }

  function actionAlert(message) {
    actionAlertUntil = Date.now() + ACTION_ALERT_MS;
    alertBox(message);
  }

  async function poll() {
    try {
      const fleet = await api("/_admin/fleet");
      lastFleet = fleet;
      showReachable();
      renderHeader(fleet);
      renderPrograms(fleet);
      renderStores(fleet);
      document.body.dataset.refreshed = String(Date.now());
      if (Date.now() >= actionAlertUntil) alertBox(null);
    } catch (error) {
      if (error instanceof Unreachable) showUnreachable(error.message);
      else alertBox(error.message + (lastFleet ? " (showing the last answer)" : ""));
    }
  }

  // One poll at a time: a central that hangs must not pile up requests.
  let inFlight = null;
  async function refresh() {
    while (inFlight) await inFlight;
    inFlight = poll();
    try {
      await inFlight;
    } finally {
      inFlight = null;
    }
  }

  refresh();
  setInterval(() => {
    if (!inFlight) refresh();
  }, config.refreshMs);
})();
"""
