/* raysys console: the schedules (#/schedules), refreshed every 5 s.
 *
 * GET /schedules: each schedule's cron, kind, last and next tick, and whether it is paused,
 * with Pause / Resume (POST /schedules/<name>/pause|resume, audited with the token's id);
 * records that failed verification are listed apart (they never run).
 */

import {apiCall} from "./api.js";
import {button, el, fill, localTime, table} from "./dom.js";

const EVERY_MS = 5000;

function toggle(s, ui) {
  const action = s.paused ? "resume" : "pause";
  return button(s.paused ? "Resume" : "Pause", `${action}-${s.name}`, async () => {
    try {
      await apiCall("POST", `/schedules/${encodeURIComponent(s.name)}/${action}`);
      ui.say(`${s.name}: ${s.paused ? "resumed" : "paused"}.`, false);
    } catch (err) {
      if (err.status === 401) return ui.report(err);
      ui.say(err.message, true);
    }
    await ui.refresh().catch(ui.report);
  });
}

function rows(schedules, ui) {
  return schedules.map((s) => [s.name, el("code", null, s.cron), s.tz || "UTC", s.kind,
    el("span", {test: `state-${s.name}`, class: s.paused ? "down" : "up"},
      s.paused ? "paused" : "active"),
    localTime(s.last_ms), localTime(s.next_ms), s.signed_by, toggle(s, ui)]);
}

function rejected(bad) {
  const names = Object.keys(bad);
  if (!names.length) return null;
  return el("div", {class: "card", test: "schedules-rejected"},
    el("h2", null, "Rejected records (failed verification; never run)"),
    table("rejected-table", ["name", "why"], names.map((n) => [n, bad[n]]), "rejected-row"));
}

export function schedulesView(ctx) {
  const list = el("div");
  const message = el("p", {test: "action-message"});
  const say = (text, failed) => {
    message.textContent = text;
    message.className = failed ? "error" : "ok";
  };
  async function refresh() {
    const doc = await apiCall("GET", "/schedules");
    fill(list, doc.schedules.length
      ? table("schedules-table", ["name", "cron", "zone", "kind", "state", "last tick",
        "next tick", "signed by", ""], rows(doc.schedules,
        {say, refresh, report: ctx.report}), "schedule-row")
      : el("p", {class: "muted", test: "schedules-none"},
        "no schedules (add one with `raysys schedule add` or POST /schedules)"),
    rejected(doc.rejected));
  }
  const node = el("section", {test: "schedules"}, el("h1", null, "Schedules"), message, list);
  return {node, refresh, every: EVERY_MS};
}
