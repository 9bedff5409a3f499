/* raysys console: the task list (#/tasks?state=&kind=&cursor=).
 *
 * GET /tasks, newest first, 50 a page; "Next" follows the API's cursor (kept in the address,
 * so the browser's back button returns to the page before), "First page" drops it. On a state
 * that can run again (dead, cancelled, quarantined) "Redrive all" first asks the API what it
 * would redrive (dry run), then asks the operator to confirm.
 */

import {apiCall} from "./api.js";
import {REDRIVABLE, STATES, badge, button, el, fill, localTime, table} from "./dom.js";

const PAGE = 50;

function query(filters, cursor) {
  const q = new URLSearchParams();
  if (filters.state) q.set("state", filters.state);
  if (filters.kind) q.set("kind", filters.kind);
  if (cursor) q.set("cursor", cursor);
  return q.toString();
}

function filterForm(filters, ctx) {
  const state = el("select", {id: "filter-state", test: "filter-state"},
    el("option", {value: ""}, "any state"),
    STATES.map((s) => el("option", {value: s, selected: s === filters.state}, s)));
  const kind = el("input", {id: "filter-kind", test: "filter-kind", placeholder: "any kind",
    value: filters.kind, maxlength: 128, spellcheck: "false"});
  const form = el("form", {class: "filters", test: "filters"},
    el("label", {for: "filter-state"}, "State "), state,
    el("label", {for: "filter-kind"}, " Kind "), kind,
    el("button", {type: "submit", test: "filter-apply"}, "Show"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    ctx.go(`#/tasks?${query({state: state.value, kind: kind.value.trim()})}`);
  });
  return form;
}

function rows(tasks) {
  return tasks.map((t) => [
    el("a", {href: `#/task/${t.id}`, test: "task-link", class: "mono"}, t.id),
    badge(t.state), t.kind, String(t.attempts), localTime(t.submitted_ms),
    localTime(t.finished_ms), t.error ? el("span", {class: "error"}, t.error) : ""]);
}

const MAX_IDS = 10000;

/** The "Redrive all <state> (of kind K)" control: a dry run, a confirm step, the real run. */
function bulkRedrive(filters, ctx, refresh) {
  const ofKind = filters.kind ? ` of kind ${filters.kind}` : "";
  const box = el("div", {class: "bulk", test: "redrive-all-box"});
  const body = {state: filters.state, ...(filters.kind ? {kind: filters.kind} : {})};
  const show = (...children) => fill(box, ...children);

  // Exactly the tasks the operator confirmed (not those that died since), in requests of
  // at most MAX_IDS ids each (the API's limit).
  async function run(ids) {
    let redriven = 0, refused = 0;
    for (let i = 0; i < ids.length; i += MAX_IDS) {
      const done = await apiCall("POST", "/tasks/redrive", {ids: ids.slice(i, i + MAX_IDS)});
      redriven += done.redriven.length;
      refused += Object.keys(done.refused).length;
    }
    show(el("p", {test: "redrive-result", class: "ok"}, `Redriven: ${redriven}` +
      (refused ? `; refused: ${refused}` : "") + "."), start);
    await refresh();
  }

  async function ask() {
    const plan = await apiCall("POST", "/tasks/redrive", {...body, dry_run: true});
    const n = plan.redriven.length;
    if (!n) {
      return show(el("p", {test: "redrive-result"}, `No ${filters.state} task${ofKind} to ` +
        "redrive."), start);
    }
    show(el("p", {test: "redrive-confirm"}, `${n} ${filters.state} task${n === 1 ? "" : "s"}` +
      `${ofKind} will run again under their own ids. Redrive them?`),
    button("Yes, redrive", "redrive-confirm-yes", () => run(plan.redriven).catch(failed),
      "danger"),
    button("No", "redrive-confirm-no", async () => show(start)));
  }

  function failed(err) {
    if (err.status === 401) return ctx.report(err);
    show(el("p", {class: "error", test: "action-error"}, err.message), start);
  }
  const start = button(`Redrive all ${filters.state}${ofKind}`, "redrive-all",
    () => ask().catch(failed));
  return show(start);
}

export function tasksView(ctx) {
  const filters = {state: ctx.params.get("state") || "", kind: ctx.params.get("kind") || ""};
  const cursor = ctx.params.get("cursor") || "";
  const list = el("div", {test: "tasks-list"});
  const pager = el("div", {class: "pager"});

  async function refresh() {
    const q = new URLSearchParams(query(filters, cursor));
    q.set("limit", String(PAGE));
    const page = await apiCall("GET", `/tasks?${q}`);
    fill(list, page.tasks.length
      ? table("tasks-table", ["id", "state", "kind", "attempts", "submitted", "finished",
        "error"], rows(page.tasks), "task-row")
      : el("p", {class: "muted", test: "tasks-none"}, "no tasks"));
    fill(pager, button("First page", "page-first", async () => ctx.go(`#/tasks?${query(
      filters)}`)), button("Next", "page-next", async () => ctx.go(`#/tasks?${query(filters,
      page.cursor)}`)), button("Refresh", "tasks-refresh", () => refresh().catch(ctx.report)));
    pager.querySelector("[data-test=page-first]").disabled = !cursor;
    pager.querySelector("[data-test=page-next]").disabled = !page.cursor;
  }
  const node = el("section", {test: "tasks"}, el("h1", null, "Tasks"),
    filterForm(filters, ctx),
    REDRIVABLE.includes(filters.state) ? bulkRedrive(filters, ctx, refresh) : null, list, pager);
  return {node, refresh, every: 0};
}
