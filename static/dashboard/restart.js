// Restarting a service's container: the confirmation (what stops, how long it was down last time), the request,
// and the words for a restart's state. Shared by the dashboard's tiles (services.js) and the service page.

import { api } from "./api.js";
import { $, fill, h } from "./dom.js";

export const RESTART_ACTIVE = new Set(["queued", "stopping", "starting"]);

export function seconds(value) {
  return value === null || value === undefined ? null : `${Number(value).toFixed(1)} s`;
}

export function restartText(restart) {
  if (!restart) return "";
  if (restart.state === "up") return `restarted · up${restart.downtime_s !== null ? ` (down ${seconds(restart.downtime_s)})` : ""}`;
  if (restart.state === "failed") return `restart failed: ${restart.error || "no reason given"}`;
  return `restart: ${restart.state}…`;
}

// Resolves true when the person confirmed. `service` has name, container, node and last_downtime_s.
export function confirmRestart(service) {
  const dialog = $("#confirm-dialog");
  fill($("#confirm-title", dialog), `Restart ${service.name}?`);
  fill(
    $(".dialog-body", dialog),
    h(
      "p",
      {},
      "This stops the container ",
      h("strong", { class: "mono", text: service.container || "?" }),
      service.node ? ` on ${service.node}` : "",
      " and starts it again. ",
      h("strong", { text: service.name }),
      " answers nothing until it is up again; requests in flight fail.",
    ),
    h(
      "p",
      { class: "muted restart-last" },
      service.last_downtime_s !== null && service.last_downtime_s !== undefined
        ? `At its last restart it was down for ${seconds(service.last_downtime_s)}.`
        : "It has not been restarted from Spark Control before.",
    ),
  );
  const ok = $("#confirm-ok", dialog);
  ok.textContent = "Restart";
  ok.className = "btn btn-danger";
  dialog.returnValue = "";
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "confirm"), { once: true });
    dialog.showModal();
  });
}

// {ok, detail, restart: {id, state}}
export async function requestRestart(key) {
  const { status, data } = await api("POST", `/services/${encodeURIComponent(key)}/restart`);
  if (status === 202) return { ok: true, restart: data };
  return { ok: false, detail: (data && data.detail) || `the restart answered ${status}` };
}
