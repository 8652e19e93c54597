// The dashboard's script: fetches /status and /history, fills the page, flips the stop switch.
// Gateway data goes in through textContent only. With an admin token, the page was opened once
// with ?token=; the token is kept in this tab's sessionStorage and sent as a bearer header.
// When the gateway does not answer (no connection, or no answer within config.timeoutMs), the
// page says UNREACHABLE on top with the time of the last answer, and greys what it still shows.
"use strict";
(() => {
  const config = JSON.parse(document.getElementById("config").textContent);
  const TOKEN_KEY = "gatewayToken";
  const params = new URLSearchParams(location.search);
  if (params.has("token")) {
    sessionStorage.setItem(TOKEN_KEY, params.get("token"));
    history.replaceState(null, "", "/"); // out of the address bar and the tab's history
  }
  const $ = (id) => document.getElementById(id);
  const operator = $("operator");
  operator.value = localStorage.getItem("gatewayOperator") || "";
  operator.addEventListener("change", () => localStorage.setItem("gatewayOperator", operator.value));

  let lastStatus = null;
  let lastAnswerAt = null; // Unix time of the gateway's last answer, by this browser's clock
  const pageTitle = document.title;
  let seenState = null; // when /history cannot say since when, the page's own observation
  let seenSince = null;
  let seenSinceExact = false;

  function headers(json) {
    const h = {};
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) h.Authorization = "Bearer " + token;
    if (json) h["Content-Type"] = "application/json";
    return h;
  }

  // The gateway did not answer at all: the connection failed, or nothing came back in time.
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
      if (response.status === 401) throw new Error("The admin token was refused: open the page again with ?token=");
      if (!response.ok) {
        // The API says why in JSON (a refused Host name or origin names what to configure).
        const why = await response.json().then((b) => b.detail || b.error, () => null);
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

  function text(id, value, cls) {
    const el = $(id);
    el.textContent = value === null || value === undefined ? "—" : String(value);
    if (cls !== undefined) el.className = cls;
  }

  function ago(seconds) {
    if (seconds === null || seconds === undefined) return "—";
    seconds = Math.max(0, Math.round(seconds));
    if (seconds < 60) return seconds + " s";
    if (seconds < 3600) return Math.floor(seconds / 60) + " min " + (seconds % 60) + " s";
    if (seconds < 86400) return Math.floor(seconds / 3600) + " h " + Math.floor((seconds % 3600) / 60) + " min";
    return Math.floor(seconds / 86400) + " d " + Math.floor((seconds % 86400) / 3600) + " h";
  }

  function when(unix) {
    if (!unix) return "never";
    const clock = new Date(unix * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
    return clock + " (" + ago(Date.now() / 1000 - unix) + " ago)";
  }

  // The red bar under the header. What a button's request ran into stays for a while; what a
  // poll ran into goes with the next good poll.
  const ACTION_ALERT_MS = 60000;
  let actionAlertUntil = 0;

  function alertBox(message) {
    const box = $("alert");
    box.hidden = !message;
    box.textContent = message || "";
  }

  function actionAlert(message) {
    actionAlertUntil = Date.now() + ACTION_ALERT_MS;
    alertBox(message);
  }

  // The buttons that change the gateway: disabled while it does not answer ("offline"), and
  // while their own request runs ("busy").
  function switches() {
    return [...document.querySelectorAll(".program-switch"), $("retry-dead-letters")];
  }

  function settle(button) {
    button.disabled = Boolean(button.dataset.offline || button.dataset.busy);
    if (button.dataset.offline) button.title = "The gateway is not answering";
    else button.removeAttribute("title");
  }

  // The top of the page says the gateway is not answering, since when, and why; the badge no
  // longer shows central's last state; everything still on the page is greyed (its last answer).
  function showUnreachable(why) {
    document.body.classList.add("stale");
    document.body.dataset.gateway = "unreachable";
    document.title = "UNREACHABLE · " + pageTitle;
    const since = lastAnswerAt
      ? "last answer at " + when(lastAnswerAt)
      : "no answer since this page was opened";
    text("unreachable-detail", "The gateway is not answering (" + why + "); " + since +
      ". Everything below is from that answer. Is the service running?");
    $("unreachable").hidden = false;
    text("central-state", "UNREACHABLE", "badge UNREACHABLE");
    text("central-since", lastAnswerAt ? "last answer at " + when(lastAnswerAt) : "");
    for (const button of switches()) {
      button.dataset.offline = "1";
      settle(button);
    }
  }

  function showReachable() {
    lastAnswerAt = Date.now() / 1000;
    document.body.dataset.answered = String(Math.round(lastAnswerAt * 1000));
    document.body.classList.remove("stale");
    document.body.dataset.gateway = "answering";
    document.title = pageTitle;
    $("unreachable").hidden = true;
    for (const button of switches()) {
      delete button.dataset.offline;
      settle(button);
    }
  }

  function renderHeader(status, hist) {
    text("store", status.store_id + " · " + status.gateway_id);
    const state = status.central.state;
    text("central-state", state, "badge " + state);
    let since = null;
    let exact = true;
    if (hist && hist.central && hist.central.state === state && hist.central.since) {
      since = hist.central.since;
    } else {
      if (state !== seenState) {
        seenSinceExact = seenState !== null; // a change seen between two polls
        seenState = state;
        seenSince = Date.now() / 1000;
      }
      since = seenSince;
      exact = seenSinceExact;
    }
    text("central-since", (exact ? "since " : "at least since ") + when(since));
    text("version", status.version);
    text("uptime", ago(status.uptime_s));
    text("updated", new Date().toLocaleTimeString());
  }

  function renderPrograms(status, hist) {
    const list = $("program-list");
    for (const name of config.programs) {
      const program = (status.programs || {})[name];
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
      state.textContent = program.state;
      state.className = "program-state badge " + program.state;
      const button = row.querySelector(".program-switch");
      const pausedHere = program.paused_here;
      button.dataset.action = pausedHere ? "resume" : "pause";
      button.textContent = pausedHere ? "Resume " + name : "Pause " + name;
      button.className = "program-switch " + (pausedHere ? "resume" : "pause");
      const notes = [];
      if (program.paused_by_central) notes.push("paused by central for every store");
      const switched = hist && hist.switches ? hist.switches[name] : null;
      if (switched) notes.push((switched.paused ? "paused" : "resumed") + " by " + switched.by + " at " + when(switched.at));
      row.querySelector(".program-note").textContent = notes.join(" · ");
    }
  }

  async function flip(name, button) {
    const action = button.dataset.action;
    const question = action === "pause"
      ? "Pause the " + name + " in this store? Registers stop offering it with their next request."
      : "Resume the " + name + " in this store?";
    if (!confirm(question)) return;
    button.dataset.busy = "1";
    settle(button);
    try {
      await api("/programs/" + encodeURIComponent(name) + "/" + action, { by: operator.value.trim() || "dashboard" });
      actionAlertUntil = 0; // done: an earlier button's trouble is over
      await refresh(); // show the change at once, not at the next poll
    } catch (error) {
      if (error instanceof Unreachable) {
        await refresh(); // shows UNREACHABLE on top (or the switch, had it been made)
        actionAlert("The gateway did not answer the switch (" + error.message + "): whether it was made shows when the gateway answers again.");
      } else {
        actionAlert(error.message);
      }
    } finally {
      delete button.dataset.busy;
      settle(button);
    }
  }

  function renderChart(points, now, span) {
    const svg = $("outbox-chart");
    const ns = "http://www.w3.org/2000/svg";
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    const max = Math.max(1, ...points.map((p) => p.depth));
    text("chart-max", "max " + max);
    text("chart-start", "−" + Math.round(span / 60) + " min");
    if (points.length === 0) return;
    const x = (at) => Math.max(0, Math.min(300, 300 - ((now - at) / span) * 300));
    const y = (depth) => 78 - (depth / max) * 74;
    const coords = points.map((p) => x(p.at).toFixed(1) + "," + y(p.depth).toFixed(1));
    const area = document.createElementNS(ns, "polygon");
    area.setAttribute("points", x(points[0].at).toFixed(1) + ",78 " + coords.join(" ") + " " + x(points[points.length - 1].at).toFixed(1) + ",78");
    area.setAttribute("fill", "#c9d7f2");
    const line = document.createElementNS(ns, "polyline");
    line.setAttribute("points", coords.join(" "));
    line.setAttribute("fill", "none");
    line.setAttribute("stroke", "#3559a8");
    line.setAttribute("stroke-width", "1.5");
    line.setAttribute("vector-effect", "non-scaling-stroke");
    svg.append(area, line);
  }

  function renderBody(status, hist) {
    const outbox = status.outbox || {};
    text("outbox-depth", outbox.depth);
    text("outbox-oldest", outbox.oldest_age_s === null ? "nothing waiting" : ago(outbox.oldest_age_s));
    const now = hist ? hist.now : Date.now() / 1000;
    renderChart(hist ? hist.outbox : [], now, hist ? hist.window_s : 3600);

    const sync = status.sync || {};
    const standalone = status.central.state === "STANDALONE";
    text("last-delivery", standalone ? "standalone" : when(sync.last_delivery));
    text("last-refresh", standalone ? "standalone" : when(sync.last_refresh));
    const cache = status.cache || {};
    text("members", cache.members);
    text("coupons", cache.coupons);
    text("rules-version", cache.rules_version || "default (none loaded)");
    text("checks-posted", (status.checks || {}).posted);

    const adapters = $("adapters");
    adapters.replaceChildren();
    for (const [name, adapter] of Object.entries(status.adapters || {})) {
      const row = document.createElement("tr");
      row.dataset.adapter = name;
      for (const value of [name, adapter.state, adapter.connections]) {
        const cell = document.createElement("td");
        cell.textContent = value === undefined ? "—" : String(value);
        row.append(cell);
      }
      row.lastChild.className = "num";
      adapters.append(row);
      // Each register this adapter heard from, with its last request and when.
      for (const register of adapter.registers || []) {
        const line = document.createElement("tr");
        line.className = "register";
        line.dataset.register = register.source_id;
        const label = "register " + register.source_id + " (" + (register.last_command || "—") + ")";
        for (const value of ["", label, when(register.last_seen)]) {
          const cell = document.createElement("td");
          cell.textContent = value;
          line.append(cell);
        }
        adapters.append(line);
      }
    }
    text("last-request", hist ? when(hist.last_request_at) : "—");
    text("last-connection-change", hist ? when(hist.last_connection_change_at) : "—");

    text("dead-letters", status.dead_letters, status.dead_letters ? "bad" : "");
    text("conflicts", status.offline_conflicts, status.offline_conflicts ? "warn" : "");
    text("storage", status.storage_full ? "FULL" : "ok", status.storage_full ? "bad" : "");
    text("database", status.database_problem || "writable", status.database_problem ? "bad" : "");
    const skew = status.clock_skew;
    text(
      "clock",
      skew
        ? "behind the registers? they send " + skew.register_business_date + ", this gateway says " +
            skew.gateway_date + " (" + skew.refused_checks + " checks refused): check the time sync"
        : "ok",
      skew ? "bad" : "",
    );
    text("disk-free", status.disk_free_mb + " MB");
    $("retry-dead-letters").hidden = !(config.retryAvailable && status.dead_letters > 0);

    // Requests over the last hour: now's counters minus those at the window's start.
    const baseline = hist ? hist.requests_at_window_start : {};
    const requests = $("requests");
    requests.replaceChildren();
    for (const [key, count] of Object.entries(status.requests || {}).sort()) {
      const n = count - (baseline[key] || 0);
      if (n <= 0) continue;
      const [command, outcome] = key.split(":");
      const row = document.createElement("tr");
      row.dataset.key = key;
      for (const value of [command, outcome, n]) {
        const cell = document.createElement("td");
        cell.textContent = String(value);
        row.append(cell);
      }
      row.lastChild.className = "num";
      if (outcome !== "ok") row.children[1].className = "warn";
      requests.append(row);
    }
  }

  async function poll() {
    try {
      const [status, hist] = await Promise.all([
        api("/status"),
        config.historyAvailable ? api("/history") : Promise.resolve(null),
      ]);
      lastStatus = status;
      showReachable();
      renderHeader(status, hist);
      renderPrograms(status, hist);
      renderBody(status, hist);
      document.body.dataset.refreshed = String(Date.now());
      if (Date.now() >= actionAlertUntil) alertBox(null);
    } catch (error) {
      if (error instanceof Unreachable) {
        showUnreachable(error.message);
      } else {
        alertBox(error.message + (lastStatus ? " (showing the last answer)" : ""));
      }
    }
  }

  // One poll at a time: a gateway that hangs must not pile up requests (each ends by timeout).
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

  $("retry-dead-letters").addEventListener("click", async (event) => {
    const n = lastStatus ? lastStatus.dead_letters : 0;
    if (!confirm("Send the " + n + " dead letter(s) to central again? Central de-duplicates, nothing counts twice.")) return;
    const button = event.target;
    button.dataset.busy = "1";
    settle(button);
    try {
      await api("/dead-letters/retry", {});
      actionAlertUntil = 0;
      await refresh();
    } catch (error) {
      if (error instanceof Unreachable) await refresh();
      actionAlert(error.message);
    } finally {
      delete button.dataset.busy;
      settle(button);
    }
  });

  refresh();
  setInterval(() => {
    if (!inFlight) refresh();
  }, config.refreshMs);
})();
