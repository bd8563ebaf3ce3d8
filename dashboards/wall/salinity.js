// The salinity panel: the latest salinity (‰) of each salinity station against its thresholds
// (the station's own attributes from the site file: domestic_ppt for a water plant's intake,
// rice_ppt, emergency_ppt — sources in ioc/site_data/salinity.yaml), and, while a salinity
// alert with a low-water advisory is open on it, when to take water ("lấy nước khi triều
// xuống"). Takes plain data, returns DOM (main.js decides when to redraw).
import { el } from "./dom.js";
import { t, getLang, TZ } from "./i18n.js";

const WORDS = {
  vi: { domestic: "nước sinh hoạt", rice: "lúa", emergency: "cây trồng", ok: "dưới ngưỡng", intake: "Lấy nước" },
  en: { domestic: "domestic water", rice: "rice", emergency: "crops", ok: "below limits", intake: "Take water" },
};

// "13:40 21/03" in the site's time zone (the annotation itself carries +07:00).
const hhmm = (iso) => {
  const d = new Date(iso);
  const part = (o) => new Intl.DateTimeFormat("en-GB", { timeZone: TZ, ...o }).format(d);
  return `${part({ hour: "2-digit", minute: "2-digit", hourCycle: "h23" })} ${part({ day: "2-digit", month: "2-digit" })}`;
};
const num = (v, digits = 2) =>
  new Intl.NumberFormat(getLang() === "vi" ? "vi-VN" : "en-GB", { maximumFractionDigits: digits }).format(v);

// The limits that apply at a station, lowest first: [name, ‰].
export function salinityLimits(attributes) {
  const a = attributes || {};
  const limits = [["rice", a.rice_ppt], ["emergency", a.emergency_ppt]];
  if (a.use === "domestic") limits.unshift(["domestic", a.domestic_ppt]);
  return limits.filter(([, v]) => typeof v === "number");
}

// The highest limit the value reaches, or null.
export function salinityClass(value, attributes) {
  let reached = null;
  for (const [name, limit] of salinityLimits(attributes)) if (value >= limit) reached = name;
  return reached;
}

export function salinityPanel(devices, alerts) {
  const w = WORDS[getLang()] || WORDS.vi;
  const advice = new Map();  // device id -> next low water of an open salinity alert on it
  for (const a of alerts) {
    const low = a.annotations?.next_low_water;
    if (a.labels?.domain === "salinity" && low && a.device_id) advice.set(a.device_id, low);
  }
  const rows = devices.filter((d) => d.kind === "salinity")
    .map((d) => [d, d.latest?.salinity_ppt?.value])
    .sort((x, y) => (y[1] ?? -1) - (x[1] ?? -1));
  if (!rows.length) return el("div", { class: "empty" }, t("noData"));
  return el("table", { class: "ranked salinity" },
    rows.map(([d, v]) => {
      const reached = v == null ? null : salinityClass(v, d.attributes);
      const cls = reached === "emergency" ? "hot" : reached ? "warm" : "";
      const limits = salinityLimits(d.attributes).map(([k, l]) => `${w[k]} ${num(l)}`).join(" · ");
      const low = advice.get(d.id);
      return el("tr", { class: cls },
        el("td", {}, d.name, el("div", { class: "dim small" }, `${limits} ‰`)),
        el("td", { class: "num" }, v == null ? "—" : `${num(v)} ‰`,
          el("div", { class: "dim small" }, reached ? w[reached] : v == null ? "" : w.ok),
          low ? el("div", { class: "small intake" }, `${w.intake} ~${hhmm(low)}`) : ""));
    }));
}
