// Load over time: GPU busy, tokens/s, requests running and waiting, and memory per Spark, from GET /api/load,
// drawn with the vendored uPlot (window.uPlot, loaded by a plain script before this module). Swaps (from
// GET /api/swaps) are shaded on the time axis. Polled while the page is visible; the sampler runs in the worker.

import { apiGet } from "./api.js";
import { $, fill, h } from "./dom.js";
import { formatClock } from "./format.js";

const RANGES = { hour: { seconds: 3600, label: "Last hour" }, day: { seconds: 86400, label: "Last day" } };
const REFRESH_MS = 5000;
const GIB = 1024 ** 3;
const COLOURS = ["#1f6f5c", "#b5651d", "#3b5bdb", "#a53030", "#6b4fa0", "#2f7d4f"];
const CHARTS = [
  { key: "gpu", title: "GPU busy", unit: "%", parts: [["gpu_busy_percent", ""]], range: [0, 100] },
  { key: "tokens", title: "Tokens generated", unit: "tokens/s", parts: [["generation_tokens_per_second", ""]] },
  {
    key: "requests",
    title: "Requests",
    unit: "",
    parts: [
      ["requests_running", "running"],
      ["requests_waiting", "waiting"],
    ],
  },
  { key: "memory", title: "Memory used", unit: "GiB", scale: 1 / GIB, parts: [["memory_used_bytes", ""]] },
];

const root = $("#load");
const state = { range: "hour", charts: new Map(), timer: null, swaps: [] };

function number(value) {
  if (value === null || value === undefined) return "–";
  const abs = Math.abs(value);
  return abs >= 100 ? value.toFixed(0) : abs >= 10 ? value.toFixed(1) : value.toFixed(2).replace(/\.?0+$/, "");
}

// The uPlot data of one chart: x (unix seconds) and one column per (figure, node), aligned on sample times.
function columns(spec, series) {
  const lines = [];
  const times = new Set();
  for (const [name, label] of spec.parts) {
    const points = series[name] || [];
    const nodes = [...new Set(points.map((point) => point.node))].filter((node) => node !== null).sort();
    for (const node of nodes) {
      const byTime = new Map();
      for (const point of points) {
        if (point.node !== node) continue;
        const t = Math.round(Date.parse(point.t) / 1000);
        times.add(t);
        byTime.set(t, point.value * (spec.scale || 1));
      }
      lines.push({ name: label ? `${node} ${label}` : node, node, label, byTime });
    }
  }
  const xs = [...times].sort((a, b) => a - b);
  const data = [xs, ...lines.map((line) => xs.map((t) => (line.byTime.has(t) ? line.byTime.get(t) : null)))];
  return { lines, data };
}

function swapBands(u) {
  const { ctx, bbox } = u;
  const [min, max] = [u.scales.x.min, u.scales.x.max];
  ctx.save();
  for (const swap of state.swaps) {
    if (swap.end < min || swap.start > max) continue;
    const left = u.valToPos(Math.max(swap.start, min), "x", true);
    const right = u.valToPos(Math.min(swap.end, max), "x", true);
    ctx.fillStyle = swap.failed ? "rgba(165, 48, 48, 0.14)" : "rgba(31, 111, 92, 0.14)";
    ctx.fillRect(left, bbox.top, Math.max(2, right - left), bbox.height);
  }
  ctx.restore();
}

function summary(spec, lines, data) {
  const parts = lines.map((line, index) => {
    const column = data[index + 1];
    let latest = null;
    for (let i = column.length - 1; i >= 0; i--) {
      if (column[i] !== null) {
        latest = column[i];
        break;
      }
    }
    return h("span", { class: "load-now-item", dataset: { node: line.node, figure: line.label || spec.key } },
      `${line.name}: ${number(latest)}${spec.unit ? ` ${spec.unit}` : ""}`);
  });
  return parts.length ? parts : [h("span", { class: "muted" }, "no samples in this range yet")];
}

function draw(spec, series, now) {
  let chart = state.charts.get(spec.key);
  if (!chart) {
    const plot = h("div", { class: "load-plot" });
    const now_ = h("p", { class: "load-now", "aria-live": "off" });
    const box = h("figure", { class: "load-chart", dataset: { chart: spec.key } },
      h("figcaption", {}, spec.title + (spec.unit ? ` (${spec.unit})` : "")), plot, now_);
    $(".load-charts", root).append(box);
    chart = { box, plot, now: now_, u: null, signature: "" };
    state.charts.set(spec.key, chart);
  }
  const { lines, data } = columns(spec, series);
  const from = now - RANGES[state.range].seconds;
  chart.box.dataset.points = String(data[0].length);
  fill(chart.now, summary(spec, lines, data));
  const signature = lines.map((line) => line.name).join("|");
  const width = Math.max(240, chart.plot.clientWidth || 480);
  if (chart.u && chart.signature === signature) {
    chart.u.setScale("x", { min: from, max: now });
    chart.u.setData(data, false);
    chart.u.setScale("x", { min: from, max: now });
    return;
  }
  if (chart.u) chart.u.destroy();
  chart.signature = signature;
  const options = {
    width,
    height: 160,
    legend: { show: lines.length > 0 },
    cursor: { drag: { x: false, y: false } },
    scales: {
      x: { time: true, min: from, max: now, auto: false },
      y: spec.range ? { range: spec.range } : { range: (u, min, max) => [0, Math.max(1, max * 1.1)] },
    },
    series: [
      {},
      ...lines.map((line, index) => ({
        label: line.name,
        stroke: COLOURS[index % COLOURS.length],
        width: 1.5,
        dash: line.label === "waiting" ? [4, 3] : undefined,
        spanGaps: false,
        points: { show: false },
      })),
    ],
    axes: [{}, { size: 50 }],
    hooks: { drawClear: [swapBands] },
  };
  chart.u = new window.uPlot(options, data, chart.plot);
}

function renderSwaps(now) {
  const from = now - RANGES[state.range].seconds;
  const shown = state.swaps.filter((swap) => swap.end >= from);
  const list = $(".load-swaps", root);
  if (!shown.length) {
    fill(list, h("li", { class: "muted" }, "No swap in this range."));
    return;
  }
  fill(list, shown.map((swap) => h("li", { dataset: { swap: swap.id } },
    `Swap to ${swap.model}: ${formatClock(swap.startIso)}–${swap.running ? "now" : formatClock(swap.endIso)}` +
    (swap.failed ? ` (${swap.state})` : ""))));
}

async function refresh() {
  const now = Math.round(Date.now() / 1000);
  const since = new Date((now - RANGES[state.range].seconds) * 1000).toISOString();
  try {
    const [load, swaps] = await Promise.all([
      apiGet(`/load?since=${encodeURIComponent(since)}`),
      apiGet("/swaps?limit=50"),
    ]);
    state.swaps = swaps
      .filter((swap) => swap.started_at && !swap.dry_run)
      .map((swap) => ({
        id: swap.id,
        model: swap.model,
        state: swap.state,
        failed: ["failed", "cancelled", "interrupted"].includes(swap.state),
        running: !swap.finished_at,
        startIso: swap.started_at,
        endIso: swap.finished_at,
        start: Date.parse(swap.started_at) / 1000,
        end: swap.finished_at ? Date.parse(swap.finished_at) / 1000 : now,
      }));
    for (const spec of CHARTS) draw(spec, load.series, now);
    renderSwaps(now);
    root.dataset.state = "ok";
    fill($(".load-status", root));
  } catch (error) {
    root.dataset.state = "error";
    fill($(".load-status", root), `Load unavailable: ${error.message}`);
  }
}

function schedule() {
  clearTimeout(state.timer);
  state.timer = setTimeout(async () => {
    if (!document.hidden) await refresh();
    schedule();
  }, REFRESH_MS);
}

function choose(range) {
  state.range = range;
  for (const button of root.querySelectorAll("[data-range]")) {
    button.setAttribute("aria-pressed", String(button.dataset.range === range));
  }
  refresh();
  schedule();
}

if (root && window.uPlot) {
  const picker = $(".load-range", root);
  for (const [key, range] of Object.entries(RANGES)) {
    picker.append(h("button", { type: "button", class: "btn", dataset: { range: key },
      "aria-pressed": String(key === state.range), onclick: () => choose(key) }, range.label));
  }
  new ResizeObserver(() => {
    for (const chart of state.charts.values()) {
      if (chart.u) chart.u.setSize({ width: Math.max(240, chart.plot.clientWidth), height: 160 });
    }
  }).observe($(".load-charts", root));
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) refresh();
  });
  choose("hour");
}
