"use strict";
// The pbx-bridge status page: plain DOM, no framework, no build step.
//
// Everything the daemon answers can carry vendor text (caller names, numbers, raw payloads,
// error messages), and vendor text is attacker-controlled: it goes in with textContent only.
// Nothing here builds HTML from strings.

const TOKEN_KEY = "pbx-bridge.token";
const POLL_MS = 5000;
const TAIL_MAX = 200; // events kept in the live tail, newest first
const MISSED_HOURS = 12;

const $ = (id) => document.getElementById(id);

class AuthFailure extends Error {}

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

let token = sessionStorage.getItem(TOKEN_KEY) || "";
let running = false; // signed in (or no token needed): polling and tailing
let pollTimer = null;
let tail = null; // the EventSource
let tailRetry = null;
let lastSeq = null; // the newest seq shown, to resume a stream we reopen ourselves
let serverNow = null; // the daemon's clock minus ours, in seconds (from /v1/sources)
const sinkResults = new Map(); // sink name -> what its last re-drive answered
const quarantineResults = new Map(); // entry id -> what its last reprocess answered

// -- talking to the daemon ----------------------------------------------------------------

async function api(path, { method = "GET", body } = {}) {
  const headers = { Accept: "application/json" };
  if (token) headers.Authorization = "Bearer " + token;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    cache: "no-store",
    credentials: "omit",
  });
  if (response.status === 401) throw new AuthFailure("unauthorized");
  let answer = null;
  try {
    answer = await response.json();
  } catch {
    answer = null;
  }
  if (!response.ok) {
    const detail = answer && typeof answer.detail === "string" ? answer.detail : "";
    throw new ApiError(response.status, `HTTP ${response.status}${detail ? ": " + detail : ""}`);
  }
  return answer;
}

function forbidden(what) {
  return `${what} needs a token with the admin scope (403). Sign in with an admin token.`;
}

// -- signing in and out -------------------------------------------------------------------

function showLogin(message) {
  $("login").hidden = false;
  const error = $("login-error");
  error.textContent = message || "";
  error.hidden = !message;
  $("token").value = "";
  $("token").focus();
}

function signedOut(message) {
  running = false;
  clearTimeout(pollTimer);
  closeTail();
  $("dashboard").hidden = true;
  $("logout").hidden = true;
  // No data stays on screen for a token that no longer works.
  for (const id of ["sources-body", "sinks-body", "quarantine-body", "missed-body", "tail-list"]) {
    $(id).replaceChildren();
  }
  sinkResults.clear();
  quarantineResults.clear();
  lastSeq = null;
  $("tail-empty").hidden = false;
  setLink("signed out", "muted");
  showLogin(message);
}

function forgetToken() {
  token = "";
  sessionStorage.removeItem(TOKEN_KEY);
}

$("login-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const typed = $("token").value.trim();
  if (!typed) return;
  if (!/^[\x21-\x7e]+$/.test(typed)) {
    // A header cannot carry it (fetch would refuse), and no configured token looks like that.
    showLogin("A token is printable ASCII without spaces: check what was pasted.");
    return;
  }
  token = typed;
  sessionStorage.setItem(TOKEN_KEY, token);
  start();
});

$("logout").addEventListener("click", () => {
  forgetToken();
  signedOut("");
});

async function start() {
  running = false;
  clearTimeout(pollTimer);
  closeTail();
  try {
    await refresh();
  } catch (error) {
    if (error instanceof AuthFailure) {
      const had = token !== "";
      forgetToken();
      signedOut(had ? "That token was not accepted (401)." : "");
      return;
    }
    setLink("daemon unreachable", "bad");
  }
  running = true;
  $("login").hidden = true;
  $("dashboard").hidden = false;
  $("logout").hidden = token === "";
  openTail();
  schedule();
}

// -- polling ------------------------------------------------------------------------------

function schedule() {
  clearTimeout(pollTimer);
  pollTimer = setTimeout(async () => {
    if (!running) return;
    try {
      await refresh();
    } catch (error) {
      if (error instanceof AuthFailure) {
        forgetToken();
        signedOut("The token is no longer accepted (401). Sign in again.");
        return;
      }
      setLink("daemon unreachable", "bad");
    }
    if (running) schedule();
  }, POLL_MS);
}

// Every polled section at once; a 401 anywhere signs out, other failures stay in their section.
async function refresh() {
  const sections = [
    ["sources", "v1/sources", renderSources, "read"],
    ["sinks", "v1/sinks", renderSinks, "read"],
    ["quarantine", "v1/quarantine?limit=100", renderQuarantine, "admin"],
    ["missed", missedPath(), renderMissed, "read"],
  ];
  const answers = await Promise.allSettled(sections.map(([, path]) => api(path)));
  let unreachable = 0;
  answers.forEach((answer, n) => {
    const [id, , render, scope] = sections[n];
    if (answer.status === "fulfilled") {
      sectionError(id, "");
      render(answer.value);
      return;
    }
    const error = answer.reason;
    if (error instanceof AuthFailure) return;
    if (error instanceof ApiError && error.status === 403) {
      sectionError(id, `This token may not see this (403): it needs the ${scope} scope.`);
    } else if (error instanceof ApiError) {
      sectionError(id, error.message);
    } else {
      unreachable += 1;
    }
  });
  if (answers.some((a) => a.status === "rejected" && a.reason instanceof AuthFailure)) {
    throw new AuthFailure("unauthorized");
  }
  if (unreachable === sections.length) throw new Error("unreachable");
  setLink(unreachable ? "partly unreachable" : "connected", unreachable ? "warn" : "ok");
  $("updated").textContent = "updated " + new Date().toLocaleTimeString();
}

function sectionError(id, message) {
  const box = $(id).querySelector(".section-error");
  box.textContent = message;
  box.hidden = !message;
}

function missedPath() {
  const now = serverNow === null ? Date.now() / 1000 : Date.now() / 1000 + serverNow;
  const since = Math.floor(now - MISSED_HOURS * 3600);
  return `v1/calls?missed=true&since=${since}&limit=100`;
}

// -- small DOM helpers (text only) --------------------------------------------------------

function el(tag, { text, cls, title, data } = {}, ...children) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  if (title) node.title = String(title);
  if (data) for (const [key, value] of Object.entries(data)) node.dataset[key] = String(value);
  node.append(...children);
  return node;
}

function td(text, cls) {
  return el("td", { text: text ?? "—", cls });
}

// An action cell: a button (or none) and what its last click answered.
function actionCell(button, result) {
  const cell = el("td", { cls: "action" });
  if (button) {
    const node = el("button", { text: button.text, cls: button.cls });
    node.type = "button";
    node.disabled = Boolean(button.disabled);
    node.addEventListener("click", () => button.run(node));
    cell.append(node);
  }
  if (result) cell.append(el("span", { text: result, cls: "result" }));
  return cell;
}

function pill(text, tone) {
  return el("span", { text, cls: "pill " + tone });
}

function setLink(text, tone) {
  const link = $("link");
  link.textContent = text;
  link.className = "pill " + tone;
}

function age(seconds) {
  if (seconds === null || seconds === undefined) return "never";
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min ago`;
  return `${Math.floor(s / 86400)} d ago`;
}

function clock(value) {
  const date = typeof value === "number" ? new Date(value * 1000) : new Date(value);
  if (Number.isNaN(date.getTime())) return String(value ?? "—");
  const today = date.toDateString() === new Date().toDateString();
  return today ? date.toLocaleTimeString() : date.toLocaleString();
}

function statusTone(status) {
  if (status.startsWith("2")) return "ok";
  if (status === "401" || status === "403" || status.startsWith("5")) return "bad";
  return "warn";
}

const STATE_TONES = {
  running: "ok",
  new: "muted",
  backoff: "bad",
  stopping: "warn",
  stopped: "bad",
};
const BREAKER_TONES = { closed: "ok", half_open: "warn", open: "bad" };

// -- sections -----------------------------------------------------------------------------

function renderSources(body) {
  serverNow = body.now - Date.now() / 1000;
  const rows = body.sources.map((source) => {
    const answers = el("td", { cls: "chips" });
    for (const [status, count] of Object.entries(source.responses)) {
      answers.append(pill(`${status} × ${count}`, statusTone(status)));
    }
    if (!answers.childElementCount) answers.textContent = "—";
    const failures = td(source.auth_failures, "num" + (source.auth_failures ? " bad-text" : ""));
    return el(
      "tr",
      { data: { source: source.name } },
      td(source.name, "name"),
      td(source.vendor),
      td(source.last_push === null ? "never" : age(body.now - source.last_push), "last-push"),
      answers,
      failures,
      realtimeCell(source.realtime),
    );
  });
  $("sources-body").replaceChildren(...rows);
}

function realtimeCell(realtime) {
  const cell = el("td", { cls: "realtime" });
  if (!realtime) {
    cell.textContent = "—";
    return cell;
  }
  const since = realtime.for_s === null ? "" : " for " + age(realtime.for_s).replace(" ago", "");
  cell.append(
    realtime.connected ? pill("connected" + since, "ok") : pill("disconnected" + since, "bad"),
  );
  cell.title = `${realtime.connects} connects, ${realtime.messages} messages`;
  if (!realtime.connected && realtime.last_error) {
    cell.append(el("div", { text: realtime.last_error, cls: "muted small" }));
  }
  return cell;
}

function renderSinks(body) {
  const rows = body.sinks.map((sink) => {
    const name = el("td", { cls: "name", title: sink.url || sink.stream || "" });
    name.append(el("div", { text: sink.name }), el("div", { text: sink.type, cls: "muted small" }));
    const state = el("td");
    if (sink.disabled) state.append(pill("disabled", "bad")); // the receiver said 410 Gone
    else state.append(pill(sink.state, STATE_TONES[sink.state] || "warn"));
    const breaker = el("td");
    if (sink.breaker) {
      breaker.append(pill(sink.breaker.replace("_", " "), BREAKER_TONES[sink.breaker] || "warn"));
    } else if (sink.connected !== undefined) {
      // NATS: no breaker, a connection.
      const up = sink.connected;
      breaker.append(pill(up ? "connected" : "disconnected", up ? "ok" : "bad"));
    } else {
      breaker.textContent = "—";
    }
    // Held in memory but not in flight: waiting for a retry, or behind a call's waiting event.
    const waiting =
      sink.waiting ?? (sink.in_memory === undefined ? null : sink.in_memory - sink.in_flight);
    const dead = sink.dead;
    const deadCell = td(dead ?? "—", "num dead" + (dead ? " bad-text" : ""));
    const action =
      dead === undefined
        ? actionCell(null, sinkResults.get(sink.name))
        : actionCell(
            { text: "Re-drive", cls: "redrive", disabled: !dead, run: (b) => redrive(sink.name, b) },
            sinkResults.get(sink.name),
          );
    return el(
      "tr",
      { data: { sink: sink.name } },
      name,
      state,
      td(sink.lag, "num lag"),
      td(sink.in_flight, "num"),
      td(waiting, "num"),
      breaker,
      td(sink.last_error || "", "error-text"),
      deadCell,
      action,
    );
  });
  $("sinks-body").replaceChildren(...rows);
}

async function redrive(name, button) {
  button.disabled = true;
  try {
    const answer = await api(`v1/sinks/${encodeURIComponent(name)}/dead/retry`, {
      method: "POST",
      body: { all: true },
    });
    const n = answer.retried;
    sinkResults.set(name, `re-drove ${n}`);
    notice(`${name}: ${n} dead letter${n === 1 ? "" : "s"} re-driven.`, "ok");
  } catch (error) {
    actionFailed("Re-drive", error);
  }
  await refreshSoon();
}

function renderQuarantine(body) {
  const rows = body.entries.map((entry) => {
    const problem = [entry.field, entry.error].filter(Boolean).join(": ");
    const action = actionCell(
      { text: "Reprocess", cls: "reprocess", run: (b) => reprocess(entry.id, b) },
      quarantineResults.get(entry.id),
    );
    return el(
      "tr",
      { data: { entry: entry.id } },
      td(entry.id, "num"),
      td(entry.source),
      td(clock(entry.received_at)),
      td(problem, "error-text"),
      td(entry.seen, "num"),
      action,
    );
  });
  $("quarantine-body").replaceChildren(...rows);
  $("quarantine-empty").hidden = rows.length > 0;
}

async function reprocess(id, button) {
  button.disabled = true;
  try {
    const answer = await api("v1/quarantine/reprocess", { method: "POST", body: { ids: [id] } });
    const result = answer.results[0];
    const done = result !== undefined && result.result === "reprocessed";
    let text;
    if (!result) text = "no longer held";
    else if (done) text = `reprocessed: ${result.events} events, ${result.new} new`;
    else text = `failed: ${[result.field, result.error].filter(Boolean).join(": ")}`;
    quarantineResults.set(id, text);
    notice(`Quarantine entry ${id}: ${text}.`, done ? "ok" : "bad");
    button.disabled = false;
  } catch (error) {
    actionFailed("Reprocess", error);
  }
  await refreshSoon();
}

function actionFailed(what, error) {
  if (error instanceof AuthFailure) {
    forgetToken();
    signedOut("The token is no longer accepted (401). Sign in again.");
  } else if (error instanceof ApiError && error.status === 403) {
    // The token reads but may not act: ask for one that may, and keep the page as it is.
    showLogin(forbidden(what));
    notice(forbidden(what), "bad");
  } else {
    notice(`${what} failed: ${error.message}`, "bad");
  }
}

async function refreshSoon() {
  if (!running) return;
  try {
    await refresh();
  } catch (error) {
    if (error instanceof AuthFailure) {
      forgetToken();
      signedOut("The token is no longer accepted (401). Sign in again.");
    }
  }
}

function notice(text, tone) {
  const box = $("notice");
  box.textContent = text;
  box.className = "notice " + tone;
  box.hidden = false;
}

function renderMissed(body) {
  const rows = body.calls.map((call) => {
    const timings = call.timings || {};
    return el(
      "tr",
      { data: { call: call.call_key } },
      td(clock(timings.started_at || timings.ended_at || call.updated_at)),
      td(call.source),
      td(call.from),
      td(call.to || call.did),
      td(call.queue),
      td(call.call_key, "mono"),
    );
  });
  $("missed-body").replaceChildren(...rows);
  $("missed-empty").hidden = rows.length > 0;
  $("missed-hours").textContent = String(MISSED_HOURS);
}

// -- the live tail ------------------------------------------------------------------------

function setTail(text, tone) {
  const state = $("tail-state");
  state.textContent = text;
  state.className = "pill " + tone;
}

function closeTail() {
  clearTimeout(tailRetry);
  if (tail) tail.close();
  tail = null;
}

function openTail() {
  closeTail();
  // EventSource cannot send headers: the token goes in the query, as the daemon allows.
  const params = new URLSearchParams();
  if (token) params.set("access_token", token);
  const types = $("type-filter").value.trim();
  if (types) params.set("type", types);
  if (lastSeq !== null) params.set("after", String(lastSeq));
  const query = params.toString();
  const stream = new EventSource("v1/events/stream" + (query ? "?" + query : ""));
  tail = stream;
  setTail("connecting", "warn");
  stream.onopen = () => setTail("live", "ok");
  stream.onmessage = (message) => {
    let event;
    try {
      event = JSON.parse(message.data);
    } catch {
      return;
    }
    addEvent(event);
  };
  stream.onerror = () => {
    if (tail !== stream) return;
    if (stream.readyState !== EventSource.CLOSED) {
      setTail("reconnecting", "warn"); // the browser retries by itself, from Last-Event-ID
      return;
    }
    // Refused (a bad filter, a token gone) or the daemon gone: the poll sorts out a 401;
    // try again a little later from where we were.
    stream.close();
    tail = null;
    setTail("disconnected", "bad");
    tailRetry = setTimeout(() => {
      if (running) openTail();
    }, POLL_MS);
  };
}

$("filter-form").addEventListener("submit", (event) => {
  event.preventDefault();
  lastSeq = null; // a new filter starts from now
  $("tail-list").replaceChildren();
  $("tail-empty").hidden = false;
  if (running) openTail();
});

const TYPE_TONES = {
  "call.missed": "bad",
  "call.missed_revoked": "warn",
  "call.answered": "ok",
  "call.completed": "ok",
  "call.ringing": "warn",
  "source.status": "info",
  "raw.unmapped": "warn",
};

function summary(data) {
  if (!data || typeof data !== "object") return "";
  const parts = [];
  if (data.from || data.to) parts.push(`${data.from ?? "?"} → ${data.to ?? "?"}`);
  for (const key of ["target", "agent", "queue", "disposition", "missed_reason", "state"]) {
    if (typeof data[key] === "string" && data[key]) parts.push(`${key} ${data[key]}`);
  }
  if (data.extension) parts.push(`ext ${data.extension}`);
  return parts.join(" · ");
}

function addEvent(event) {
  if (typeof event.seq === "number") lastSeq = Math.max(lastSeq ?? 0, event.seq);
  const type = String(event.type ?? "");
  const tone = TYPE_TONES[type] || (type.startsWith("call.") ? "call" : "muted");
  const raw = el("pre", { text: JSON.stringify(event, null, 2) });
  const details = el("details", {}, el("summary", { text: "event" }), raw);
  const row = el(
    "li",
    { cls: "event", data: { seq: event.seq ?? "", type, subject: event.subject ?? "" } },
    el("time", { text: clock(event.time), title: event.time }),
    el("span", { text: type, cls: "type pill " + tone }),
    el("span", { text: event.subject ?? "", cls: "subject mono" }),
    el("span", { text: event.source ?? "", cls: "source muted" }),
    el("span", { text: summary(event.data), cls: "summary" }),
    details,
  );
  const list = $("tail-list");
  list.prepend(row);
  while (list.childElementCount > TAIL_MAX) list.lastElementChild.remove();
  $("tail-empty").hidden = true;
}

start();
