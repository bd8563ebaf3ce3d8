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

// Rows of "name  value unit" under a header naming both columns; for rain and traffic.
function ranked(items, fmt, header) {
  if (!items.length) return el("div", { class: "empty" }, t("noData"));
  return el("table", { class: "ranked" },
    header && el("tr", {}, el("th", {}, header[0]), el("th", { class: "num" }, header[1])),
    items.map((row) => el("tr", { class: row[2] || "" }, el("td", { class: "name" }, row[0]), el("td", { class: "num" }, fmt(row[1], row)))));
}

// Rows are coloured by the server's verdict — the alerts firing on the device (red: critical,
// amber: another) — never by a threshold of the page's own.
const ROW_CLASS = { alert: "hot", warning: "warm" };

export function rainPanel(devices, stateOf) {
  const rows = devices.filter((d) => d.kind === "rain" && d.latest.rain_rate_mm_h)
    .map((d) => [d.name, d.latest.rain_rate_mm_h.value, ROW_CLASS[stateOf(d)]])
    .sort((a, b) => b[1] - a[1]).slice(0, 6);
  return ranked(rows, (v) => `${fmtNumber(v, 1)} mm/h`, [t("station"), t("rainRate")]);
}

// Congestion = 1 − speed / free-flow speed (the device's free_flow_kmh from the site file);
// a device without one shows its speed only.
export function trafficPanel(devices, stateOf) {
  const rows = devices.filter((d) => d.kind === "traffic" && d.latest.speed_kmh && d.attributes?.free_flow_kmh)
    .map((d) => {
      const c = Math.max(0, 1 - d.latest.speed_kmh.value / d.attributes.free_flow_kmh);
      return [d.attributes?.junction ? nameOf("junction", d.attributes.junction) : d.name, c, ROW_CLASS[stateOf(d)],
              d.latest.speed_kmh.value];
    })
    .sort((a, b) => b[1] - a[1]).slice(0, 6);
  return ranked(rows, (v, row) => `${fmtPercent(v)} · ${fmtNumber(row[3])} km/h`, [t("junction"), t("congestionSpeed")]);
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
      el("th", { class: "num" }, t("faulty")), el("th", { class: "num" }, t("tonightKwh"))),
    [...cabinets.entries()].sort((a, b) => b[1].faulty - a[1].faulty || a[0].localeCompare(b[0])).slice(0, 8)
      .map(([cab, c]) => el("tr", { class: c.faulty ? "warm" : "" }, el("td", { class: "name", title: names.get(cab) }, short(cab)),
        el("td", { class: "num" }, c.on), el("td", { class: "num" }, c.off), el("td", { class: "num" }, c.faulty),
        el("td", { class: "num", title: `${t("lastWeekKwh")}: ${num(kwh.get(cab)?.last_week_kwh)}` }, num(kwh.get(cab)?.tonight_kwh)))));
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
      el("span", { class: "inc-title", title: `#${i.id} ${i.title}` }, i.title,
        el("span", { class: "dim" }, ` · ${nameOf("agency", i.agency_id)}`)),
      el("span", { class: "countdown" }, left == null ? "" : late ? `${t("overdue")} ${fmtDuration(left)}`
        : `${t("left")} ${fmtDuration(left)}`));
  }));
}

// The tiles across the top: what is going on now (alerts, incidents) and the programme's two
// targets. The targets are about citizens' reports (the headline, docs/kpis.md); until one of
// those is due this period the tiles show every case (alerts' and operators' too), labelled
// so, rather than "—" while incidents are being closed. Each rate shows the counts it is made
// of: on time / due (open overdue cases are due and late), satisfied / rated.
export function kpiPanel(k, alerts, incidents) {
  const firing = alerts.filter((a) => a.state === "firing");
  const critical = firing.filter((a) => a.severity === "critical").length;
  const overdue = incidents.filter((i) => i.overdue).length;
  const tile = (cls, label, value, sub) => el("div", { class: `kpi ${cls}` },
    el("div", { class: "kpi-label" }, label), el("div", { class: "kpi-value" }, value), el("div", { class: "dim" }, sub));
  const tiles = [
    tile(critical ? "missed" : "", t("alertsShort"), fmtNumber(firing.length), `${fmtNumber(critical)} ${t("critical").toLowerCase()}`),
    tile(overdue ? "missed" : "", t("incidentsShort"), fmtNumber(incidents.length), `${fmtNumber(overdue)} ${t("overdue").toLowerCase()}`),
  ];
  if (k) {
    const head = k.headline && k.headline.due > 0 ? k.headline : k.total;
    const scope = head === k.headline ? t("ofReports") : t("ofAllCases");
    const rate = (label, v, target, n, of) => tile(v == null ? "" : v >= target ? "met" : "missed", label,
      v == null ? "—" : fmtPercent(v), `${fmtNumber(n)}/${fmtNumber(of)} ${scope} · ${t("target")} ${fmtPercent(target)}`);
    tiles.push(rate(t("onTime"), head.on_time_rate, k.targets.on_time, head.on_time, head.due),
               rate(t("satisfaction"), head.satisfaction, k.targets.satisfaction, head.satisfied, head.rated));
  }
  return el("div", { class: "kpis" }, tiles);
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
  // the API gives millimetres (0.425); toFixed alone would round the binary 0.42499… down, and
  // the prediction itself (0.4253) reads 0,43
  const num = (v) => { const c = (Math.round(v * 100) / 100).toFixed(2); return vi ? c.replace(".", ",") : c; };
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
