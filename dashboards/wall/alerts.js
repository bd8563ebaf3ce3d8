// The alert feed: firing alerts by severity then age, filters, and the operator's actions.
import { el } from "./dom.js";
import { t, getLang, fmtTime, fmtDuration, nameOf } from "./i18n.js";

export const SEVERITY_RANK = { critical: 0, warning: 1, info: 2 };

export function sortedAlerts(alerts, filter) {
  return [...alerts.values()]
    .filter((a) => a.state === "firing")
    .filter((a) => !filter.city || a.city === filter.city)
    .filter((a) => !filter.ward || a.ward === filter.ward)
    .filter((a) => !filter.domain || a.labels?.domain === filter.domain)
    .sort((a, b) => (SEVERITY_RANK[a.severity] ?? 3) - (SEVERITY_RANK[b.severity] ?? 3)
      || String(a.started_at || a.active_at).localeCompare(String(b.started_at || b.active_at)));
}

// actions: {ack(a), silence(a), incident(a)} or null for those who may only watch.
// withIncident: ids of alerts that already have an open incident (often opened automatically
// for critical alerts), which get no second one.
// At most MAX_ROWS rows are built (a wall shows a dozen; the rest are counted under them): with
// 80 alerts firing, rebuilding every row on each alert frame was the page's longest task under
// load (benchmarks/bench_wall.py).
export const MAX_ROWS = 25;
export function renderAlerts(list, rows, actions, withIncident = new Set()) {
  if (!rows.length) { list.replaceChildren(el("li", { class: "empty" }, t("noAlerts"))); return; }
  const more = rows.length - MAX_ROWS;
  list.replaceChildren(...rows.slice(0, MAX_ROWS).map((a) => {
    const ann = a.annotations || {};
    const summary = (getLang() === "en" ? ann.summary_en || ann.summary_vi : ann.summary_vi || ann.summary_en) || a.rule;
    const notes = [a.acknowledged_at && `${t("acked")}${a.acknowledged_by ? ": " + a.acknowledged_by : ""}`,
                   a.suppressed_by && t("silenced")].filter(Boolean);
    const { place, what } = splitSummary(summary, a);
    const since = a.started_at || a.active_at;
    const where = [nameOf("ward", a.ward), nameOf("city", a.city)].filter(Boolean).join(", ");
    // Two lines read from across the room: who and where (severity, risk, place, since when),
    // then what and how much. Details (ward, acknowledgement) in a smaller trailer.
    return el("li", { class: `alert sev-${a.severity}${a.acknowledged_at ? " acked" : ""}`, dataset: { id: a.id } },
      el("div", { class: "alert-head" },
        el("span", { class: `pill sev-${a.severity}` }, t(a.severity)),
        el("span", { class: "alert-place", title: where }, place),
        el("span", { class: "time", title: `${t("since")} ${fmtTime(since, true)} (${fmtDuration(Date.now() - new Date(since).getTime())})` }, sinceText(since))),
      el("div", { class: "alert-what", title: summary }, riskPill(a.risk), what,
        el("span", { class: "dim" }, [" ", where, a.labels?.domain && t("domains")[a.labels.domain], ...notes].filter(Boolean).join(" · ").replace(/^ · /, " "))),
      actions && el("div", { class: "actions" },
        !a.acknowledged_at && el("button", { class: "act-ack", type: "button", onclick: () => actions.ack(a) }, t("ack")),
        !a.suppressed_by?.silence && el("button", { class: "act-silence", type: "button", onclick: () => actions.silence(a) }, t("silence")),
        !withIncident.has(a.id) && el("button", { class: "act-incident", type: "button", onclick: () => actions.incident(a) }, t("openIncident"))));
  }), ...(more > 0 ? [el("li", { class: "empty more" }, t("moreAlerts", more))] : []));
}

// The server's summary reads "Place (river): what and how much"; the place goes on the first
// line, the rest on the second. Without that shape the device's (or ward's) name is the place.
export function splitSummary(summary, a) {
  const i = summary.indexOf(": ");
  if (i > 0 && i < 120) {
    // "Trạm thủy văn Phụng Hiệp (sông Cái Côn, Ngã Bảy)": the name on line one, the river after
    const head = summary.slice(0, i), p = head.indexOf(" (");
    const what = summary.slice(i + 2);
    return p > 0 ? { place: head.slice(0, p), what: `${what} — ${head.slice(p + 2).replace(/\)$/, "")}` } : { place: head, what };
  }
  return { place: nameOf("device", a.device_id) || nameOf("ward", a.ward) || nameOf("city", a.city) || t("alert"), what: summary };
}

// Since when: the start time, hh:mm, with the day when it is not today (how long ago in its
// tooltip: a minute counter on every row would be one more thing moving on the wall).
const HHMM = new Intl.DateTimeFormat("en-GB", { timeZone: "Asia/Ho_Chi_Minh", hour: "2-digit", minute: "2-digit", hour12: false });
const DAY = new Intl.DateTimeFormat("en-GB", { timeZone: "Asia/Ho_Chi_Minh", day: "2-digit", month: "2-digit" });
export function sinceText(since, now = Date.now()) {
  const d = new Date(since);
  const day = DAY.format(d) === DAY.format(new Date(now)) ? "" : ` ${DAY.format(d)}`;
  return `${HHMM.format(d)}${day}`;
}

// The disaster risk level of QĐ 18/2021/QĐ-TTg (flood, rain, salinity alerts) in its colour;
// names and colour come with the alert (GET /api/v1/alerts "risk"), the text is the level.
export function riskPill(risk) {
  if (!risk) return null;
  const en = getLang() === "en";
  return el("span", { class: "pill risk", style: `background:${risk.colour};color:#000;margin-right:0.4rem`,
                      title: en ? `${risk.name_en} (${risk.colour_en})` : `${risk.name_vi} (${risk.colour_vi})`,
                      dataset: { risk: risk.level } },
    en ? `Risk ${risk.level}` : `Rủi ro cấp ${risk.level}`);
}

// Silence the alert's own labels (its rule on its device) for two hours.
export function silenceBody(a, now = new Date()) {
  const matchers = [{ name: "alertname", op: "=", value: a.labels?.alertname || a.rule }];
  if (a.device_id) matchers.push({ name: "device_id", op: "=", value: a.device_id });
  return { matchers, starts_at: now.toISOString(),
           ends_at: new Date(now.getTime() + 2 * 3600 * 1000).toISOString(),
           comment: `wall screen: ${a.rule}${a.device_id ? " @ " + a.device_id : ""}` };
}

// A short two-tone beep for new critical alerts (WebAudio: no sound file to ship).
let audio = null; // one context for the whole shift: browsers cap how many may exist
export function beep() {
  try {
    const ctx = audio ||= new AudioContext();
    for (const [i, f] of [880, 660].entries()) {
      const o = ctx.createOscillator(), g = ctx.createGain();
      o.frequency.value = f; g.gain.value = 0.2;
      o.connect(g).connect(ctx.destination);
      o.start(ctx.currentTime + i * 0.25); o.stop(ctx.currentTime + i * 0.25 + 0.2);
    }
  } catch { /* autoplay refused before the first click: the flash still shows */ }
}
