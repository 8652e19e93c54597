// The dashboard's own script, after the admin pages' shared one (gateway/web/static/page.js):
// fetches /status and /history, fills the page, flips the stop switch, retries dead letters.
// When the gateway does not answer, the banner on top says UNREACHABLE with the time of the last
// answer, and the badge no longer shows central's last state.
"use strict";
(() => {
  const page = adminPage({
    operatorKey: "gatewayOperator",
    switches: ".program-switch, #retry-dead-letters",
    offlineTitle: "The gateway is not answering",
    programsPath: "/programs/",
    operatorDefault: "dashboard",
    question: (name, action) => action === "pause"
      ? "Pause the " + name + " in this store? Registers stop offering it with their next request."
      : "Resume the " + name + " in this store?",
    unansweredSwitch: (why) => "The gateway did not answer the switch (" + why + "): whether it was made shows when the gateway answers again.",
  });
  const { config, $, api, ago } = page;
  const text = (id, value, cls) => page.show($(id), value, cls);
  const when = (unix) => page.moment(unix && new Date(unix * 1000), Date.now() / 1000 - unix);

  let lastStatus = null;
  let lastAnswerAt = null; // Unix time of the gateway's last answer, by this browser's clock
  const pageTitle = document.title;
  let seenState = null; // when /history cannot say since when, the page's own observation
  let seenSince = null;
  let seenSinceExact = false;

  // Besides the banner: the title says it, and the badge no longer shows central's last state.
  function unreachable(why) {
    document.title = "UNREACHABLE · " + pageTitle;
    const since = lastAnswerAt
      ? "last answer at " + when(lastAnswerAt)
      : "no answer since this page was opened";
    text("central-state", "UNREACHABLE", "badge UNREACHABLE");
    text("central-since", lastAnswerAt ? "last answer at " + when(lastAnswerAt) : "");
    return "The gateway is not answering (" + why + "); " + since +
      ". Everything below is from that answer. Is the service running?";
  }

  function reachable() {
    lastAnswerAt = Date.now() / 1000;
    document.body.dataset.answered = String(Math.round(lastAnswerAt * 1000));
    document.title = pageTitle;
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
    page.renderPrograms(status.programs, (name, program) => {
      const notes = [];
      if (program.paused_by_central) notes.push("paused by central for every store");
      const switched = hist && hist.switches ? hist.switches[name] : null;
      if (switched) notes.push((switched.paused ? "paused" : "resumed") + " by " + switched.by + " at " + when(switched.at));
      const pausedHere = program.paused_here;
      const label = pausedHere ? "Resume " + name : "Pause " + name;
      return { state: program.state, paused: pausedHere, label, notes };
    });
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

  $("retry-dead-letters").addEventListener("click", (event) => {
    const n = lastStatus ? lastStatus.dead_letters : 0;
    if (!confirm("Send the " + n + " dead letter(s) to central again? Central de-duplicates, nothing counts twice.")) return;
    page.act(event.target, () => api("/dead-letters/retry", {}));
  });

  page.start({
    load: () => Promise.all([
      api("/status"),
      config.historyAvailable ? api("/history") : Promise.resolve(null),
    ]),
    render: ([status, hist]) => {
      lastStatus = status;
      renderHeader(status, hist);
      renderPrograms(status, hist);
      renderBody(status, hist);
    },
    unreachable,
    reachable,
  });
})();
