// The swap page: its log is rendered by the server; while the swap runs (and for a minute after it ended), new
// lines follow over the websocket, with the same gap-free, duplicate-free catch-up as the dashboard.

import { apiGet } from "./api.js";
import { h } from "./dom.js";
import { SwapFeed } from "./feed.js";
import { LiveSocket } from "./live.js";
import { renderProgress } from "./progress.js";

const log = document.getElementById("swap-log");
const badge = document.getElementById("swap-state");
const note = document.getElementById("swap-live");
const progress = document.getElementById("swap-progress");
const swapId = log.dataset.swap;
const TERMINAL = new Set(["ready", "failed", "cancelled", "interrupted"]);

// Log lines recorded after the swap ended (the last start-up lines) go above the line that ended it.
function append(events) {
  const empty = log.querySelector(".empty");
  if (empty) empty.remove();
  for (const event of events) {
    const last = log.lastElementChild;
    const ended = last && last.classList.contains("ev-state") && TERMINAL.has(last.dataset.state);
    const place = (item) => (ended && event.kind !== "state" ? log.insertBefore(item, last) : log.append(item));
    place(
      h(
        "li",
        { class: `ev ev-${event.kind}`, dataset: { seq: event.seq, state: event.state } },
        h("span", { class: "ev-seq", text: event.seq }),
        h("time", { datetime: event.at, text: event.at.slice(11, 19) }),
        h("span", { class: "ev-msg", text: event.message }),
      ),
    );
  }
}

// The runner may still record start-up lines just after "ready": the page keeps following after the end.
function showState(swapState) {
  badge.textContent = swapState;
  badge.className = `badge state-${swapState}`;
  badge.dataset.state = swapState;
  if (TERMINAL.has(swapState)) note.textContent = "Finished. Reload for the final details.";
}

const feed = new SwapFeed({
  fetchEvents: (id, after, limit) => apiGet(`/swap/${id}/events?after=${after}&limit=${limit}`),
  onEvents: (id, events) => append(events),
});
feed.reset(swapId, Number(log.dataset.lastSeq || 0));

const live = new LiveSocket("/ws/swaps/", {
  onMessage: (message) => {
    if (message.kind === "swap_events") feed.receive(message.swap_id, message.events || []);
    else if (message.kind === "swap" && message.swap && message.swap.id === swapId) {
      showState(message.swap.state);
      renderProgress(progress, message.swap);
    }
  },
  onOpen: async () => {
    try {
      await feed.catchUp();
      const swap = await apiGet(`/swap/${swapId}`);
      showState(swap.state);
      renderProgress(progress, swap);
    } catch {
      /* the next reconnection tries again */
    }
  },
  onState: (value) => {
    note.dataset.state = value;
    if (!TERMINAL.has(badge.dataset.state)) note.textContent = value === "live" ? "Following live." : `${value}…`;
  },
});

if (log.dataset.follow === "true") live.connect();
else apiGet(`/swap/${swapId}`).then((swap) => renderProgress(progress, swap), () => {});
