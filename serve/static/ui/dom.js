/* raysys console: DOM and formatting helpers.
 *
 * Everything the console shows goes through el() (text nodes and attributes, never HTML
 * strings), so data from the API is never parsed as markup. Times are shown in the browser's
 * local time zone, ISO-like ("2026-12-06 12:42:31.602").
 */

const SVG_NS = "http://www.w3.org/2000/svg";

/** Children as nodes: strings and numbers become text nodes; null/undefined/false are dropped. */
function nodes(children) {
  return children.flat(Infinity)
    .filter((c) => c !== null && c !== undefined && c !== false)
    .map((c) => (c instanceof Node ? c : document.createTextNode(String(c))));
}

function setAttributes(node, attrs) {
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "test") node.setAttribute("data-test", value);
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
}

/** An HTML element: el("a", {href: "#/", class: "x", test: "link", onclick: f}, "text", child) */
export function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  setAttributes(node, attrs);
  node.append(...nodes(children));
  return node;
}

/** An SVG element (same attributes as el). */
export function svg(tag, attrs, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  setAttributes(node, attrs);
  node.append(...nodes(children));
  return node;
}

/** Replace the children of `node`. */
export function fill(node, ...children) {
  node.replaceChildren(...nodes(children));
  return node;
}

/** A table: `columns` are header labels, `rows` arrays of cells (text or nodes). */
export function table(test, columns, rows, rowTest) {
  const head = el("thead", null, el("tr", null, columns.map((c) => el("th", null, c))));
  const body = el("tbody", null, rows.map((cells) => el("tr", {test: rowTest},
    cells.map((cell) => el("td", null, cell)))));
  return el("table", {test}, head, body);
}

const pad = (n, width = 2) => String(n).padStart(width, "0");

/** Epoch ms (or a Date, or ISO text) as local "YYYY-MM-DD HH:MM:SS.mmm"; "—" for none. */
export function localTime(when) {
  if (when === null || when === undefined || when === "") return "—";
  const d = when instanceof Date ? when : new Date(when);
  if (Number.isNaN(d.getTime())) return String(when);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.` +
    pad(d.getMilliseconds(), 3);
}

/** Epoch seconds as local "HH:MM". */
export function clock(seconds) {
  const d = new Date(seconds * 1000);
  return `${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

/** Bytes as "12.3 MiB". */
export function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = Number(n) || 0;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value.toFixed(unit === 0 ? 0 : 1)} ${units[unit]}`;
}

/** A number shortly: 3 significant digits at most ("12.3", "1.2k"); "—" for null. */
export function num(value) {
  if (value === null || value === undefined) return "—";
  if (Math.abs(value) >= 10000) return `${(value / 1000).toFixed(0)}k`;
  if (Math.abs(value) >= 100 || Number.isInteger(value)) return String(Math.round(value));
  return value.toFixed(value >= 10 ? 1 : 2);
}

/** A task state as a coloured badge. */
export function badge(state, test) {
  return el("span", {class: `badge state-${state}`, test}, state);
}

/** A button that runs `action` once at a time (disabled while it runs). */
export function button(label, test, action, kind) {
  const node = el("button", {type: "button", test, class: kind || null}, label);
  node.addEventListener("click", async () => {
    node.disabled = true;
    try {
      await action();
    } finally {
      node.disabled = false;
    }
  });
  return node;
}

/** Task states, in the order a task moves through them. */
export const STATES = ["scheduled", "pending", "leased", "failed", "succeeded", "dead",
  "cancelled", "quarantined"];
export const FINAL = ["succeeded", "dead", "cancelled", "quarantined"];
export const REDRIVABLE = ["dead", "cancelled", "quarantined"];
