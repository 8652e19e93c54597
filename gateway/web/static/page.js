// What the admin pages share (the store's dashboard, central's fleet page); each page's own
// script comes after it and calls adminPage(). With an admin token, the page was opened once
// with ?token=; the token is kept in this tab's sessionStorage and sent as a bearer header. When
// the API does not answer (no connection, or no answer within config.timeoutMs), the banner on
// top says so, what the page still shows is greyed and its buttons are disabled. Everything the
// API says goes in through textContent only.
//
// options: operatorKey (where localStorage keeps the name in the #operator field), switches (a
// selector of the buttons that change something), offlineTitle (their tooltip while nobody
// answers, or none), and for the stop switch: programsPath (its POST goes to programsPath +
// program + "/pause" or "/resume"), operatorDefault (its "by" without a name), question(name,
// action) (the confirmation), unansweredSwitch(why) (the alert when nobody answered it).
"use strict";
function adminPage(options) {
  const config = JSON.parse(document.getElementById("config").textContent);
  const params = new URLSearchParams(location.search);
  if (params.has("token")) {
    sessionStorage.setItem(config.tokenKey, params.get("token"));
    history.replaceState(null, "", location.pathname); // out of the address bar and history
  }
  const $ = (id) => document.getElementById(id);
  const operator = $("operator");
  operator.value = localStorage.getItem(options.operatorKey) || "";
  operator.addEventListener("change", () => localStorage.setItem(options.operatorKey, operator.value));

  function headers(json) {
    const h = {};
    const token = sessionStorage.getItem(config.tokenKey);
    if (token) h.Authorization = "Bearer " + token;
    if (json) h["Content-Type"] = "application/json";
    return h;
  }

  // The API did not answer at all: the connection failed, or nothing came back in time.
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
        const why = await response.json().then((b) => b.detail || b.message || b.error, () => null);
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
    if (seconds < 86400) return Math.floor(seconds / 3600) + " h " + Math.floor((seconds % 3600) / 60) + " min";
    return Math.floor(seconds / 86400) + " d " + Math.floor((seconds % 86400) / 3600) + " h";
  }

  // A moment (a Date) as its clock time and how long ago it was; "never" without one.
  function moment(date, ageS) {
    if (!date) return "never";
    const clock = date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
    return clock + " (" + ago(ageS) + " ago)";
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

  // The buttons that change something (options.switches): disabled while the API does not
  // answer ("offline"), and while their own request runs ("busy").
  function settle(button) {
    button.disabled = Boolean(button.dataset.offline || button.dataset.busy);
    if (button.dataset.offline && options.offlineTitle) button.title = options.offlineTitle;
    else button.removeAttribute("title");
  }

  function setOffline(offline) {
    for (const button of document.querySelectorAll(options.switches)) {
      if (offline) button.dataset.offline = "1";
      else delete button.dataset.offline;
      settle(button);
    }
  }

  // A button's request: the button busy meanwhile, then the page asks again at once (the change
  // shows without waiting for the next poll). `unanswered(why)`: what the bar says when the API
  // did not answer it (by default, why).
  async function act(button, request, unanswered) {
    button.dataset.busy = "1";
    settle(button);
    try {
      await request();
      actionAlertUntil = 0; // done: an earlier button's trouble is over
      await refresh(); // show the change at once, not at the next poll
    } catch (error) {
      if (error instanceof Unreachable) {
        await refresh(); // shows the banner on top (or the change, had it been made)
        actionAlert(unanswered ? unanswered(error.message) : error.message);
      } else {
        actionAlert(error.message);
      }
    } finally {
      delete button.dataset.busy;
      settle(button);
    }
  }

  async function flip(name, button) {
    const action = button.dataset.action;
    if (!confirm(options.question(name, action))) return;
    const path = options.programsPath + encodeURIComponent(name) + "/" + action;
    const by = operator.value.trim() || options.operatorDefault;
    await act(button, () => api(path, { by }), options.unansweredSwitch);
  }

  // The stop switch, a row a program of config.programs: `describe(name, program)` says its
  // state, whether it is paused, its button's label and the notes beside it.
  function renderPrograms(programs, describe) {
    const list = $("program-list");
    for (const name of config.programs) {
      const program = (programs || {})[name];
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
      const { state, paused, label, notes } = describe(name, program);
      const badge = row.querySelector(".program-state");
      badge.textContent = state;
      badge.className = "program-state badge " + state;
      const button = row.querySelector(".program-switch");
      button.dataset.action = paused ? "resume" : "pause";
      button.textContent = label;
      button.className = "program-switch " + (paused ? "resume" : "pause");
      row.querySelector(".program-note").textContent = notes.join(" · ");
    }
  }

  // The page's own parts (see start): what it asks for, how it shows it, what it adds when the
  // API stops or starts answering again.
  let page = null;
  let answered = false;

  function showUnreachable(why) {
    document.body.classList.add("stale");
    document.body.dataset[config.subject] = "unreachable";
    show($("unreachable-detail"), page.unreachable(why));
    $("unreachable").hidden = false;
    setOffline(true);
  }

  function showReachable() {
    if (page.reachable) page.reachable();
    document.body.classList.remove("stale");
    document.body.dataset[config.subject] = "answering";
    $("unreachable").hidden = true;
    setOffline(false);
  }

  async function poll() {
    try {
      const answer = await page.load();
      answered = true;
      showReachable();
      page.render(answer);
      document.body.dataset.refreshed = String(Date.now());
      if (Date.now() >= actionAlertUntil) alertBox(null);
    } catch (error) {
      if (error instanceof Unreachable) showUnreachable(error.message);
      else alertBox(error.message + (answered ? " (showing the last answer)" : ""));
    }
  }

  // One poll at a time: an API that hangs must not pile up requests (each ends by timeout).
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

  // `parts`: load() (the answer, from api), render(answer), unreachable(why) (the banner's
  // text), and maybe reachable().
  function start(parts) {
    page = parts;
    refresh();
    setInterval(() => {
      if (!inFlight) refresh();
    }, config.refreshMs);
  }

  return { config, $, api, show, ago, moment, act, renderPrograms, start };
}
