// The side panels: water level with BĐ lines, rain, lighting per cabinet, traffic by junction,
// incidents with deadline countdowns, KPIs against their targets. Each takes plain data and
// returns DOM, so main.js decides when to redraw (at most once per animation frame).
import { el, svg } from "./dom.js";
import { t, fmtTime, fmtDuration, getLang, fmtNumber, fmtPercent, nameOf } from "./i18n.js";

const BD_COLOURS = { bd1: "#ffd84d", bd2: "#ffb340", bd3: "#ff5d5d" };

// A 24 h line chart of one station, with its three alarm levels as dashed lines.
export function waterChart(station, points) {
  const W = 400, H = 140, P = 4;
  const levels = ["bd1", "bd2", "bd3"].map((k) => [k, station.attributes?.[k]]).filter(([, v]) => v != null);
  const values = points.map((p) => p.value).concat(levels.map(([, v]) => v));
  if (!points.length) return el("div", { class: "empty" }, `${station.name}: ${t("noData")}`);
  const lo = Math.min(...values) - 0.05, hi = Math.max(...values) + 0.05;
  const t0 = new Date(points[0].time).getTime(), t1 = new Date(points.at(-1).time).getTime() || t0 + 1;
  const x = (ts) => P + ((new Date(ts).getTime() - t0) / Math.max(1, t1 - t0)) * (W - 2 * P);
  const y = (v) => H - P - ((v - lo) / (hi - lo)) * (H - 2 * P);
  const last = points.at(-1);
  return el("div", { class: "chart" },
    el("div", { class: "chart-head" }, station.name,
      el("b", { class: "value" }, `${fmtNumber(last.value, 2)} m`)),
    svg("svg", { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none", class: "spark" },
      levels.map(([k, v]) => [
        svg("line", { x1: 0, x2: W, y1: y(v), y2: y(v), stroke: BD_COLOURS[k], "stroke-dasharray": "6 4", "stroke-width": 1.5 }),
        svg("text", { x: W - 4, y: y(v) - 3, fill: BD_COLOURS[k], "text-anchor": "end", "font-size": 12 },
          `BĐ ${"I".repeat(Number(k[2]))} ${fmtNumber(v, 2)}`)]),
      svg("polyline", { fill: "none", stroke: "#5aa9ff", "stroke-width": 2,
                        points: points.map((p) => `${x(p.time).toFixed(1)},${y(p.value).toFixed(1)}`).join(" ") })));
}

// Rows of "name  value unit", sorted by value descending; for rain and traffic.
function ranked(items, fmt) {
  if (!items.length) return el("div", { class: "empty" }, t("noData"));
  return el("table", { class: "ranked" }, items.map(([name, v, cls]) =>
    el("tr", { class: cls || "" }, el("td", {}, name), el("td", { class: "num" }, fmt(v)))));
}

export function rainPanel(devices) {
  const rows = devices.filter((d) => d.kind === "rain" && d.latest.rain_rate_mm_h)
    .map((d) => [d.name, d.latest.rain_rate_mm_h.value, d.latest.rain_rate_mm_h.value >= 50 ? "hot" : ""])
    .sort((a, b) => b[1] - a[1]).slice(0, 6);
  return ranked(rows, (v) => `${fmtNumber(v, 1)} mm/h`);
}

// Congestion = 1 − speed / free-flow speed (free flow from the device's attributes, else 40 km/h).
export function trafficPanel(devices) {
  const rows = devices.filter((d) => d.kind === "traffic" && d.latest.speed_kmh)
    .map((d) => {
      const free = d.attributes?.free_flow_kmh || 40;
      const c = Math.max(0, 1 - d.latest.speed_kmh.value / free);
      return [d.attributes?.junction ? nameOf("junction", d.attributes.junction) : d.name, c,
              c >= 0.5 ? "hot" : c >= 0.3 ? "warm" : ""];
    })
    .sort((a, b) => b[1] - a[1]).slice(0, 6);
  return ranked(rows, fmtPercent);
}

// Lamps per cabinet: on (drawing power), off, faulty (offline or with a firing alert).
export function lightingPanel(devices, stateOf, energy) {
  const cabinets = new Map();
  for (const d of devices) {
    if (d.kind !== "lighting") continue;
    const cab = d.attributes?.cabinet || "—";
    const c = cabinets.get(cab) || cabinets.set(cab, { on: 0, off: 0, faulty: 0 }).get(cab);
    const s = stateOf(d);
    if (s === "alert" || s === "warning" || s === "offline") c.faulty += 1;
    else if ((d.latest.power_w?.value ?? 0) > 5) c.on += 1;
    else c.off += 1;
  }
  if (!cabinets.size) return el("div", { class: "empty" }, t("noData"));
  const kwh = new Map((energy?.cabinets || []).map((c) => [c.cabinet, c]));
  const num = (v) => fmtNumber(v, 1);
  // Cabinets by name; the words every name starts with ("Tủ điện chiếu sáng số") go to the
  // column's header once, so the rows keep what tells them apart ("03 – đường Hùng Vương").
  const names = new Map([...cabinets.keys()].map((cab) => [cab, nameOf("device", cab)]));
  const prefix = commonWords([...names.values()]);
  const short = (cab) => names.get(cab).slice(prefix.length).trim() || names.get(cab);
  const table = el("table", { class: "ranked" },
    el("tr", {}, el("th", {}, prefix), el("th", { class: "num" }, t("on")), el("th", { class: "num" }, t("off")),
      el("th", { class: "num" }, t("faulty")), el("th", { class: "num" }, t("tonightKwh")),
      el("th", { class: "num" }, t("lastWeekKwh"))),
    [...cabinets.entries()].sort((a, b) => b[1].faulty - a[1].faulty || a[0].localeCompare(b[0])).slice(0, 8)
      .map(([cab, c]) => el("tr", { class: c.faulty ? "warm" : "" }, el("td", { class: "name", title: names.get(cab) }, short(cab)),
        el("td", { class: "num" }, c.on), el("td", { class: "num" }, c.off), el("td", { class: "num" }, c.faulty),
        el("td", { class: "num" }, num(kwh.get(cab)?.tonight_kwh)),
        el("td", { class: "num" }, num(kwh.get(cab)?.last_week_kwh)))));
  if (!energy || energy.tonight_kwh == null) return table;
  // the whole city's lighting tonight against last week, same hours
  const change = energy.last_week_kwh ? (energy.tonight_kwh / energy.last_week_kwh - 1) * 100 : null;
  return el("div", {}, table, el("div", { class: "dim" },
    `${t("tonightKwh")}: ${num(energy.tonight_kwh)} · ${t("lastWeekKwh")}: ${num(energy.last_week_kwh)}` +
    (change == null ? "" : ` (${change >= 0 ? "+" : ""}${fmtNumber(change)} %)`)));
}

// The whole words all names start with ("" when fewer than two names or nothing in common).
function commonWords(names) {
  if (names.length < 2) return "";
  const split = names.map((n) => n.split(" "));
  let k = 0;
  while (split.every((w) => k < w.length - 1 && w[k] === split[0][k])) k += 1;
  return split[0].slice(0, k).join(" ");
}

// Open incidents by status; countdown from seconds_left at the time it was fetched.
export function incidentsPanel(incidents, fetchedAt, onPick) {
  if (!incidents.length) return el("div", { class: "empty" }, t("noIncidents"));
  const now = Date.now();
  return el("ul", { class: "incidents" }, incidents.map((i) => {
    const left = i.seconds_left == null ? null : i.seconds_left * 1000 - (now - fetchedAt);
    const late = i.overdue || (left != null && left < 0);
    return el("li", { class: late ? "late" : "", onclick: () => onPick && onPick(i.id) },
      el("span", { class: "pill st" }, t("statuses")[i.status] || i.status),
      el("span", {}, ` #${i.id} ${i.title}`),
      el("span", { class: "countdown" }, left == null ? "" : late ? `${t("overdue")} ${fmtDuration(left)}`
        : `${t("left")} ${fmtDuration(left)}`));
  }));
}

export function kpiPanel(k) {
  if (!k) return el("div", { class: "empty" }, t("noData"));
  const gauge = (label, v, target) => el("div", { class: `kpi ${v == null ? "" : v >= target ? "met" : "missed"}` },
    el("div", { class: "kpi-label" }, label),
    el("div", { class: "kpi-value" }, v == null ? "—" : fmtPercent(v)),
    el("div", { class: "dim" }, `${t("target")} ${fmtPercent(target)}`));
  // the programme's targets are about citizens' reports: the headline row (docs/kpis.md)
  const h = k.headline || k.total;
  return el("div", { class: "kpis" },
    gauge(t("onTime"), h.on_time_rate, k.targets.on_time),
    gauge(t("satisfaction"), h.satisfaction, k.targets.satisfaction));
}

// The unit of a metric from its name's suffix (the catalogue's convention: water_level_m, power_w).
const UNITS = [["_pct", "%"], ["_mm_h", "mm/h"], ["_mm", "mm"], ["_kmh", "km/h"], ["_kwh", "kWh"],
               ["_m", "m"], ["_w", "W"], ["_v", "V"], ["_a", "A"], ["_c", "°C"], ["_s", "s"]];
function unitOf(metric) {
  for (const [suffix, u] of UNITS) if (metric.endsWith(suffix)) return u;
  return "";
}

// The detail panel opened by a click on the map.
export function devicePanel(d, state, alerts) {
  return el("div", {},
    el("h3", {}, d.name),
    el("div", { class: "dim" }, [t("kinds")[d.kind] || d.kind, nameOf("city", d.city), nameOf("ward", d.ward)]
      .filter(Boolean).join(" · ")),
    el("div", { class: `state st-${state}` }, t(state)),
    el("table", { class: "ranked" }, Object.entries(d.latest).sort().map(([m, p]) =>
      el("tr", {}, el("td", {}, t("metrics")[m] || m),
        el("td", { class: "num" }, typeof p.value === "number" ? `${fmtNumber(p.value, 2)} ${unitOf(m)}`.trim() : String(p.value)),
        el("td", { class: "time" }, fmtTime(p.time))))),
    alerts.map((a) => el("div", { class: `pill sev-${a.severity}` },
      (getLang() === "en" ? a.annotations?.summary_en : a.annotations?.summary_vi) || a.rule)));
}

export function reportPanel(r) {
  return el("div", {},
    el("h3", {}, `${t("report")} #${r.service_request_id} · ${r.service_name}`),
    el("div", {}, r.description),
    el("div", {}, `${t("reported")}: ${fmtTime(r.requested_datetime, true)}`),
    el("div", { class: "dim" }, [r.agency_responsible, r.status_notes].filter(Boolean).join(" · ")));
}

export function incidentPanel(i) {
  return el("div", {},
    el("h3", {}, `#${i.id} ${i.title}`),
    el("div", {}, `${t("status")}: ${t("statuses")[i.status] || i.status}`),
    el("div", {}, `${t("deadline")}: ${fmtTime(i.deadline_at, true)}`),
    el("div", { class: "dim" }, [nameOf("category", i.category), nameOf("agency", i.agency_id),
      nameOf("city", i.city), nameOf("ward", i.ward)].filter(Boolean).join(" · ")));
}

// The next predicted high water of a flood station (from GET /api/v1/flood/stations/{id}/tide),
// under its chart: "Đỉnh triều kế tiếp 17:40, 0,78 m — trên BĐ III 0,03 m" (decimal comma in
// Vietnamese), against the highest alarm level it reaches, or BĐ I when it stays below.
const HW_CLOCK = new Intl.DateTimeFormat("en-GB", { timeZone: "Asia/Ho_Chi_Minh", hour: "2-digit", minute: "2-digit", hour12: false });
export function nextHighWater(station, hw) {
  if (!hw) return el("div", { class: "next-hw" }, "");
  const vi = getLang() === "vi";
  const num = (v) => (vi ? v.toFixed(2).replace(".", ",") : v.toFixed(2));
  const levels = ["bd1", "bd2", "bd3"].map((k, i) => [i + 1, station.attributes?.[k]]).filter(([, v]) => v != null);
  const reached = levels.filter(([, v]) => hw.level_m >= v).at(-1);
  const [n, ref] = reached || levels[0] || [null, null];
  let rel = "";
  if (ref != null) {
    const name = `BĐ ${"I".repeat(n)}`, d = Math.abs(hw.level_m - ref);
    rel = vi ? ` — ${reached ? "trên" : "dưới"} ${name} ${num(d)} m` : ` — ${num(d)} m ${reached ? "above" : "below"} ${name}`;
  }
  const head = vi ? "Đỉnh triều kế tiếp" : "Next high water";
  return el("div", { class: "next-hw", dataset: { station: station.id } },
    `${head} ${HW_CLOCK.format(new Date(hw.time))}, ${num(hw.level_m)} m${rel}`);
}
