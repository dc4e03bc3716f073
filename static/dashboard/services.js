// Service tiles: each opens its service page; a staff user gets a Restart button on tiles whose container can be
// restarted, with a confirmation; a restart's states (queued, stopping, starting, up | failed) follow live from
// the websocket. dashboard.js renders the tiles and announces each render ("sparkcontrol:tiles") and every
// message it does not handle itself ("sparkcontrol:message").

import { h } from "./dom.js";
import { RESTART_ACTIVE, confirmRestart, requestRestart, restartText } from "./restart.js";

// A finished restart stays on its tile this long.
const SHOW_FINISHED_MS = 10 * 60 * 1000;
const RANK = { queued: 0, stopping: 1, starting: 2, up: 3, failed: 3 };
const view = { tiles: null, endpoints: [], user: null, urls: null };

function serviceUrl(key) {
  return view.urls && view.urls.service_detail ? view.urls.service_detail.replace("SERVICE-KEY", encodeURIComponent(key)) : "#";
}

function shown(restart) {
  if (!restart) return false;
  if (RESTART_ACTIVE.has(restart.state)) return true;
  const finished = restart.finished_at ? Date.parse(restart.finished_at) : NaN;
  return Number.isFinite(finished) && Date.now() - finished < SHOW_FINISHED_MS;
}

async function onRestartClick(endpoint, button) {
  if (!(await confirmRestart(endpoint))) return;
  button.disabled = true;
  const result = await requestRestart(endpoint.key);
  const tile = button.closest(".tile");
  if (!result.ok) {
    button.disabled = false;
    if (tile) {
      tile.querySelector(".tile-restart-error")?.remove();
      tile.append(h("div", { class: "tile-restart-error small error-text", role: "alert", text: result.detail }));
    }
    return;
  }
  // The websocket brings every state; until its first message the tile says the restart is queued.
  if (!endpoint.restart || endpoint.restart.id !== result.restart.id) {
    endpoint.restart = { ...result.restart, service: endpoint.key, finished_at: null, downtime_s: null, error: "" };
    decorate(tile, endpoint);
  }
}

function decorate(tile, endpoint) {
  if (!tile) return;
  for (const extra of tile.querySelectorAll(".tile-extra")) extra.remove();
  const name = tile.querySelector(".tile-name");
  if (name && !name.querySelector("a")) {
    name.replaceChildren(h("a", { href: serviceUrl(endpoint.key), class: "tile-link", text: endpoint.name }));
  }
  const restart = endpoint.restart;
  tile.dataset.restart = restart && shown(restart) ? restart.state : "";
  if (restart && shown(restart)) {
    tile.append(
      h("div", {
        class: `tile-extra tile-restart small restart-${restart.state}`,
        role: "status",
        dataset: { restartState: restart.state },
        text: restartText(restart),
      }),
    );
  }
  if (view.user && view.user.staff && endpoint.restartable) {
    const busy = restart && RESTART_ACTIVE.has(restart.state);
    const button = h("button", {
      type: "button",
      class: "btn btn-small tile-extra tile-restart-btn",
      disabled: busy,
      text: "Restart",
      title: `Restart the container ${endpoint.container || ""}`,
    });
    button.addEventListener("click", () => onRestartClick(endpoint, button));
    tile.append(button);
  }
}

function tileFor(key) {
  return view.tiles ? view.tiles.querySelector(`.tile[data-service="${CSS.escape(key)}"]`) : null;
}

document.addEventListener("sparkcontrol:tiles", (event) => {
  Object.assign(view, event.detail);
  for (const endpoint of view.endpoints) decorate(tileFor(endpoint.key), endpoint);
});

document.addEventListener("sparkcontrol:message", (event) => {
  const message = event.detail;
  if (message.kind !== "service_restart" || !message.restart) return;
  const restart = message.restart;
  const endpoint = view.endpoints.find((candidate) => candidate.key === restart.service);
  if (!endpoint) return;
  // Messages may arrive out of order across a reconnection: never step back to an older restart.
  const current = endpoint.restart;
  if (current && (current.id > restart.id || (current.id === restart.id && RANK[current.state] > RANK[restart.state]))) return;
  endpoint.restart = restart;
  if (restart.state === "up") endpoint.last_downtime_s = restart.downtime_s;
  decorate(tileFor(endpoint.key), endpoint);
});
