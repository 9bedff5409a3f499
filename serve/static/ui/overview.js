/* raysys console: the overview (#/), refreshed every 2 s.
 *
 * From GET /stats: tasks by state, the last hour's throughput and submit-to-start wait (SVG
 * charts), Redis memory, the actors, the Ray dashboard's address; from GET /workers the
 * workers; from GET /health (open) the system's status.
 */

import {apiCall, health} from "./api.js";
import {lineChart} from "./charts.js";
import {STATES, bytes, el, fill, localTime, num, table} from "./dom.js";

const EVERY_MS = 2000;
const THROUGHPUT = [
  {key: "finished_per_s", label: "finished", class: "s1"},
  {key: "submitted_per_s", label: "submitted", class: "s2"},
];
const WAIT = [
  {key: "wait_p50_ms", label: "p50", class: "s1"},
  {key: "wait_p95_ms", label: "p95", class: "s2"},
];

function counts(stats) {
  return el("div", {class: "counts"}, STATES.map((state) => el("a", {
    class: `count state-${state}`, href: `#/tasks?state=${state}`, test: `count-${state}`},
  el("span", {class: "count-label"}, state),
  el("span", {class: "count-value", test: `count-value-${state}`},
    String(stats.counts[state] || 0)))));
}

function memory(redis) {
  const used = Number(redis.used_memory) || 0;
  const max = Number(redis.maxmemory) || 0;
  const text = max > 0 ? `${bytes(used)} of ${bytes(max)} (${num((100 * used) / max)}%)`
    : `${bytes(used)} (no maxmemory set)`;
  return el("div", {test: "redis-memory"}, el("span", {class: "label"}, "Redis memory "),
    el("span", {test: "redis-memory-text"}, text),
    max > 0 ? el("meter", {min: 0, max, value: used, high: max * 0.85}) : null);
}

function dashboardLink(url) {
  if (!url) return el("span", {test: "dashboard-link", class: "muted"}, "not linked");
  if (!/^https?:\/\//i.test(url)) return el("span", {test: "dashboard-link"}, url);
  return el("a", {href: url, target: "_blank", rel: "noopener noreferrer",
    test: "dashboard-link"}, url);
}

function actorRow(name, up) {
  return el("li", {test: `actor-${name}`, class: up ? "up" : "down"},
    `${name}: `, el("strong", null, up ? "up" : "down"));
}

function system(stats, report) {
  const actors = {...(report ? report.actors : {}), ...stats.actors};
  return [
    el("p", null, "Status ", el("strong", {test: "health-status",
      class: `health-${report ? report.status : "unknown"}`},
    report ? report.status : "unknown"),
    report ? ` · reaper lag ${num(report.reaper_lag_s)} s` : ""),
    el("ul", {class: "actors", test: "actors"}, Object.entries(actors)
      .map(([name, up]) => actorRow(name, up))),
    el("p", null, "Live workers ", el("strong", {test: "live-workers"},
      String(stats.live_workers))),
    memory(stats.redis),
    el("p", null, "Ray dashboard ", dashboardLink(stats.dashboard_url)),
  ];
}

function workerRows(workers) {
  return workers.map((w) => [w.id, w.node || "—",
    el("span", {class: w.alive ? "up" : "down"}, w.alive ? "alive" : "silent"),
    String(w.inflight), `${w.free} of ${w.capacity}`, w.draining ? "draining" : "no",
    String(w.completed), `${num(w.age_ms / 1000)} s ago`]);
}

function charts(series) {
  return [
    lineChart("chart-throughput", "Throughput (tasks/s, last hour)", series, THROUGHPUT, "/s"),
    lineChart("chart-wait", "Submit-to-start wait (last hour)", series, WAIT, " ms"),
  ];
}

async function load() {
  const [stats, workers, report] = await Promise.all([
    apiCall("GET", "/stats"), apiCall("GET", "/workers"), health().catch(() => null)]);
  return {stats, workers: workers.workers, report};
}

export function overview() {
  const parts = {counts: el("div"), system: el("div"), charts: el("div", {class: "row"}),
    workers: el("div"), updated: el("span", {class: "muted", test: "updated"})};
  const node = el("section", {test: "overview"},
    el("h1", null, "Overview ", parts.updated),
    el("div", {class: "row"},
      el("div", {class: "card grow"}, el("h2", null, "Tasks by state"), parts.counts),
      el("div", {class: "card", test: "system"}, el("h2", null, "System"), parts.system)),
    parts.charts,
    el("div", {class: "card"}, el("h2", null, "Workers"), parts.workers));

  async function refresh() {
    const {stats, workers, report} = await load();
    fill(parts.counts, counts(stats));
    fill(parts.system, system(stats, report));
    fill(parts.charts, charts(stats.series || []));
    fill(parts.workers, workers.length ? table("workers-table",
      ["worker", "node", "alive", "in flight", "free slots", "draining", "completed",
        "last beat"], workerRows(workers), "worker-row")
      : el("p", {class: "muted", test: "workers-none"}, "no workers have reported"));
    parts.updated.textContent = `updated ${localTime(Date.now())}`;
  }
  return {node, refresh, every: EVERY_MS};
}
