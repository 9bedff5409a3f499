/* raysys console: the shell (login, hash routes, refresh loop).
 *
 * Views: #/ overview, #/tasks?state=&kind=&cursor= tasks, #/task/<id> one task, #/schedules.
 * Each view module exports a function ctx => {node, refresh, every}: the console mounts
 * `node`, calls `refresh()` at once and then every `every` ms (0: only when asked) until the
 * route changes. An Unauthorized from any call sends the operator back to the login form with
 * the server's message; any other error shows in the banner until the next good refresh.
 */

import {ApiError, Unauthorized, apiCall, forgetToken, saveToken, token} from "./api.js";
import {el, fill} from "./dom.js";
import {overview} from "./overview.js";
import {schedulesView} from "./schedules.js";
import {taskView} from "./task.js";
import {tasksView} from "./tasks.js";

const $ = (id) => document.getElementById(id);
const ROUTES = [
  {pattern: /^\/$/, name: "overview", view: overview},
  {pattern: /^\/tasks$/, name: "tasks", view: tasksView},
  {pattern: /^\/task\/([0-9a-f]{32})$/, name: "tasks", view: taskView},
  {pattern: /^\/schedules$/, name: "schedules", view: schedulesView},
];

let current = null; // {timer, generation} of the mounted view
let generation = 0;

function showBanner(message) {
  const banner = $("banner");
  banner.textContent = message || "";
  banner.hidden = !message;
}

/** What a view does with an error: log out on 401, else show it in the banner. */
function report(err) {
  if (err instanceof Unauthorized) {
    showLogin(`The server refused the token (401: ${err.message}). Log in again.`);
  } else {
    showBanner(err instanceof ApiError ? err.message : `console error: ${err}`);
  }
}

function parseHash() {
  const raw = location.hash.replace(/^#/, "") || "/";
  const at = raw.indexOf("?");
  let path;
  try {
    path = decodeURIComponent(at < 0 ? raw : raw.slice(0, at));
  } catch (err) {  // a malformed %-escape in a hand-typed address: the overview
    path = "/";
  }
  return {path, params: new URLSearchParams(at < 0 ? "" : raw.slice(at + 1))};
}

function stopView() {
  generation += 1;
  if (current && current.timer) clearTimeout(current.timer);
  current = null;
}

async function tick(mounted, gen) {
  try {
    await mounted.refresh();
    if (gen === generation) showBanner("");
  } catch (err) {
    if (gen === generation) report(err);
  }
  if (gen === generation && mounted.every && token()) {
    current.timer = setTimeout(() => tick(mounted, gen), mounted.every);
  }
}

/** Open `hash` (drawn afresh when it is the current one: no hashchange then). */
function go(hash) {
  if (location.hash === hash) route();
  else location.hash = hash;
}

function route() {
  stopView();
  if (!token()) return showLogin("");
  showShell();
  const {path, params} = parseHash();
  const found = ROUTES.find((r) => r.pattern.test(path));
  for (const link of document.querySelectorAll("#nav a")) {
    link.classList.toggle("active", Boolean(found) && link.dataset.view === found.name);
  }
  if (!found) {
    fill($("view"), el("p", {test: "not-found"}, `No page at #${path}. `,
      el("a", {href: "#/"}, "Overview")));
    return;
  }
  const ctx = {params, match: path.match(found.pattern), report, go};
  const mounted = found.view(ctx);
  fill($("view"), mounted.node);
  current = {timer: null};
  tick(mounted, generation);
}

function showLogin(message) {
  stopView();
  forgetToken();
  fill($("view"));
  showBanner("");
  $("login").hidden = false;
  $("nav").hidden = true;
  $("logout").hidden = true;
  $("namespace").textContent = "";
  $("login-message").textContent = message;
  $("token").value = "";
  $("token").focus();
}

function showShell() {
  $("login").hidden = true;
  $("nav").hidden = false;
  $("logout").hidden = false;
  if (!$("namespace").textContent) {
    apiCall("GET", "/stats")
      .then((s) => { $("namespace").textContent = `namespace ${s.namespace}`; })
      .catch(() => {}); // the view's own refresh reports the error
  }
}

/** Check the typed token against the API (any answer but 401 means it is the right one). */
async function logIn(event) {
  event.preventDefault();
  const typed = $("token").value.trim();
  if (!typed) return;
  saveToken(typed);
  try {
    await apiCall("GET", "/stats");
  } catch (err) {
    if (err instanceof Unauthorized) {
      showLogin(`That token was refused (401: ${err.message}).`);
      return;
    }
  }
  $("login-message").textContent = "";
  route();
}

function start() {
  $("login-form").addEventListener("submit", logIn);
  $("logout").addEventListener("click", () => showLogin("Logged out."));
  window.addEventListener("hashchange", route);
  route();
}

start();
