"""The fleet page's own markup, CSS and JavaScript (served by `fleet.render_page`, in the admin
pages' shared frame after their shared style and script: `gateway.web.page`; no build step).

Kept as Python strings, so the page travels with the package wherever `sync` is installed. The
script fetches `/_admin/fleet` and refreshes every few seconds; it writes everything central
says through `textContent`, never as markup. The stop switch posts JSON to
`/_admin/programs/{program}/pause|resume` from the page's own origin (with the admin token as a
bearer header when the page was opened with `?token=`).
"""

from __future__ import annotations

PAGE = """<!-- Shown while central does not answer: the rows below are its last answer. -->
<div id="unreachable" class="banner-unreachable" role="alert" hidden>
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
"""

CSS = """
h2 .small { text-transform: none; letter-spacing: 0; font-weight: 400; }
main { grid-template-columns: minmax(0, 1fr); }
.summary { font-weight: 600; }
.scroll { overflow-x: auto; }
th, td { text-align: left; padding: 4px 6px; border-bottom: 1px solid var(--line);
  white-space: nowrap; }
th { color: #4a525c; font-weight: 600; font-size: 13px; }
tr.OFFLINE td { background: #fdf0ef; }
.warn, .bad { font-weight: 600; }
body.stale main td, body.stale #updated { color: var(--stale); }
"""

SCRIPT = r"""
// The fleet page's own script, after the admin pages' shared one (gateway/web/static/page.js):
// fetches /_admin/fleet, fills the table, flips the chain's switch.
"use strict";
(() => {
  const page = adminPage({
    operatorKey: "centralOperator",
    switches: ".program-switch",
    programsPath: "/_admin/programs/",
    operatorDefault: "fleet page",
    question: (name, action) => action === "pause"
      ? "Pause the " + name + " in EVERY store of the chain? Registers stop offering it as " +
        "soon as their store has the new rules document."
      : "Resume the " + name + " in every store of the chain?",
    unansweredSwitch: (why) => "Central did not answer the switch (" + why + "): whether it " +
      "was made shows when central answers again.",
  });
  const { $, api, show, ago } = page;

  // A stamp of central's clock, and its age as central counted it (not this browser's clock).
  const when = (stamp, age) => page.moment(stamp && new Date(stamp), age);

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
    page.renderPrograms(fleet.programs, (name, program) => {
      const notes = [];
      if (program.by) {
        notes.push((program.paused ? "paused" : "resumed") + " by " + program.by +
          (program.at ? " at " + new Date(program.at).toLocaleString() : ""));
      }
      if (fleet.rules) notes.push("rules version " + fleet.rules.version);
      const label = (program.paused ? "Resume " : "Pause ") + name + " in every store";
      return { state: program.paused ? "paused" : "running", paused: program.paused, label, notes };
    });
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

  page.start({
    load: () => api("/_admin/fleet"),
    render: (fleet) => {
      renderHeader(fleet);
      renderPrograms(fleet);
      renderStores(fleet);
    },
    unreachable: (why) => "Central's admin API is not answering (" + why +
      "); what is below is its last answer.",
  });
})();
"""
