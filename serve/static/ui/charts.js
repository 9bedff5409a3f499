/* raysys console: small SVG line charts, drawn by hand (no library).
 *
 * lineChart(points, lines) plots the /stats series (one sample every 10 s, oldest first) over
 * time; a null value (no task finished in that interval, so no wait) breaks the line. The
 * y axis starts at 0 and ends at a round number above the largest value.
 */

import {clock, el, num, svg} from "./dom.js";

const W = 560;
const H = 170;
const PAD = {left: 44, right: 10, top: 10, bottom: 22};
const MIN_SPAN_S = 120; // at first, show at least two minutes so a few points are not a wall

/** The smallest 1, 2 or 5 × 10^n at or above `value` (1 for nothing). */
function roundUp(value) {
  if (!(value > 0)) return 1;
  const step = 10 ** Math.floor(Math.log10(value));
  return [1, 2, 5, 10].map((m) => m * step).find((v) => v >= value);
}

function scales(points, lines) {
  const last = points.length ? points[points.length - 1].ts : Date.now() / 1000;
  const first = points.length ? Math.min(points[0].ts, last - MIN_SPAN_S) : last - MIN_SPAN_S;
  const values = points.flatMap((p) => lines.map((l) => p[l.key])).filter((v) => v !== null);
  const top = roundUp(Math.max(0, ...values));
  const x = (ts) => PAD.left + ((ts - first) / (last - first)) * (W - PAD.left - PAD.right);
  const y = (v) => H - PAD.bottom - (v / top) * (H - PAD.top - PAD.bottom);
  return {first, last, top, x, y};
}

/** Runs of consecutive non-null points, as "x,y x,y ..." strings. */
function segments(points, key, s) {
  const runs = [];
  let run = [];
  for (const p of points) {
    if (p[key] === null || p[key] === undefined) {
      if (run.length) runs.push(run);
      run = [];
    } else {
      run.push(`${s.x(p.ts).toFixed(1)},${s.y(p[key]).toFixed(1)}`);
    }
  }
  if (run.length) runs.push(run);
  return runs;
}

function axes(s, unit) {
  const bottom = H - PAD.bottom;
  return [
    svg("line", {class: "axis", x1: PAD.left, y1: bottom, x2: W - PAD.right, y2: bottom}),
    svg("line", {class: "grid", x1: PAD.left, y1: PAD.top, x2: W - PAD.right, y2: PAD.top}),
    svg("text", {class: "tick", x: PAD.left - 4, y: PAD.top + 4, "text-anchor": "end"},
      `${num(s.top)}${unit}`),
    svg("text", {class: "tick", x: PAD.left - 4, y: bottom + 4, "text-anchor": "end"}, "0"),
    svg("text", {class: "tick", x: PAD.left, y: H - 6}, clock(s.first)),
    svg("text", {class: "tick", x: W - PAD.right, y: H - 6, "text-anchor": "end"},
      clock(s.last)),
  ];
}

function plot(points, line, s) {
  const runs = segments(points, line.key, s);
  return runs.map((run) => (run.length === 1
    ? svg("circle", {class: `dot ${line.class}`, cx: run[0].split(",")[0],
      cy: run[0].split(",")[1], r: 2.5})
    : svg("polyline", {class: `line ${line.class}`, points: run.join(" ")})));
}

function legend(points, lines, unit) {
  const latest = points.length ? points[points.length - 1] : {};
  return el("ul", {class: "legend"}, lines.map((line) => el("li", null,
    el("span", {class: `swatch ${line.class}`}), `${line.label} `,
    el("strong", {test: `latest-${line.key}`}, `${num(latest[line.key] ?? null)}${unit}`))));
}

/**
 * A chart figure: `lines` = [{key, label, class}] read from each point; `unit` after values.
 */
export function lineChart(test, title, points, lines, unit) {
  const s = scales(points, lines);
  const drawing = svg("svg", {viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img",
    "aria-label": title},
  axes(s, unit), lines.map((line) => plot(points, line, s)));
  const empty = points.length ? null : el("p", {class: "muted"}, "no samples yet");
  return el("figure", {test, class: "card"}, el("figcaption", null, title),
    legend(points, lines, unit), drawing, empty);
}
