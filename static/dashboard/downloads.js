// Model files on the nodes: download a catalog model into the HF cache of the nodes that run it, follow its
// progress (websocket messages of kind "download", relayed by dashboard.js, and the REST API while one is active),
// cancel it; and each node's free disk with the catalog models' bytes in its HF cache.

import { api, apiGet } from "./api.js";
import { $, fill, h } from "./dom.js";

const ACTIVE = new Set(["queued", "running"]);
const POLL_MS = 3000;
const UNITS = ["B", "KiB", "MiB", "GiB", "TiB"];

const panel = $("#downloads .downloads-body");
const state = { models: [], downloads: [], disk: null, diskError: null, notice: null };
let pollTimer = null;

export function formatBytes(value) {
  if (value === null || value === undefined) return "?";
  let number = Number(value);
  let unit = 0;
  while (Math.abs(number) >= 1024 && unit < UNITS.length - 1) {
    number /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${number} B` : `${number.toFixed(1)} ${UNITS[unit]}`;
}

function percent(download) {
  if (download.state === "done") return 100;
  if (!download.bytes_total) return null;
  return Math.min(100, Math.floor((100 * download.bytes_done) / download.bytes_total));
}

function upsert(download) {
  state.downloads = [download, ...state.downloads.filter((other) => other.id !== download.id)].sort((a, b) =>
    (b.created_at || "").localeCompare(a.created_at || ""),
  );
}

async function start(key) {
  state.notice = null;
  try {
    const { status, data } = await api("POST", `/models/${encodeURIComponent(key)}/download`);
    if (status === 202) {
      upsert(await apiGet(`/downloads/${data.id}`));
      schedulePoll();
    } else {
      state.notice = (data && data.detail) || `the download was refused (${status})`;
    }
  } catch (error) {
    state.notice = error.message;
  }
  render();
}

async function cancel(id) {
  try {
    const { status, data } = await api("POST", `/downloads/${id}/cancel`);
    if (status === 202) upsert(data);
    else state.notice = (data && data.detail) || `cancel refused (${status})`;
  } catch (error) {
    state.notice = error.message;
  }
  render();
}

async function refresh() {
  try {
    state.downloads = await apiGet("/downloads?limit=10");
  } catch {
    /* the next poll or message brings it */
  }
  render();
  schedulePoll();
}

async function loadDisk() {
  state.disk = null;
  state.diskError = null;
  render();
  try {
    state.disk = await apiGet("/nodes/disk");
  } catch (error) {
    state.diskError = error.message;
  }
  render();
}

function schedulePoll() {
  if (pollTimer || !state.downloads.some((download) => ACTIVE.has(download.state))) return;
  pollTimer = setTimeout(async () => {
    pollTimer = null;
    const wasActive = state.downloads.some((download) => ACTIVE.has(download.state));
    await refresh();
    if (wasActive && !state.downloads.some((download) => ACTIVE.has(download.state))) loadDisk();
  }, POLL_MS);
}

function downloadRow(download) {
  const done = percent(download);
  const nodes = Object.entries(download.progress || {}).map(([node, progress]) =>
    h("div", { class: "muted small", text: `${node}: ${progress.state}, ${formatBytes(progress.bytes_done)} of ${formatBytes(progress.bytes_total)}` }),
  );
  return h(
    "tr",
    { dataset: { download: download.id, state: download.state } },
    h("td", {}, h("div", { text: download.model }), h("div", { class: "muted small mono", text: download.repo })),
    h("td", { class: "download-state", text: download.state }),
    h(
      "td",
      {},
      h("progress", { max: "100", value: done === null ? null : String(done), "aria-label": `${download.model} download` }),
      " ",
      h("span", { class: "download-percent", text: done === null ? "–" : `${done} %` }),
      h("div", { class: "muted small", text: `${formatBytes(download.bytes_done)} of ${formatBytes(download.bytes_total)}` }),
    ),
    h("td", {}, nodes, download.error ? h("div", { class: "notice notice-error small", text: download.error }) : null),
    h(
      "td",
      {},
      ACTIVE.has(download.state) && !download.cancel_requested
        ? h("button", { class: "btn btn-small", type: "button", text: "Cancel", onclick: () => cancel(download.id) })
        : null,
    ),
  );
}

function diskTable() {
  if (state.diskError) return h("p", { class: "muted small", text: `Disk: ${state.diskError}` });
  if (!state.disk) return h("p", { class: "muted small", text: "Reading the nodes' disk…" });
  return h(
    "table",
    { class: "table disk-table" },
    h("thead", {}, h("tr", {}, ["Node", "Free (HF cache)", "Catalog models in the cache"].map((title) => h("th", { text: title })))),
    h(
      "tbody",
      {},
      state.disk.map((row) =>
        h(
          "tr",
          { dataset: { node: row.node } },
          h("td", { text: row.node }),
          h("td", { text: row.error ? row.error : formatBytes(row.free_bytes) }),
          h(
            "td",
            { class: "small" },
            Object.entries(row.models)
              .filter(([, size]) => size > 0)
              .map(([key, size]) => `${key}: ${formatBytes(size)}`)
              .join(", ") || "none",
          ),
        ),
      ),
    ),
  );
}

function render() {
  const repoModels = state.models.filter((model) => model.repo && !model.local);
  const select = h(
    "select",
    { id: "download-model", "aria-label": "model to download" },
    repoModels.map((model) => h("option", { value: model.key, text: `${model.name} (${model.repo})` })),
  );
  fill(
    panel,
    h(
      "div",
      { class: "download-form" },
      select,
      " ",
      h("button", { class: "btn", type: "button", id: "download-start", text: "Download to its nodes", onclick: () => start(select.value) }),
      " ",
      h("button", { class: "btn btn-small", type: "button", text: "Refresh disk", onclick: loadDisk }),
    ),
    state.notice ? h("div", { class: "notice notice-error small", role: "alert", text: state.notice }) : null,
    state.downloads.length
      ? h(
          "table",
          { class: "table downloads-table" },
          h("thead", {}, h("tr", {}, ["Model", "State", "Progress", "Nodes", ""].map((title) => h("th", { text: title })))),
          h("tbody", {}, state.downloads.map(downloadRow)),
        )
      : h("p", { class: "muted", text: "No downloads yet." }),
    diskTable(),
  );
}

document.addEventListener("sparkcontrol:message", (event) => {
  const message = event.detail;
  if (!message || message.kind !== "download" || !message.download) return;
  const before = state.downloads.find((download) => download.id === message.download.id);
  upsert(message.download);
  render();
  if (before && ACTIVE.has(before.state) && !ACTIVE.has(message.download.state)) loadDisk();
  schedulePoll();
});

if (panel) {
  render();
  apiGet("/models")
    .then((models) => {
      state.models = models;
      render();
    })
    .catch(() => {});
  refresh();
  loadDisk();
}
