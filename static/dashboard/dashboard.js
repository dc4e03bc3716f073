// The Spark Control dashboard. State comes embedded in the page, then from the /ws/swaps/ websocket; after every
// (re)connection it is re-read from the REST API, and the swap log catches up by sequence number.
// Values from outside are rendered with DOM text APIs only (see dom.js).

import { scheduledActions } from "./actions.js";
import { api, apiGet, whenSignedOut } from "./api.js";
import { $, fill, h } from "./dom.js";
import { SwapFeed } from "./feed.js";
import {
  formatAbsolute,
  formatClock,
  formatCountdown,
  formatDuration,
  formatRelative,
  parseTime,
} from "./format.js";
import { LiveSocket } from "./live.js";
import { renderProgress } from "./progress.js";

const initial = JSON.parse(document.getElementById("dashboard-state").textContent);
const STEPS = initial.steps;
const TERMINAL = new Set(initial.terminal);
const STEP_LABELS = {
  preflight: "Pre-flight",
  stopping: "Stopping",
  launching: "Launching",
  loading: "Loading",
  ready: "Ready",
};
const LOG_KEEP = 2000;
const HISTORY_SIZE = 12;
const STALE_AFTER_MS = 24 * 3600 * 1000;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

const state = {
  user: initial.user,
  serving: initial.status.serving,
  lock: null,
  models: initial.models,
  endpoints: initial.endpoints,
  schedule: initial.schedule,
  history: initial.history,
  shown: null, // the swap in the Swap panel: the active one, else the last one followed or finished
  reached: new Set(), // states the shown swap has been through (from its state events)
  lastActive: null, // its last non-terminal step, to mark where a failure happened
  refusal: null, // the last 423 answer, with the model it was for
  validation: null, // {key, result | error}
};

const panels = {
  serving: $("#now-serving .card-body"),
  swapHead: $("#active-swap .swap-head"),
  stepper: $("#active-swap .stepper"),
  progress: $("#active-swap .swap-progress"),
  swapNotice: $("#active-swap .swap-notice"),
  log: $("#swap-log"),
  catalogNotice: $("#catalog-notice"),
  models: $("#catalog .models"),
  tiles: $("#services .tiles"),
  schedule: $("#schedule .table-wrap"),
  history: $("#history .table-wrap"),
  actions: scheduledActions($("#scheduled-actions")),
  lock: $("#lock-banner"),
  connection: $("#connection"),
  session: $("#session-notice"),
};

// --- helpers -----------------------------------------------------------------------------------------------

function swapUrl(id) {
  return UUID.test(id) ? initial.urls.swap_detail.replace("00000000-0000-0000-0000-000000000000", id) : "#";
}

function badge(text, kind) {
  return h("span", { class: `badge${kind ? ` ${kind}` : ""}`, text });
}

function stateBadge(swapState) {
  return h("span", { class: `badge state-${swapState}`, text: swapState });
}

function timeEl(value, mode = "relative") {
  const text = mode === "relative" ? formatRelative(value) : formatAbsolute(value);
  return h("time", { datetime: value || "", title: formatAbsolute(value), dataset: { rel: mode }, text });
}

function modelByKey(key) {
  return state.models.find((model) => model.key === key) || null;
}

function activeSwap() {
  const swap = state.shown;
  return swap && !swap.dry_run && !TERMINAL.has(swap.state) ? swap : null;
}

const dialog = $("#confirm-dialog");

// A modal confirmation; resolves true when confirmed. (Not window.confirm: a page can be told apart from one
// that opens dialogs it did not mean to, and this one is styled and says exactly what will happen.)
function confirmAction({ title, body, confirmLabel, danger = false }) {
  fill($("#confirm-title", dialog), title);
  fill($(".dialog-body", dialog), body);
  const ok = $("#confirm-ok", dialog);
  ok.textContent = confirmLabel;
  ok.className = `btn ${danger ? "btn-danger" : "btn-primary"}`;
  dialog.returnValue = "";
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "confirm"), { once: true });
    dialog.showModal();
  });
}

function notice(el, kind, ...children) {
  fill(el, h("div", { class: `notice notice-${kind}`, role: kind === "error" ? "alert" : "status" }, ...children));
}

// --- now serving -------------------------------------------------------------------------------------------

// The head vLLM's probe, read against what is meant to run: not answering is "idle" when nothing is to be served,
// and "loading" while a swap brings a model up; "down" only when a model should be served and is not.
function vllmStatus(probe) {
  const status = probe ? probe.status : "unknown";
  if (status === "up") return status;
  if (activeSwap()) return "loading";
  if (!(state.serving && state.serving.model)) return "idle";
  return status;
}

function renderServing() {
  renderVllmTile();
  const serving = state.serving || {};
  const vllm = state.endpoints.find((endpoint) => endpoint.key === "vllm");
  const active = activeSwap();
  const rows = [];
  if (serving.model) {
    const model = modelByKey(serving.model);
    rows.push(
      h("p", { class: "serving-model" }, h("span", { class: "serving-key", text: serving.model })),
      model && model.name !== serving.model ? h("p", { class: "muted", text: model.name }) : null,
      h(
        "dl",
        { class: "facts" },
        h("dt", { text: "Served as" }),
        h("dd", { class: "mono", text: serving.served_model_name || serving.model }),
        h("dt", { text: "Since" }),
        h("dd", {}, timeEl(serving.since)),
        h("dt", { text: "From swap" }),
        h("dd", {}, serving.swap_id ? h("a", { href: swapUrl(serving.swap_id), text: serving.swap_id.slice(0, 8) }) : "–"),
      ),
    );
  } else {
    rows.push(h("p", { class: "serving-model muted", text: "nothing" }));
  }
  const probe = vllm ? vllm.probe : null;
  rows.push(
    h(
      "p",
      { class: "serving-vllm" },
      "vLLM ",
      probe ? h("span", { class: `status status-${vllmStatus(probe)}`, text: vllmStatus(probe) }) : badge("not monitored"),
      probe && probe.latency_ms !== null && probe.latency_ms !== undefined ? ` ${Math.round(probe.latency_ms)} ms` : "",
      probe && probe.checked_at ? h("span", { class: "muted" }, " · checked ", timeEl(probe.checked_at)) : "",
    ),
  );
  if (active) {
    rows.push(h("p", { class: "serving-next" }, "Swapping to ", h("strong", { text: active.model }), ` · ${active.state}`));
  }
  fill(panels.serving, rows);
}

// --- the swap panel ----------------------------------------------------------------------------------------

const feed = new SwapFeed({
  fetchEvents: (swapId, after, limit) => apiGet(`/swap/${swapId}/events?after=${after}&limit=${limit}`),
  onEvents: (swapId, events) => appendEvents(events),
});

function showSwap(swap, { events = null, startAfter = 0 } = {}) {
  const switching = !state.shown || state.shown.id !== swap.id;
  state.shown = swap;
  if (switching) {
    state.reached = new Set();
    state.lastActive = null;
    panels.log.replaceChildren();
    panels.log.dataset.swap = swap.id;
    feed.reset(swap.id, startAfter);
    panels.log.dataset.trimmed = startAfter > 0 ? "true" : "false";
    if (events) feed.receive(swap.id, events);
    feed.catchUp().catch(() => {});
  }
  renderSwap();
  renderServing();
  renderCatalog();
}

// The runner records the last start-up lines it still receives after the swap became ready: they belong above the
// line that ends the swap, which stays the last line of the log.
function placeBeforeEnd(list, item) {
  const last = list.lastElementChild;
  const ended = last && last.classList.contains("ev-state") && TERMINAL.has(last.dataset.state);
  if (ended && !item.classList.contains("ev-state")) list.insertBefore(item, last);
  else list.append(item);
}

function appendEvents(events) {
  const stick = panels.log.scrollHeight - panels.log.scrollTop - panels.log.clientHeight < 40;
  let moved = false;
  for (const event of events) {
    // Every event carries the swap's state at the time: the last step before a failure is where it failed.
    state.reached.add(event.state);
    if (STEPS.includes(event.state) && event.state !== "ready") state.lastActive = event.state;
    // State events come in seq order, so they move the stepper even if a `swap` message is late or lost.
    if (event.kind === "state" && state.shown && state.shown.state !== event.state && !TERMINAL.has(state.shown.state)) {
      state.shown = { ...state.shown, state: event.state };
      moved = true;
    }
    placeBeforeEnd(
      panels.log,
      h(
        "li",
        { class: `ev ev-${event.kind}`, dataset: { seq: event.seq, state: event.state } },
        h("time", { datetime: event.at, text: formatClock(event.at) }),
        h("span", { class: "ev-msg", text: event.message }),
      ),
    );
  }
  const extra = panels.log.children.length - LOG_KEEP;
  for (let i = 0; i < extra; i += 1) panels.log.firstElementChild.remove();
  panels.log.dataset.trimmed = extra > 0 || panels.log.dataset.trimmed === "true" ? "true" : "false";
  if (stick) panels.log.scrollTop = panels.log.scrollHeight;
  if (moved) {
    renderSwap();
    renderServing();
    renderCatalog();
  } else {
    renderStepper();
  }
}

function renderStepper() {
  const swap = state.shown;
  if (!swap) {
    panels.stepper.replaceChildren();
    return;
  }
  const current = swap.state;
  const failed = TERMINAL.has(current) && current !== "ready";
  const position = STEPS.indexOf(current);
  const failedAt = failed ? STEPS.indexOf(state.lastActive) : -1;
  const items = STEPS.map((step, index) => {
    let status = "todo";
    if (current === "ready") status = "done";
    else if (failed) status = index < failedAt ? "done" : index === failedAt ? "failed" : "todo";
    else if (position >= 0) status = index < position ? "done" : index === position ? "current" : "todo";
    if (swap.dry_run && current === "ready" && step !== "preflight" && step !== "ready") status = "skipped";
    return h(
      "li",
      { class: `step step-${status}`, dataset: { step, status }, "aria-current": status === "current" ? "step" : null },
      h("span", { class: "step-dot", "aria-hidden": "true" }),
      h("span", { class: "step-label", text: STEP_LABELS[step] || step }),
    );
  });
  fill(panels.stepper, items);
}

function renderSwap() {
  const swap = state.shown;
  if (!swap) {
    fill(panels.swapHead, h("p", { class: "muted", text: "No swap yet. Pick a model in the catalog." }));
    panels.stepper.replaceChildren();
    panels.swapNotice.replaceChildren();
    renderProgress(panels.progress, null);
    return;
  }
  const running = !TERMINAL.has(swap.state);
  const cancel = running
    ? h("button", {
        class: "btn btn-danger",
        id: "cancel-swap",
        type: "button",
        disabled: swap.cancel_requested,
        text: swap.cancel_requested ? "Cancelling…" : "Cancel",
        onclick: () => cancelSwap(swap),
      })
    : null;
  fill(
    panels.swapHead,
    h(
      "div",
      { class: "swap-title" },
      h("span", { text: running ? "Swapping to " : "Swap to " }),
      h("strong", { class: "swap-model", text: swap.model }),
      " ",
      h("span", { id: "swap-state", class: `badge state-${swap.state}`, dataset: { state: swap.state }, text: swap.state }),
      swap.dry_run ? badge("dry run") : null,
      swap.forced ? badge("forced past the lock", "badge-warn") : null,
    ),
    h(
      "div",
      { class: "swap-meta muted small" },
      `by ${swap.requested_by} · `,
      timeEl(swap.created_at),
      swap.duration_s !== null ? ` · took ${formatDuration(swap.duration_s)}` : "",
      " · ",
      h("a", { href: swapUrl(swap.id), text: "full log" }),
    ),
    cancel ? h("div", { class: "swap-actions" }, cancel) : null,
  );
  if (swap.error) notice(panels.swapNotice, "error", swap.error);
  else if (swap.forced && running) notice(panels.swapNotice, "warn", "This swap was forced past a held swap lock.");
  else panels.swapNotice.replaceChildren();
  renderStepper();
  renderProgress(panels.progress, swap);
}

async function cancelSwap(swap) {
  const confirmed = await confirmAction({
    title: "Cancel this swap?",
    body: [
      h("p", {}, "Stop the swap to ", h("strong", { text: swap.model }), " at its next step."),
      h("p", { class: "muted", text: "If it already launched a container, that container is stopped: nothing will be served." }),
    ],
    confirmLabel: "Cancel the swap",
    danger: true,
  });
  if (!confirmed) return;
  const { status, data } = await api("POST", `/swap/${swap.id}/cancel`);
  if (status === 202) onSwap(data);
  else notice(panels.swapNotice, "error", (data && data.detail) || `cancel answered ${status}`);
}

// --- catalog -----------------------------------------------------------------------------------------------

function renderCatalog() {
  const busy = activeSwap();
  const items = state.models.map((model) => {
    const serving = state.serving && state.serving.model === model.key;
    const validation = state.validation && state.validation.key === model.key ? state.validation : null;
    return h(
      "li",
      { class: "model", dataset: { key: model.key } },
      h(
        "div",
        { class: "model-main" },
        h("div", { class: "model-name", text: model.name || model.key }),
        h(
          "div",
          { class: "model-sub muted small" },
          h("span", { class: "mono", text: model.key }),
          " · ",
          h("span", { class: "mono", text: model.local ? model.local_path : model.repo }),
        ),
        h(
          "div",
          { class: "model-badges" },
          model.local ? badge("local", "badge-local") : null,
          model.nodes === 2 ? badge("2 nodes") : null,
          serving ? badge("serving", "badge-ok") : null,
        ),
      ),
      h(
        "div",
        { class: "model-actions" },
        h("button", {
          class: "btn",
          type: "button",
          dataset: { action: "validate" },
          text: validation && validation.pending ? "Validating…" : "Validate",
          disabled: validation && validation.pending,
          onclick: () => validate(model),
        }),
        h("button", {
          class: "btn btn-primary",
          type: "button",
          dataset: { action: "swap" },
          text: "Swap",
          disabled: Boolean(busy),
          title: busy ? "a swap is under way" : null,
          onclick: () => askSwap(model),
        }),
      ),
      validation && !validation.pending ? renderValidation(validation) : null,
    );
  });
  fill(panels.models, items.length ? items : h("li", { class: "muted", text: "No enabled models. Add some in the admin." }));
}

function renderValidation(validation) {
  if (validation.error) {
    return h("div", { class: "validation" }, h("p", { class: "error-text", text: validation.error }), hideValidation());
  }
  const result = validation.result;
  return h(
    "div",
    { class: "validation", role: "status" },
    h("p", { class: result.ok ? "ok-text" : "error-text", text: result.ok ? "Pre-flight passed" : "Pre-flight failed" }),
    h(
      "ul",
      { class: "checks" },
      result.checks.map((check) =>
        h(
          "li",
          { class: !check.ok ? "check-fail" : check.warning ? "check-warn" : "check-ok" },
          h("span", { class: "check-name", text: check.name }),
          " ",
          h("span", { text: check.detail }),
        ),
      ),
    ),
    result.commands.length ? h("pre", { class: "commands", text: result.commands.join("\n") }) : null,
    hideValidation(),
  );
}

function hideValidation() {
  return h("button", {
    class: "link small",
    type: "button",
    text: "Hide",
    onclick: () => {
      state.validation = null;
      renderCatalog();
    },
  });
}

async function validate(model) {
  state.validation = { key: model.key, pending: true };
  renderCatalog();
  const { status, data } = await api("POST", `/swap/${encodeURIComponent(model.key)}/validate`).catch((error) => ({
    status: 0,
    data: { detail: error.message },
  }));
  state.validation =
    status === 200
      ? { key: model.key, result: data }
      : { key: model.key, error: (data && data.detail) || `validate answered ${status}` };
  renderCatalog();
}

async function askSwap(model) {
  const current = state.serving && state.serving.model;
  const confirmed = await confirmAction({
    title: `Swap to ${model.key}?`,
    body: [
      h(
        "p",
        {},
        current ? "vLLM stops serving " : "vLLM starts serving ",
        current ? h("strong", { text: current }) : null,
        current ? " and starts serving " : null,
        h("strong", { text: model.name || model.key }),
        ".",
      ),
      h("p", {
        class: "muted",
        text: "Requests through the gateway (/v1/) are not refused meanwhile: those already running finish before the old model stops, and new ones wait until the swap is ready.",
      }),
    ],
    confirmLabel: `Swap to ${model.key}`,
  });
  if (confirmed) await requestSwap(model, false);
}

async function requestSwap(model, force) {
  state.refusal = null;
  panels.catalogNotice.replaceChildren();
  const { status, data } = await api("POST", `/swap${force ? "?force=true" : ""}`, { model: model.key, dry_run: false });
  if (status === 202) {
    onSwap(data);
    document.getElementById("active-swap").scrollIntoView({ behavior: "smooth", block: "nearest" });
  } else if (status === 423) {
    state.refusal = { model, holder: data.holder, expires_at: data.expires_at };
    renderRefusal();
  } else if (status === 409) {
    notice(panels.catalogNotice, "error", "Another swap is under way; wait for it to finish or cancel it.");
  } else {
    notice(panels.catalogNotice, "error", (data && data.detail) || `the swap request answered ${status}`);
  }
}

function renderRefusal() {
  const refusal = state.refusal;
  if (!refusal) return;
  const until = parseTime(refusal.expires_at);
  const children = [
    h(
      "p",
      {},
      "Swap to ",
      h("strong", { text: refusal.model.key }),
      " refused: the swap lock is held by ",
      h("strong", { class: "holder", text: refusal.holder }),
      until ? ` until ${formatClock(refusal.expires_at)} (${formatRelative(refusal.expires_at)}).` : ".",
    ),
    h("p", {
      class: "small",
      text: "A lock reserves the cluster for automation; only its holder's token may swap while it is held.",
    }),
  ];
  if (state.user.staff) {
    children.push(
      h("button", {
        class: "btn btn-danger",
        type: "button",
        id: "force-swap",
        text: "Force swap…",
        onclick: () => forceSwap(refusal),
      }),
    );
  } else {
    children.push(h("p", { class: "small", text: "Wait for the lock to be released, or ask a staff user to force it." }));
  }
  notice(panels.catalogNotice, "warn", children);
}

async function forceSwap(refusal) {
  const confirmed = await confirmAction({
    title: "Force a swap past the lock?",
    body: [
      h(
        "p",
        {},
        "The swap lock is held by ",
        h("strong", { class: "holder", text: refusal.holder }),
        refusal.expires_at ? ` until ${formatAbsolute(refusal.expires_at)}` : "",
        ". Forcing swaps to ",
        h("strong", { text: refusal.model.key }),
        " anyway.",
      ),
      h("p", {
        class: "muted",
        text: "The holder is not asked; it may be in the middle of its own work. The override is written to the audit log.",
      }),
    ],
    confirmLabel: `Force swap to ${refusal.model.key}`,
    danger: true,
  });
  if (confirmed) await requestSwap(refusal.model, true);
}

// --- lock banner -------------------------------------------------------------------------------------------

function setLock(lock) {
  // remaining_s is measured on the server's clock; the countdown runs on ours from the moment it arrived.
  state.lock = lock && lock.locked ? { ...lock, deadline: performance.now() + lock.remaining_s * 1000 } : lock;
  if (!state.lock || !state.lock.locked) {
    if (state.refusal) {
      state.refusal = null;
      panels.catalogNotice.replaceChildren();
    }
  }
  renderLock();
}

function lockRemaining() {
  return state.lock && state.lock.locked ? (state.lock.deadline - performance.now()) / 1000 : 0;
}

function renderLock() {
  const lock = state.lock;
  if (!lock || !lock.locked || lockRemaining() <= 0) {
    panels.lock.hidden = true;
    panels.lock.replaceChildren();
    return;
  }
  panels.lock.hidden = false;
  fill(
    panels.lock,
    h("span", { class: "lock-icon", "aria-hidden": "true" }),
    h(
      "span",
      { class: "lock-text" },
      "Swap lock held by ",
      h("strong", { class: "holder", text: lock.holder }),
      " · ",
      h("span", { class: "countdown", title: `until ${formatAbsolute(lock.expires_at)}`, text: formatCountdown(lockRemaining()) }),
      " left · epoch ",
      h("span", { class: "epoch", text: String(lock.epoch) }),
      lock.forced ? h("span", { class: "muted", text: " · a swap was forced past it" }) : null,
    ),
    h("span", { class: "lock-note small", text: "Swaps need the holder's token." }),
    state.user.staff
      ? h("button", { class: "btn btn-danger", type: "button", id: "force-release", text: "Force release", onclick: forceRelease })
      : null,
  );
}

function tickLock() {
  const el = $(".countdown", panels.lock);
  if (!state.lock || !state.lock.locked) return;
  if (lockRemaining() <= 0) {
    renderLock();
    refreshLock();
  } else if (el) {
    el.textContent = formatCountdown(lockRemaining());
  }
}

async function refreshLock() {
  try {
    setLock(await apiGet("/swap/lock"));
  } catch {
    /* the next reconnection resynchronises */
  }
}

async function forceRelease() {
  const lock = state.lock;
  if (!lock) return;
  const confirmed = await confirmAction({
    title: "Force-release the swap lock?",
    body: [
      h("p", {}, "The lock is held by ", h("strong", { class: "holder", text: lock.holder }), ` (epoch ${lock.epoch}).`),
      h("p", { class: "muted", text: "Its holder is not told; its token stops working. This is written to the audit log." }),
    ],
    confirmLabel: "Force release",
    danger: true,
  });
  if (!confirmed) return;
  const { status, data } = await api("DELETE", "/swap/lock?force=true");
  if (status === 204) await refreshLock();
  else notice(panels.catalogNotice, "error", (data && data.detail) || `releasing the lock answered ${status}`);
}

// --- services ----------------------------------------------------------------------------------------------

function renderTiles() {
  const tiles = state.endpoints
    .filter((endpoint) => !endpoint.disabled)
    .map((endpoint) => {
      const probe = endpoint.probe || { status: "unknown" };
      const status = endpoint.key === "vllm" ? vllmStatus(probe) : probe.status;
      const latency = probe.latency_ms !== null && probe.latency_ms !== undefined ? `${Math.round(probe.latency_ms)} ms` : "";
      return h(
        "div",
        { class: `tile tile-${status}`, dataset: { service: endpoint.key, status } },
        h("div", { class: "tile-name", text: endpoint.name }),
        h("div", { class: "tile-status" }, h("span", { text: status }), latency ? h("span", { class: "muted", text: ` · ${latency}` }) : null),
        h("div", { class: "tile-meta muted small" }, probe.checked_at ? ["checked ", timeEl(probe.checked_at)] : "not checked yet"),
        probe.checked_at && probe.detail && status === probe.status && status !== "up"
          ? h("div", { class: "tile-detail small", text: probe.detail })
          : null,
      );
    });
  fill(panels.tiles, tiles.length ? tiles : h("p", { class: "muted", text: "No services." }));
  // services.js adds the service links, restart buttons and restart states.
  const detail = { tiles: panels.tiles, endpoints: state.endpoints, user: state.user, urls: initial.urls };
  document.dispatchEvent(new CustomEvent("sparkcontrol:tiles", { detail }));
}

// The head vLLM's tile reads what is meant to run (vllmStatus), so it follows the swap as well as the probes.
function renderVllmTile() {
  const tile = panels.tiles.querySelector(".tile[data-service=vllm]");
  const endpoint = state.endpoints.find((candidate) => candidate.key === "vllm");
  if (tile && endpoint && tile.dataset.status !== vllmStatus(endpoint.probe)) renderTiles();
}

function onProbe(message) {
  for (const item of message.services || []) {
    const endpoint = state.endpoints.find((candidate) => candidate.key === item.key);
    if (endpoint) endpoint.probe = item.probe;
  }
  renderTiles();
  renderServing();
}

// --- schedule ----------------------------------------------------------------------------------------------

function scheduleSort(a, b) {
  const ta = parseTime(a.next_run);
  const tb = parseTime(b.next_run);
  if (ta && tb && ta.getTime() !== tb.getTime()) return ta - tb;
  if (ta && !tb) return -1;
  if (!ta && tb) return 1;
  return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
}

function isStale(entry) {
  const next = parseTime(entry.next_run);
  return Boolean(entry.stale) || Boolean(next && next.getTime() < Date.now() - STALE_AFTER_MS);
}

function renderSchedule() {
  const entries = [...state.schedule].sort(scheduleSort);
  if (!entries.length) {
    fill(panels.schedule, h("p", { class: "muted", text: "No scheduled jobs registered." }));
    return;
  }
  const rows = entries.map((entry) =>
    h(
      "tr",
      { class: isStale(entry) ? "stale" : null, dataset: { job: entry.id } },
      h(
        "td",
        {},
        entry.next_run ? timeEl(entry.next_run) : h("span", { class: "muted", text: "–" }),
        isStale(entry) ? [" ", badge("stale", "badge-warn")] : null,
      ),
      h(
        "td",
        {},
        h("div", { class: "job-name", text: entry.name }),
        entry.description ? h("div", { class: "muted small", text: entry.description }) : null,
      ),
      h("td", { class: "mono small", text: entry.schedule }),
      h("td", { text: entry.model || "–" }),
      h("td", { text: entry.owner }),
    ),
  );
  fill(
    panels.schedule,
    h(
      "table",
      { class: "table" },
      h("thead", {}, h("tr", {}, ["Next run", "Job", "Schedule", "Model", "Owner"].map((title) => h("th", { text: title })))),
      h("tbody", {}, rows),
    ),
  );
}

function onSchedule(message) {
  if (message.op === "delete") state.schedule = state.schedule.filter((entry) => entry.id !== message.id);
  else if (message.entry) state.schedule = [...state.schedule.filter((e) => e.id !== message.entry.id), message.entry];
  renderSchedule();
}

// --- history -----------------------------------------------------------------------------------------------

function renderHistory() {
  if (!state.history.length) {
    fill(panels.history, h("p", { class: "muted", text: "No swaps yet." }));
    return;
  }
  const rows = state.history.map((swap) =>
    h(
      "tr",
      { dataset: { swap: swap.id } },
      h("td", {}, timeEl(swap.created_at)),
      h("td", {}, h("span", { class: "mono", text: swap.model }), swap.dry_run ? [" ", badge("dry run")] : null),
      h("td", {}, stateBadge(swap.state), swap.forced ? [" ", badge("forced", "badge-warn")] : null),
      h("td", { class: "num", text: formatDuration(swap.duration_s) }),
      h("td", { text: swap.requested_by }),
      h("td", {}, h("a", { href: swapUrl(swap.id), text: "log" })),
    ),
  );
  fill(
    panels.history,
    h(
      "table",
      { class: "table" },
      h("thead", {}, h("tr", {}, ["When", "Model", "Outcome", "Duration", "Requested by", ""].map((title) => h("th", { text: title })))),
      h("tbody", {}, rows),
    ),
  );
}

function historyUpsert(swap) {
  const others = state.history.filter((candidate) => candidate.id !== swap.id);
  state.history = [swap, ...others]
    .sort((a, b) => (parseTime(b.created_at) || 0) - (parseTime(a.created_at) || 0))
    .slice(0, HISTORY_SIZE);
}

// --- messages ----------------------------------------------------------------------------------------------

function isLate(swap) {
  // Terminal states are final: a message still saying "loading" after one said "ready" arrived late.
  const known = state.shown && state.shown.id === swap.id ? state.shown : state.history.find((s) => s.id === swap.id);
  return Boolean(known && TERMINAL.has(known.state) && !TERMINAL.has(swap.state));
}

function onSwap(swap) {
  if (isLate(swap)) return;
  historyUpsert(swap);
  renderHistory();
  const shown = state.shown;
  if (shown && shown.id === swap.id) {
    showSwap(swap);
  } else if (!swap.dry_run && !TERMINAL.has(swap.state) && !activeSwap()) {
    showSwap(swap);
  }
  if (swap.state === "ready" && !swap.dry_run) refreshServing();
  else if (swap.state === "stopping") refreshServing();
}

async function refreshServing() {
  try {
    const status = await apiGet("/status");
    state.serving = status.serving;
    renderServing();
    renderCatalog();
  } catch {
    /* the next reconnection resynchronises */
  }
}

function apply(message) {
  switch (message.kind) {
    case "swap":
      if (message.swap) onSwap(message.swap);
      break;
    case "lock":
      setLock(message);
      break;
    case "schedule":
      onSchedule(message);
      break;
    case "action":
      panels.actions.onMessage(message);
      break;
    case "probe":
      onProbe(message);
      break;
    default:
      // Other panels' modules (downloads.js) take their own kinds from here.
      document.dispatchEvent(new CustomEvent("sparkcontrol:message", { detail: message }));
      break;
  }
}

// While a resync reads the REST API, other messages wait and are applied after its snapshot, in order: each is
// a whole-object replacement (or an upsert by id), so the page ends at the newest state whichever came first.
let held = null;

function onMessage(message) {
  if (message.kind === "swap_events") {
    feed.receive(message.swap_id, message.events || []); // ordered and deduplicated by seq on its own
  } else if (held) {
    held.push(message);
  } else {
    apply(message);
  }
}

let resyncing = null;
let resyncAgain = false;

// Everything the websocket would have said while it was away, from the REST API.
function resync() {
  if (resyncing) {
    resyncAgain = true;
    return resyncing;
  }
  resyncing = (async () => {
    do {
      resyncAgain = false;
      held = [];
      try {
        await readSnapshot();
      } catch (error) {
        /* shown by the connection state; the next reconnection tries again */
      } finally {
        const waiting = held;
        held = null;
        for (const message of waiting) apply(message);
      }
      renderAll();
    } while (resyncAgain);
    resyncing = null;
  })();
  return resyncing;
}

async function readSnapshot() {
  const [status, endpoints, schedule, history, models] = await Promise.all([
    apiGet("/status"),
    apiGet("/endpoints"),
    apiGet("/schedule"),
    apiGet(`/swaps?limit=${HISTORY_SIZE}`),
    apiGet("/models"),
    panels.actions.resync(),
  ]);
  state.serving = status.serving;
  state.endpoints = endpoints.filter((endpoint) => !endpoint.disabled);
  state.schedule = schedule;
  state.history = history;
  state.models = models.filter((model) => model.enabled);
  setLock(status.lock);
  // The active swap; else the latest real one, which may have started and ended while the page was away.
  const latest = status.active_swap || history.find((swap) => !swap.dry_run);
  if (latest && (!state.shown || latest.id !== state.shown.id)) {
    showSwap(latest);
  } else if (state.shown) {
    showSwap(history.find((swap) => swap.id === state.shown.id) || (await apiGet(`/swap/${state.shown.id}`)));
  }
  if (state.shown) await feed.catchUp();
}

function renderAll() {
  renderServing();
  renderSwap();
  renderCatalog();
  renderTiles();
  renderSchedule();
  renderHistory();
  renderLock();
}

function setConnection(value) {
  const labels = {
    connecting: "connecting…",
    live: "live",
    reconnecting: "reconnecting…",
    "signed-out": "signed out",
  };
  if (panels.connection.dataset.state === "signed-out") return;
  panels.connection.dataset.state = value;
  panels.connection.textContent = labels[value] || value;
  if (value === "signed-out") signedOut();
}

let live = null;

function signedOut() {
  if (live) live.stop();
  panels.connection.dataset.state = "signed-out";
  panels.connection.textContent = "signed out";
  panels.session.hidden = false;
  fill(panels.session, "Your session has ended. ", h("a", { href: `/login/?next=${encodeURIComponent(location.pathname)}`, text: "Sign in again" }), ".");
}

// --- start -------------------------------------------------------------------------------------------------

whenSignedOut(signedOut);
setLock(initial.status.lock);
if (initial.shown) {
  const events = initial.events;
  showSwap(initial.shown, { events, startAfter: events.length ? events[0].seq - 1 : 0 });
}
renderAll();

setInterval(tickLock, 1000);
setInterval(() => {
  for (const el of document.querySelectorAll("time[data-rel='relative']")) {
    el.textContent = formatRelative(el.getAttribute("datetime"));
  }
  for (const row of panels.schedule.querySelectorAll("tr[data-job]")) {
    const entry = state.schedule.find((candidate) => candidate.id === row.dataset.job);
    if (entry && isStale(entry) !== row.classList.contains("stale")) {
      renderSchedule();
      break;
    }
  }
}, 15000);

// A refused websocket looks the same whether the server is down or the session ended; the API tells them apart
// (401 ends the session on this page, see signedOut).
live = new LiveSocket("/ws/swaps/", {
  onMessage,
  onOpen: resync,
  onState: setConnection,
  onDrop: (failures) => {
    if (failures >= 2) api("GET", "/swap/lock").catch(() => {});
  },
});
live.connect();
