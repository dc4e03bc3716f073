// Scheduled actions (the ones Spark Control runs itself) in the Scheduled jobs panel: next run, last run and its
// outcome. Read from GET /api/actions, then kept current by the dashboard's "action" messages (each carries the
// whole action in the API's shape, or {name, deleted: true}).
// Values from outside are rendered with DOM text APIs only (see dom.js).

import { apiGet } from "./api.js";
import { fill, h } from "./dom.js";
import { formatAbsolute, formatRelative, parseTime } from "./format.js";

const ARGUMENT = { swap: "model", restart: "service", sweep: "sweep" };
const OUTCOME_CLASS = { ok: "state-ready", failed: "state-failed", skipped: "badge-warn", running: "state-loading" };

function when(value) {
  if (!value) return h("span", { class: "muted", text: "–" });
  return h("time", { datetime: value, title: formatAbsolute(value), dataset: { rel: "relative" }, text: formatRelative(value) });
}

function bySoonest(a, b) {
  const ta = parseTime(a.next_run);
  const tb = parseTime(b.next_run);
  if (ta && tb && ta.getTime() !== tb.getTime()) return ta - tb;
  if (ta && !tb) return -1;
  if (!ta && tb) return 1;
  return a.name < b.name ? -1 : a.name > b.name ? 1 : 0;
}

export function scheduledActions(container) {
  let actions = [];

  function row(action) {
    const argumentKey = ARGUMENT[action.action];
    const what = argumentKey && action[argumentKey] ? `${action.action} ${action[argumentKey]}` : action.action;
    const last = action.last_run;
    return h(
      "tr",
      { dataset: { action: action.name }, class: action.enabled ? null : "stale" },
      h("td", {}, action.enabled ? when(action.next_run) : h("span", { class: "muted", text: "paused" })),
      h("td", {}, h("div", { class: "job-name", text: action.name }), h("div", { class: "muted small", text: what })),
      h("td", { class: "mono small", text: `${action.cron} (${action.timezone})` }),
      h(
        "td",
        { class: "action-last" },
        last
          ? [
              h("span", { class: `badge ${OUTCOME_CLASS[last.outcome] || ""}`, text: last.outcome, dataset: { outcome: last.outcome } }),
              " ",
              when(last.finished_at || last.started_at || last.scheduled_for),
              last.detail ? h("div", { class: "muted small", text: last.detail }) : null,
            ]
          : h("span", { class: "muted", text: "never run" }),
      ),
    );
  }

  function render() {
    if (!actions.length) {
      fill(container, h("p", { class: "muted", text: "No scheduled actions." }));
      return;
    }
    fill(
      container,
      h(
        "table",
        { class: "table" },
        h("thead", {}, h("tr", {}, ["Next run", "Action", "Schedule", "Last run"].map((title) => h("th", { text: title })))),
        h("tbody", {}, [...actions].sort(bySoonest).map(row)),
      ),
    );
  }

  const panel = {
    render,
    // After every (re)connection: the whole list again.
    async resync() {
      actions = await apiGet("/actions");
      render();
    },
    onMessage(message) {
      actions = actions.filter((action) => action.name !== message.name);
      if (!message.deleted) actions.push(message);
      render();
    },
  };
  // The first list at once; the websocket's (re)connections read it again.
  panel.resync().catch(() => {});
  return panel;
}
