/* raysys console: one task (#/task/<id>), refreshed every 2 s.
 *
 * GET /tasks/<id> (state, kind, attempts, result or error, integrity) and
 * GET /tasks/<id>/history (attempts: holder, fence, start, end, detail; audit entries, which
 * name who acted: "token <id> from <address>"). Actions: Cancel while the task is not final,
 * Redrive when it is dead, cancelled or quarantined; the API's message shows on failure.
 */

import {ApiError, apiCall} from "./api.js";
import {FINAL, REDRIVABLE, badge, button, el, fill, localTime, table} from "./dom.js";

const EVERY_MS = 2000;

/** "failed: bad signature (task record)" → "failed verification: bad signature (...)" */
function integrityText(integrity) {
  return `failed verification: ${integrity.replace(/^failed:?\s*/i, "")}`;
}

function field(label, value, test) {
  return [el("dt", null, label), el("dd", {test}, value)];
}

function details(t) {
  const result = t.result === null || t.result === undefined ? null
    : el("pre", {class: "result", test: "task-result"}, JSON.stringify(t.result, null, 2));
  return el("dl", {class: "fields"},
    field("State", badge(t.state, "task-state-badge"), "task-state"),
    field("Kind", t.kind || "—", "task-kind"),
    field("Priority", String(t.priority ?? "—"), "task-priority"),
    field("Attempts", String(t.attempts), "task-attempts"),
    t.run_at ? field("Runs at", localTime(t.run_at), "task-run-at") : null,
    t.waiting ? field("Waiting", typeof t.waiting === "string" ? t.waiting
      : JSON.stringify(t.waiting), "task-waiting") : null,
    result ? field("Result", result, "task-result-field") : null,
    t.error ? field("Error", el("span", {class: "error"}, t.error), "task-error") : null);
}

function attemptRows(history) {
  return history.map((h) => [h.event, h.attempt ?? "—", h.holder || "—", h.fence ?? "—",
    localTime(h.started_ms), localTime(h.ended_ms), h.detail || ""]);
}

function auditRows(audit) {
  return audit.map((entry) => {
    const {ev, by, ...rest} = entry;
    const other = Object.entries(rest).map(([k, v]) => `${k}=${v}`).join(" ");
    return [ev || "—", by ? el("span", {test: "audit-by"}, by) : "—", other];
  });
}

function sections(history) {
  return [
    el("h2", null, "Attempts and events"),
    history.history.length ? table("history-table", ["event", "attempt", "holder", "fence",
      "started", "ended", "error / detail"], attemptRows(history.history), "history-row")
      : el("p", {class: "muted"}, "no attempt has ended yet"),
    el("h2", null, "Audit"),
    history.audit.length ? table("audit-table", ["event", "by", "details"],
      auditRows(history.audit), "audit-row")
      : el("p", {class: "muted", test: "audit-none"}, "no audit entries name this task"),
  ];
}

/** The Cancel and Redrive buttons, and where their outcome shows. */
function actions(id, ctx, refresh) {
  const message = el("p", {test: "action-message", class: "ok"});
  const say = (text, failed) => {
    message.textContent = text;
    message.className = failed ? "error" : "ok";
    message.dataset.test = failed ? "action-error" : "action-message";
  };
  const act = (work) => async () => {
    try {
      say(await work(), false);
    } catch (err) {
      if (err.status === 401) return ctx.report(err);
      say(err.message, true);
    }
    await refresh().catch(ctx.report);
  };
  const cancel = button("Cancel", "task-cancel", act(async () => {
    const out = await apiCall("DELETE", `/tasks/${id}`);
    return out.cancelled ? `Cancelled (it was ${out.before}).`
      : `Nothing to cancel: the task is already ${out.state}.`;
  }), "danger");
  const redrive = button("Redrive", "task-redrive", act(async () => {
    const out = await apiCall("POST", "/tasks/redrive", {ids: [id]});
    if (out.redriven.includes(id) || out.already.includes(id)) return "Redriven: it runs again.";
    if (out.refused[id]) throw new ApiError(409, `Redrive refused: ${out.refused[id]}`);
    throw new ApiError(404, "Redrive: the task was not found.");
  }));
  return {cancel, redrive, message};
}

export function taskView(ctx) {
  const id = ctx.match[1];
  const parts = {alert: el("p", {class: "integrity", test: "task-integrity", hidden: true}),
    details: el("div"), history: el("div")};
  const refresh = async () => {
    const [t, history] = await Promise.all([apiCall("GET", `/tasks/${id}`),
      apiCall("GET", `/tasks/${id}/history`)]);
    parts.alert.hidden = !t.integrity;
    parts.alert.textContent = t.integrity ? integrityText(t.integrity) : "";
    fill(parts.details, details(t));
    fill(parts.history, sections(history));
    buttons.cancel.hidden = FINAL.includes(t.state);
    buttons.redrive.hidden = !REDRIVABLE.includes(t.state);
  };
  const buttons = actions(id, ctx, refresh);
  const node = el("section", {test: "task"},
    el("h1", null, "Task ", el("span", {class: "mono", test: "task-id"}, id)),
    parts.alert, parts.details,
    el("div", {class: "actions"}, buttons.cancel, buttons.redrive), buttons.message,
    parts.history);
  buttons.cancel.hidden = true;
  buttons.redrive.hidden = true;
  return {node, refresh, every: EVERY_MS};
}
