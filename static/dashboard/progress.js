// A swap's loading progress as one bar: the phase vLLM is in, how much of the whole load is done, and the time left
// (from the model's previous loads; a first load says so instead of guessing). Between the server's updates the
// time left counts down here. Text goes in through text nodes only (see dom.js).

import { fill, h } from "./dom.js";

const TERMINAL = new Set(["ready", "failed", "cancelled", "interrupted"]);
const shown = new Map(); // element -> {eta, at} of the progress it shows, for the countdown

export function etaText(seconds) {
  if (seconds === null || seconds === undefined) return "first load of this model";
  if (seconds < 1) return "almost done";
  if (seconds < 60) return "less than a minute left";
  return `about ${Math.max(1, Math.round(seconds / 60))} min left`;
}

function percent(fraction) {
  return `${Math.round(100 * Math.min(1, Math.max(0, Number(fraction) || 0)))}%`;
}

// Render `swap.progress` into `el` (hidden when the swap has none: it has not started loading).
export function renderProgress(el, swap) {
  const progress = swap && swap.progress;
  if (!el) return;
  if (!progress) {
    el.hidden = true;
    el.replaceChildren();
    shown.delete(el);
    return;
  }
  const running = !TERMINAL.has(swap.state);
  const label = progress.label || progress.phase;
  let left = etaText(progress.eta_seconds);
  if (swap.state === "ready") left = "loaded";
  else if (!running) left = `stopped while ${label}`;
  el.hidden = false;
  el.dataset.swap = swap.id;
  el.dataset.phase = progress.phase;
  el.dataset.state = running ? "loading" : swap.state;
  el.dataset.eta = progress.eta_seconds === null || progress.eta_seconds === undefined ? "" : String(progress.eta_seconds);
  const phaseShare =
    running && progress.phase_fraction !== null && progress.phase_fraction !== undefined && progress.phase !== "api_server"
      ? ` ${percent(progress.phase_fraction)}`
      : "";
  fill(
    el,
    h(
      "div",
      { class: "progress-line" },
      h("span", { class: "progress-phase", text: swap.state === "ready" ? "ready" : `${label}${phaseShare}` }),
      h("span", { class: "progress-percent", text: percent(progress.fraction) }),
    ),
    h("progress", {
      class: "progress-bar",
      max: "1",
      value: String(Math.min(1, Math.max(0, Number(progress.fraction) || 0))),
      "aria-label": `loading: ${label}, ${percent(progress.fraction)}`,
    }),
    h("div", { class: "progress-eta muted small", text: left }),
    running && progress.slow ? h("div", { class: "notice notice-warn progress-slow", role: "status", text: progress.slow.message }) : null,
  );
  if (running && typeof progress.eta_seconds === "number") shown.set(el, { eta: progress.eta_seconds, at: Date.now() });
  else shown.delete(el);
}

// The time left goes down between updates (the server sends one when the bar moves, not every second).
setInterval(() => {
  for (const [el, { eta, at }] of shown) {
    if (!el.isConnected) {
      shown.delete(el);
      continue;
    }
    const text = el.querySelector(".progress-eta");
    if (text) text.textContent = etaText(Math.max(0, eta - (Date.now() - at) / 1000));
  }
}, 1000);
