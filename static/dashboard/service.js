// A service's page: a day of status probes as a chart (latency and up/degraded/down, drawn by the vendored uPlot),
// its last errors and deep health from GET /api/services/{key}/history, and a Restart button for staff. Restart
// states follow live over the websocket; the history is read again when a restart ends.

import { apiGet } from "./api.js";
import { $, fill, h } from "./dom.js";
import { LiveSocket } from "./live.js";
import { RESTART_ACTIVE, confirmRestart, requestRestart, restartText, seconds } from "./restart.js";

const page = JSON.parse(document.getElementById("service-state").textContent);
const chartBox = $("#service-chart");
const STATE_VALUE = { up: 1, degraded: 0.5, down: 0, unknown: null };
let chart = null;

function drawChart(history) {
  const data = [history.t, history.latency_ms, history.status.map((status) => STATE_VALUE[status] ?? null)];
  chartBox.dataset.points = String(history.t.length);
  fill($("#service-chart-note"), history.t.length ? `${history.t.length} probes since ${new Date(history.since).toLocaleString()}.` : "No probes recorded yet.");
  const width = Math.max(320, chartBox.clientWidth || 640);
  // The whole window, so the probes sit where they happened in it (a gap shows as a gap).
  const span = [Date.parse(history.since) / 1000, Date.now() / 1000];
  const options = {
    width,
    height: 220,
    scales: { x: { time: true, range: () => span }, state: { range: [0, 1.05] } },
    series: [
      {},
      { label: "latency (ms)", stroke: "#1f6f5c", width: 1.5, points: { show: true, size: 4 }, spanGaps: false },
      { label: "state", scale: "state", stroke: "#c0392b", width: 1, paths: window.uPlot.paths.stepped({ align: 1 }), points: { show: true, size: 3 } },
    ],
    axes: [
      {},
      { label: "ms" },
      { scale: "state", side: 1, size: 80, values: (u, ticks) => ticks.map((v) => (v >= 1 ? "up" : v >= 0.5 ? "degraded" : v === 0 ? "down" : "")), splits: () => [0, 0.5, 1], grid: { show: false } },
    ],
  };
  if (chart) chart.destroy();
  chartBox.replaceChildren();
  chart = new window.uPlot(options, data, chartBox);
  chartBox.dataset.drawn = "true";
}

function renderErrors(errors) {
  const body = $("#service-errors");
  if (!errors.length) {
    fill(body, h("tr", { class: "empty" }, h("td", { colspan: "4", class: "muted", text: "No errors recorded." })));
    return;
  }
  fill(
    body,
    errors.map((error) =>
      h(
        "tr",
        { dataset: { sweep: error.sweep } },
        h("td", {}, h("time", { datetime: error.at, text: new Date(error.at).toLocaleString() })),
        h("td", { text: error.sweep }),
        h("td", {}, h("span", { class: `status status-${error.status}`, text: error.status })),
        h("td", { text: error.detail || "–" }),
      ),
    ),
  );
}

function renderDeep(deep) {
  const box = $("#service-deep");
  if (!deep) {
    fill(box, h("p", { class: "muted small", text: "No deep health check has run yet." }));
    return;
  }
  fill(
    box,
    h(
      "p",
      {},
      h("span", { class: `status status-${deep.status}`, text: deep.status }),
      deep.latency_ms !== null ? ` · ${Math.round(deep.latency_ms)} ms` : "",
      deep.checked_at ? ` · ${new Date(deep.checked_at).toLocaleString()}` : "",
    ),
    h("p", { class: "small", text: deep.detail || "" }),
  );
}

function renderRestarts(restarts) {
  const body = $("#service-restarts tbody");
  if (!restarts.length) {
    fill(body, h("tr", { class: "empty" }, h("td", { colspan: "5", class: "muted", text: "Never restarted from Spark Control." })));
    return;
  }
  fill(
    body,
    restarts.map((restart) =>
      h(
        "tr",
        { dataset: { restart: restart.id } },
        h("td", { text: restart.requested_at.slice(0, 19) }),
        h("td", { text: restart.requested_by }),
        h("td", {}, h("span", { class: `badge restart-${restart.state}`, text: restart.state })),
        h("td", { text: seconds(restart.downtime_s) || "–" }),
        h("td", { class: "error-text", text: restart.error }),
      ),
    ),
  );
}

async function load() {
  const history = await apiGet(`/services/${encodeURIComponent(page.key)}/history?hours=${page.history_hours}`);
  drawChart(history);
  renderErrors(history.errors);
  renderDeep(history.deep);
  renderRestarts(history.restarts);
  if (history.restarts.length) showRestart(history.restarts[0]);
}

function showRestart(restart) {
  page.restart = restart;
  if (restart.state === "up") page.last_downtime_s = restart.downtime_s;
  renderActions();
}

function renderActions() {
  const box = $("#service-actions");
  const restart = page.restart;
  const busy = restart && RESTART_ACTIVE.has(restart.state);
  fill(
    box,
    restart ? h("p", { class: `small restart-${restart.state}`, role: "status", dataset: { restartState: restart.state }, text: restartText(restart) }) : null,
    page.staff && page.restartable
      ? h("button", { type: "button", class: "btn btn-danger", id: "service-restart", disabled: busy, text: "Restart", onclick: onRestart })
      : null,
    h("p", { class: "small error-text", id: "service-restart-error", role: "alert" }),
  );
}

async function onRestart() {
  if (!(await confirmRestart(page))) return;
  const result = await requestRestart(page.key);
  if (!result.ok) {
    fill($("#service-restart-error"), result.detail);
    return;
  }
  showRestart({ ...result.restart, service: page.key, downtime_s: null, error: "", finished_at: null });
}

renderActions();
load().catch((error) => fill($("#service-chart-note"), `Could not read the history: ${error.message}`));

new LiveSocket("/ws/swaps/", {
  onMessage: (message) => {
    if (message.kind === "service_restart" && message.restart && message.restart.service === page.key) {
      showRestart(message.restart);
      if (!RESTART_ACTIVE.has(message.restart.state)) load().catch(() => {});
    }
  },
  onOpen: () => load().catch(() => {}),
  onState: () => {},
}).connect();
