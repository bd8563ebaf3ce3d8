// The evening at a glance: per flood station, the last hours of water level against its BĐ
// I/II/III lines and the predicted tide (GET /api/v1/flood/stations/{id}/tide), the hours ahead
// of the tide to the next high water, the rain at the city's gauge as bars, and the alerts of the
// station opened (▲) and closed (▼) on the same time axis.
//
// The axis ends at "now" as the data tells it — the newest reading — so a replayed evening (the
// demo) is drawn where its readings are, not empty beside the wall clock.
import { el, svg } from "./dom.js";
import { t, fmtTime, fmtNumber } from "./i18n.js";

export const PAST_H = 6, AHEAD_H = 6;
const BD = [["bd1", "#ffd84d"], ["bd2", "#ffb340"], ["bd3", "#ff5d5d"]];
const HOUR = 3600 * 1000;

// data: { station (device with bd1..3 from the site), points [{time,value}], tide {points, extremes},
//         rain [{time,value}] (mm/h), rainName, alerts [{active_at, resolved_at, severity}], end (ms) }
export function stationTimeline(data) {
  const { station, points, tide, rain, alerts, end } = data;
  const W = 900, H = 160, L = 44, R = 96, TOP = 8, RAIN_H = 28, AX = 16;
  const t0 = end - PAST_H * HOUR, t1 = end + AHEAD_H * HOUR;
  const levels = BD.map(([k, c]) => [k, c, station.attributes?.[k]]).filter(([, , v]) => v != null);
  const tidePts = (tide?.points || []).map((p) => ({ ms: Date.parse(p.time), v: p.level_m }))
    .filter((p) => p.ms >= t0 && p.ms <= t1);
  const obs = points.map((p) => ({ ms: Date.parse(p.time), v: p.value })).filter((p) => p.ms >= t0 && p.ms <= end);
  const values = [...obs.map((p) => p.v), ...tidePts.map((p) => p.v), ...levels.map(([, , v]) => v)];
  if (!values.length) return el("div", { class: "empty" }, `${station.name}: ${t("noData")}`);
  const lo = Math.min(...values) - 0.05, hi = Math.max(...values) + 0.05;
  const plotB = H - RAIN_H - AX;  // bottom of the level plot
  const x = (ms) => L + ((ms - t0) / (t1 - t0)) * (W - L - R);
  const y = (v) => plotB - ((v - lo) / (hi - lo)) * (plotB - TOP);
  const line = (pts) => pts.map((p) => `${x(p.ms).toFixed(1)},${y(p.v).toFixed(1)}`).join(" ");
  const hw = (tide?.extremes || []).map((e) => ({ ...e, ms: Date.parse(e.time) }))
    .find((e) => e.kind === "high" && e.ms >= end && e.ms <= t1);  // marked when on the chart
  const last = obs.at(-1);
  const rainMax = Math.max(20, ...rain.map((r) => r.value));
  const rainBars = rain.map((r) => ({ ms: Date.parse(r.time), v: r.value })).filter((r) => r.ms >= t0 && r.ms <= end && r.v > 0);
  const hours = [];
  for (let h = Math.ceil(t0 / HOUR) * HOUR; h <= t1; h += 2 * HOUR) hours.push(h);
  const head = el("div", { class: "chart-head" },
    el("span", { class: "chart-name" }, station.name),
    el("span", { class: "legend-inline" },
      el("span", { class: "key obs" }, t("observed")), el("span", { class: "key tide" }, t("predictedTide")),
      el("span", { class: "key rainkey" }, `${t("rain")} (mm/h)`)),
    el("b", { class: "value" }, last ? `${fmtNumber(last.v, 2)} m` : "—"));
  return el("div", { class: "chart timeline", dataset: { station: station.id } }, head,
    svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "spark", role: "img",
                 "aria-label": `${station.name}: ${t("water")}` },
      // hour grid and labels
      hours.map((h) => [svg("line", { x1: x(h), x2: x(h), y1: TOP, y2: H - AX, stroke: "#243041", "stroke-width": 1 }),
        svg("text", { x: x(h), y: H - 3, fill: "#8b98a9", "font-size": 13, "text-anchor": "middle" }, fmtTime(new Date(h)).slice(0, 5))]),
      // the level axis: metres
      svg("text", { x: 2, y: TOP + 12, fill: "#8b98a9", "font-size": 13 }, "m"),
      [lo + 0.05, hi - 0.05].map((v) => svg("text", { x: L - 4, y: y(v) + 4, fill: "#8b98a9", "font-size": 13, "text-anchor": "end" }, fmtNumber(v, 1))),
      levels.map(([k, c, v]) => [
        svg("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), stroke: c, "stroke-dasharray": "6 4", "stroke-width": 1.5 }),
        svg("text", { x: W - R + 4, y: y(v) + 4, fill: c, "font-size": 13 }, `BĐ ${"I".repeat(Number(k[2]))} ${fmtNumber(v, 2)} m`)]),
      svg("polyline", { class: "tide", fill: "none", stroke: "#7fd1c7", "stroke-width": 1.5, "stroke-dasharray": "3 3", points: line(tidePts) }),
      obs.length ? svg("polyline", { class: "observed", fill: "none", stroke: "#5aa9ff", "stroke-width": 3, points: line(obs) }) : null,
      // now
      svg("line", { x1: x(end), x2: x(end), y1: TOP, y2: H - AX, stroke: "#e6edf3", "stroke-width": 1, "stroke-dasharray": "2 3" }),
      svg("text", { x: x(end) + 3, y: TOP + 12, fill: "#e6edf3", "font-size": 13 }, fmtTime(new Date(end)).slice(0, 5)),
      // next high water, predicted
      hw ? [svg("circle", { cx: x(hw.ms), cy: y(hw.level_m), r: 5, fill: "#7fd1c7" }),
        svg("text", { x: Math.min(x(hw.ms), W - R - 4), y: Math.max(TOP + 12, y(hw.level_m) - 8), fill: "#7fd1c7", "font-size": 14, "text-anchor": "middle" },
          `${fmtTime(hw.time).slice(0, 5)} ${fmtNumber(hw.level_m, 2)} m`)] : null,
      // rain at the city's gauge: bars scaled to at least 20 mm/h
      rainBars.map((r) => svg("rect", { class: "rainbar", x: x(r.ms) - 2, width: 4, y: H - AX - (r.v / rainMax) * RAIN_H,
                                        height: (r.v / rainMax) * RAIN_H, fill: "#5aa9ff", opacity: 0.6 })),
      svg("text", { x: L - 4, y: H - AX - 2, fill: "#8b98a9", "font-size": 12, "text-anchor": "end" }, `${fmtNumber(rainMax)}`),
      // alerts on this station: opened ▲ at the top, closed ▼ beside it
      alerts.flatMap((a) => {
        const col = a.severity === "critical" ? "#ff5d5d" : "#ffb340", out = [];
        const open = Date.parse(a.started_at || a.active_at), shut = a.resolved_at ? Date.parse(a.resolved_at) : null;
        if (open >= t0 && open <= end) out.push(svg("path", { class: "alert-open", d: `M${x(open) - 6},${plotB} l6,-10 l6,10 z`, fill: col }));
        if (shut && shut >= t0 && shut <= end) out.push(svg("path", { class: "alert-closed", d: `M${x(shut) - 6},${plotB - 10} l12,0 l-6,10 z`, fill: "#3ddc84" }));
        return out;
      })));
}
