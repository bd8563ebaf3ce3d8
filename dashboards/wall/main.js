// Wiring: sign-in, state from REST + the live feed, rendering batched per animation frame.
import { api, allDevices, readToken, ApiError } from "./api.js";
import { Feed } from "./feed.js";
import { WallMap } from "./map.js";
import { GlMap } from "./glmap.js";
import { sortedAlerts, renderAlerts, silenceBody, beep } from "./alerts.js";
import * as panels from "./panels.js";
import { salinityPanel } from "./salinity.js";
import { stationTimeline, PAST_H, AHEAD_H } from "./timeline.js";
import { el } from "./dom.js";
import { t, getLang, setLang, fmtTime, fmtClock, fmtNumber, setNames } from "./i18n.js";

const $ = (id) => document.getElementById(id);
const state = {
  token: readToken(), me: null, feed: null, site: null,
  devices: new Map(),     // id -> {id, name, kind, city, ward, lat, lon, attributes, online, latest}
  alerts: new Map(),      // id -> alert (pending/firing)
  alertSeq: new Map(),    // id -> seq of the last frame applied (a REST reload must not undo it)
  incidents: [], incidentsAt: 0, kpis: null, water: new Map(), nextHw: new Map(),
  tide: new Map(), rain: new Map(), stationAlerts: new Map(),  // the timeline's, per flood station
  filter: { city: "", ward: "", domain: "" },
  muted: localStorage.getItem("ioc.muted") === "1",
  seenCritical: new Set(), detail: null, lastUpdate: null,
};
let map = null;
// The map: MapLibre GL, or the 2D-canvas fallback (IOC_WALL_MAP; /wall/?map=canvas overrides it
// for one page; docs/wall.md has both measured). Without WebGL the page falls back by itself.
const MAP_CHOICE = new URLSearchParams(location.search).get("map");
function makeMap(renderer) {
  const box = $("map");
  if (renderer !== "canvas") {
    try {
      return new GlMap(box, { onPick: pick });
    } catch (e) {
      showNotice(`MapLibre: ${e.message || e}`);
    }
  }
  box.replaceChildren(document.createElement("canvas"));
  return new WallMap(box.firstChild, { onPick: pick });
}

// ---- device state: worst firing alert on it, else offline, else normal ------------------------
function stateOf(d) {
  let worst = null;
  for (const a of byDevice.get(d.id) || []) {
    if (a.severity === "critical") return "alert";
    worst = "warning";
  }
  if (worst) return worst;
  return d.online === false ? "offline" : "normal";
}
let byDevice = new Map();
function indexAlerts() {
  byDevice = new Map();
  for (const a of state.alerts.values()) {
    if (a.state !== "firing" || !a.device_id) continue;
    (byDevice.get(a.device_id) || byDevice.set(a.device_id, []).get(a.device_id)).push(a);
  }
}
function mapDevice(d) { if (map) map.setDevice(d.id, d.lon, d.lat, stateOf(d)); }

// ---- frames --------------------------------------------------------------------------------
export function applyFrame(f) {
  const data = f.data || {};
  if (f.type === "alert" && data.id != null) {
    state.alertSeq.set(data.id, f.seq);
    const before = state.alerts.get(data.id);
    if (data.state === "pending" || data.state === "firing") state.alerts.set(data.id, data);
    else state.alerts.delete(data.id);
    indexAlerts();
    for (const id of [data.device_id, before?.device_id]) if (id && state.devices.has(id)) mapDevice(state.devices.get(id));
    if (data.state === "firing" && data.severity === "critical" && !state.seenCritical.has(data.id)) {
      state.seenCritical.add(data.id);
      flash();
    }
    alertsDirty = true;
  } else if (f.type === "device" && data.device_id) {
    const d = state.devices.get(data.device_id);
    if (d) { d.online = data.online; mapDevice(d); }
  } else if (f.type === "readings" && data.devices) {
    for (const [id, dev] of Object.entries(data.devices)) {
      const d = state.devices.get(id);
      if (!d) continue;
      for (const [m, p] of Object.entries(dev.metrics || {})) {
        const old = d.latest[m];
        if (!old || new Date(p.time) >= new Date(old.time)) d.latest[m] = p;
        if (m === "water_level_m") pushWater(id, p);
      }
      if (d.online == null) { d.online = true; mapDevice(d); }
    }
  } else if (f.type === "incident") {
    const i = state.incidents.findIndex((x) => x.id === data.id);
    if (data.open === false) { if (i >= 0) state.incidents.splice(i, 1); }
    else if (i >= 0) state.incidents[i] = data; else state.incidents.push(data);
    state.incidentsAt = Date.now();
    updateIncidentLayer();
    alertsDirty = true;
  } else if (f.type === "kpi") {
    loadKpis();
  }
  state.lastUpdate = f.time || new Date().toISOString();
  render();
}
function pushWater(id, p) {
  const pts = state.water.get(id);
  if (!pts) return;
  pts.push({ time: p.time, value: p.value });
  const cutoff = Date.parse(p.time) - PAST_H * 3600 * 1000;
  while (pts.length && new Date(pts[0].time).getTime() < cutoff) pts.shift();
}

// The flash is an overlay whose opacity animates (compositor only), not a repaint of the page.
function flash() {
  $("flash").getAnimations().forEach((a) => a.cancel());
  $("flash").animate([{ opacity: 0 }, { opacity: 1 }, { opacity: 0 }], { duration: 600, iterations: 3 });
  if (!state.muted) beep();
}

// ---- REST loads ----------------------------------------------------------------------------
async function reloadAlerts() {
  const from = state.feed?.lastSeq ?? 0; // frames after this seq are newer than REST's answer
  const [firing, pending] = await Promise.all(["firing", "pending"].map((s) => api(state.token, `/api/v1/alerts?state=${s}&limit=1000`)));
  const fresh = new Map([...pending, ...firing].map((a) => [a.id, a]));
  for (const id of [...state.alerts.keys()]) if (!fresh.has(id) && (state.alertSeq.get(id) ?? 0) <= from) state.alerts.delete(id);
  for (const [id, a] of fresh) if ((state.alertSeq.get(id) ?? 0) <= from) state.alerts.set(id, a);
  for (const a of state.alerts.values()) if (a.severity === "critical") state.seenCritical.add(a.id);
  indexAlerts();
  for (const d of state.devices.values()) mapDevice(d);
  render(true);
}
async function loadIncidents() {
  const path = state.me.agency ? "/api/v1/agency/incidents" : "/api/v1/incidents?open=true";
  state.incidents = (await api(state.token, path)).filter((i) => i.open !== false);
  state.incidentsAt = Date.now();
  updateIncidentLayer();
  renderAll();
}
// Open citizen reports (Open311's public list: no personal data), their own map layer.
async function loadReports() {
  try {
    const list = await api(state.token, "/open311/v2/requests.json?status=open");
    state.reports = list.filter((r) => r.lat != null && r.long != null);
    if (map) map.setReports(state.reports.map((r) => ({ id: r.service_request_id, lat: r.lat, lon: r.long })));
    renderAll();
  } catch (e) { console.warn("reports", e); }
}
// Cabinets' energy tonight against the same hours a week ago (computed by the server).
async function loadEnergy() {
  try { state.energy = await api(state.token, "/api/v1/lighting/energy"); renderAll(); } catch (e) { console.warn("energy", e); }
}
async function loadKpis() {
  try { state.kpis = await api(state.token, "/api/v1/kpis"); renderAll(); } catch (e) { console.warn("kpis", e); }
}
// The timeline's data: the last PAST_H hours of each flood station (10-minute means), its
// predicted tide to AHEAD_H hours on, the rain at a gauge of its city, and its alerts. Reloaded
// every five minutes (tide and alert history are not feed frames); water levels arrive live.
async function loadWater() {
  // at most four: those with an alert firing, then those reporting, first
  const rank = (d) => 2 * Math.min(1, (byDevice.get(d.id) || []).length) + (d.latest.water_level_m ? 1 : 0);
  const stations = [...state.devices.values()].filter((d) => d.kind === "flood")
    .sort((a, b) => rank(b) - rank(a) || a.id.localeCompare(b.id)).slice(0, 4);
  const end = timelineEnd(), from = new Date(end - PAST_H * 3600e3), to = new Date(end), ahead = new Date(end + AHEAD_H * 3600e3);
  const q = (id, metric) => `/api/v1/devices/${encodeURIComponent(id)}/readings?metric=${metric}&from=${from.toISOString()}&to=${to.toISOString()}&bucket=10m`;
  let failed = false;
  const retry = (fallback) => (e) => { failed = true; console.warn("timeline", e); return fallback; };
  await Promise.all(stations.map(async (d) => {
    const gauge = [...state.devices.values()].find((g) => g.kind === "rain" && g.city === d.city);
    const [pts, tide, rain, alerts] = await Promise.all([
      api(state.token, q(d.id, "water_level_m")).then((r) => r.points.map((p) => ({ time: p.time, value: p.value }))).catch(retry([])),
      api(state.token, `/api/v1/flood/stations/${encodeURIComponent(d.id)}/tide?from=${from.toISOString()}&to=${ahead.toISOString()}`).catch(() => null),
      gauge ? api(state.token, q(gauge.id, "rain_rate_mm_h")).then((r) => r.points).catch(retry([])) : [],
      api(state.token, `/api/v1/alerts?device_id=${encodeURIComponent(d.id)}&limit=100`).catch(retry([])),
    ]);
    state.water.set(d.id, pts);
    state.tide.set(d.id, tide);
    state.rain.set(d.id, rain);
    state.stationAlerts.set(d.id, alerts);
    // asked from "now" itself: the high waters of a window are found by scanning it, so the
    // same window gives the same figure as every other client's
    await loadNextHighWater(d.id, to);
  }));
  renderAll();
  // a busy server refused a request: try again soon rather than at the next five-minute reload
  if (failed && !waterRetry) waterRetry = setTimeout(() => { waterRetry = null; loadWater(); }, 15000);
}
let waterRetry = null;
// The next predicted high water of a station (none when the site has no tide data for it).
async function loadNextHighWater(id, now) {
  try {
    const until = new Date(now.getTime() + 30 * 3600 * 1000);
    const r = await api(state.token, `/api/v1/flood/stations/${encodeURIComponent(id)}/tide?from=${now.toISOString()}&to=${until.toISOString()}`);
    state.nextHw.set(id, r.extremes.find((e) => e.kind === "high") || null);
  } catch (e) { state.nextHw.set(id, null); }
}
// "Now" as the readings tell it: the newest water level seen (a replayed evening keeps its own
// clock), the wall clock when there is none.
function timelineEnd() {
  let newest = 0;
  for (const d of state.devices.values()) {
    const p = d.kind === "flood" && d.latest.water_level_m;
    if (p) newest = Math.max(newest, Date.parse(p.time));
  }
  return newest || Date.now();
}
function updateIncidentLayer() {
  if (map) map.setIncidents(state.incidents.filter((i) => i.lat != null && i.lon != null)
    .map((i) => ({ id: i.id, lat: i.lat, lon: i.lon, overdue: i.overdue })));
}

// ---- actions (operators and admins only; the server checks again) -----------------------------
const actions = {
  async ack(a) { await act(() => api(state.token, `/api/v1/alerts/${a.id}/ack`, { comment: "wall screen" })); },
  async silence(a) { await act(() => api(state.token, "/api/v1/silences", silenceBody(a))); },
  async incident(a) {
    // The category is the server's: routing.yaml maps the alert's domain to it.
    const ann = a.annotations || {};
    await act(() => api(state.token, "/api/v1/incidents", {
      severity: a.severity === "critical" ? "critical" : "warning",
      title: (ann.summary_vi || a.rule).slice(0, 300), alert_id: a.id, city: a.city || undefined, ward: a.ward || undefined,
    }));
    await loadIncidents();
  },
};
// REST answers are applied at once; the feed's frame for the same change arrives soon after.
async function act(call) {
  try {
    const out = await call();
    if (out && out.fingerprint) { state.alerts.set(out.id, out); render(true); }
  } catch (e) { showNotice(String(e.message || e)); }
}
function showNotice(text) { $("notice").textContent = text; setTimeout(() => { $("notice").textContent = ""; }, 8000); }

// ---- rendering -------------------------------------------------------------------------------
// Two speeds: the alert list and the banner at most once per animation frame (only when changed),
// everything else (panels over 10,000 devices, countdowns) once a second, so 50 updates/s cost
// one cheap pass per frame instead of a full rebuild per frame.
let queued = false, alertsDirty = true;
function render(alertsChanged = false) {
  alertsDirty ||= alertsChanged;
  if (queued) return;
  queued = true;
  requestAnimationFrame(() => {
    queued = false;
    renderStatus();
    if (alertsDirty && state.me && !state.me.agency) renderAlertList();
  });
}
function renderAlertList() {
  alertsDirty = false;
  const rows = sortedAlerts(state.alerts, state.filter);
  setText($("alertCount"), `(${rows.length})`);
  const withIncident = new Set(state.incidents.map((i) => i.source_alert_id).filter((id) => id != null));
  renderAlerts($("alertList"), rows, state.me.can_act ? actions : null, withIncident);
}
// tick: the once-a-second pass (clock, countdowns); the alert list has nothing that ages, so it
// is rebuilt then only when a frame changed it (with 80 firing alerts a rebuild is most of a tick).
function renderAll(tick = false) {
  document.documentElement.lang = getLang();
  document.title = t("title");
  for (const e of document.querySelectorAll("[data-t]")) setText(e, t(e.dataset.t));
  setText($("lang"), getLang() === "vi" ? "English" : "Tiếng Việt");
  setText($("mute"), state.muted ? t("unmute") : t("mute"));
  renderStatus();
  if (!state.me) return;
  setText($("role"), `${state.me.name} · ${t("roles")[state.me.role] || (state.me.agency ? t("agency") : state.me.role)}`);
  if (state.me.agency) {
    $("agencyList").replaceChildren(panels.incidentsPanel(state.incidents, state.incidentsAt));
    return;
  }
  if (!tick || alertsDirty) renderAlertList();
  const devices = [...state.devices.values()];
  // Stations with a firing alert first, then those with data: the timeline shows the evening.
  const end = timelineEnd();
  const firingOn = (id) => (byDevice.get(id) || []).length;
  const water = [...state.water.entries()].sort((a, b) => firingOn(b[0]) - firingOn(a[0]) || (b[1].length > 0) - (a[1].length > 0));
  swap("water", ...water.flatMap(([id, pts]) => {
    const st = withLevels(state.devices.get(id));
    return [stationTimeline({ station: st, points: pts, tide: state.tide.get(id), rain: state.rain.get(id) || [],
                              alerts: state.stationAlerts.get(id) || [], end }),
            panels.nextHighWater(st, state.nextHw.get(id))];
  }));
  updateGauges();
  swap("rain", panels.rainPanel(devices, stateOf));
  swap("salinity", salinityPanel(devices, [...state.alerts.values()]));
  swap("lighting", panels.lightingPanel(devices, stateOf, state.energy));
  swap("traffic", panels.trafficPanel(devices, stateOf));
  swap("incidents", panels.incidentsPanel(state.incidents, state.incidentsAt, (id) => pick("incident", id)));
  swap("kpis", panels.kpiPanel(state.kpis, [...state.alerts.values()], state.incidents));
  renderDetail();
}
// The flood gauges on the map: each station's latest level against its BĐ lines.
let gaugesKey = "";
function updateGauges() {
  const list = [];
  for (const d of state.devices.values()) {
    const p = d.kind === "flood" && d.latest.water_level_m;
    const a = p && withLevels(d).attributes;
    if (p && a.bd1 != null) list.push({ lon: d.lon, lat: d.lat, level: p.value, bd: [a.bd1, a.bd2, a.bd3], label: `${fmtNumber(p.value, 2)} m` });
  }
  const key = JSON.stringify(list);
  if (map && key !== gaugesKey) { gaugesKey = key; map.setGauges(list); }
}
// BĐ I/II/III as the server has them (GET /api/v1/site: the levels the rules compare with); the
// page holds no threshold of its own.
function withLevels(d) {
  const lv = state.site.stations.find((st) => st.station === d.attributes?.station);
  return lv ? { ...d, attributes: { ...d.attributes, bd1: lv.bd1, bd2: lv.bd2, bd3: lv.bd3 } } : d;
}
// Unchanged content is left alone: replacing it anyway would repaint the panel every second,
// which on a GPU-less wall PC is most of the page's work.
function swap(id, ...nodes) {
  const box = $(id), html = nodes.map((n) => n.outerHTML).join("");
  if (box.dataset.html === html) return;
  box.dataset.html = html;
  box.replaceChildren(...nodes);
}
function setText(e, text) { if (e.textContent !== text) e.textContent = text; }
function renderStatus() {
  const feed = state.feed;
  let text = "";
  if (feed?.authFailed) text = t("badToken");
  else if (feed && !feed.open) text = t("disconnected");
  else if (feed?.staleFor()) text = t("stale", feed.staleFor());
  setText($("banner"), text);
  if ($("banner").hidden !== !text) $("banner").hidden = !text;
  // Greyed values: nothing on the screen may look live while the feed is not.
  document.body.classList.toggle("stale", Boolean(text) && !state.me?.agency);
  if (map) map.setGrey(Boolean(text));
  setText($("lastUpdate"), fmtTime(state.feed?.lastFrameTime || state.lastUpdate, true));
  setText($("clock"), fmtClock(new Date()));
}
function pick(kind, id) { state.detail = { kind, id }; renderAll(); }
function renderDetail() {
  const box = $("detail");
  if (!state.detail) { box.hidden = true; return; }
  box.hidden = false;
  let body;
  if (state.detail.kind === "device") {
    const d = state.devices.get(state.detail.id);
    body = d ? panels.devicePanel(d, stateOf(d), byDevice.get(d.id) || []) : null;
  } else if (state.detail.kind === "report") {
    const r = (state.reports || []).find((x) => x.service_request_id === state.detail.id);
    body = r ? panels.reportPanel(r) : null;
  } else {
    const i = state.incidents.find((x) => x.id === state.detail.id);
    body = i ? panels.incidentPanel(i) : null;
  }
  swap("detail", ...[el("button", { class: "close", type: "button", onclick: () => { state.detail = null; renderAll(); } }, "×"), body].filter(Boolean));
}
function fillFilters() {
  const opt = (v, label) => el("option", { value: v }, label);
  $("fCity").replaceChildren(opt("", `${t("city")}: ${t("all")}`), ...state.site.cities.map((c) => opt(c.id, c.name)));
  $("fWard").replaceChildren(opt("", `${t("ward")}: ${t("all")}`), ...state.site.wards.features
    .filter((w) => !state.filter.city || w.properties.city === state.filter.city).map((w) => opt(w.id, w.properties.name)));
  $("fDomain").replaceChildren(opt("", `${t("domain")}: ${t("all")}`), ...Object.entries(t("domains")).map(([k, v]) => opt(k, v)));
  for (const [id, k] of [["fCity", "city"], ["fWard", "ward"], ["fDomain", "domain"]]) $(id).value = state.filter[k];
}

// ---- start ---------------------------------------------------------------------------------
async function start() {
  $("signin").hidden = true;
  try {
    state.me = await api(state.token, "/api/v1/whoami");
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) { signOut(t("badToken")); return; }
    throw e;
  }
  document.body.classList.toggle("can-act", state.me.can_act);
  if (state.me.agency) {
    // Agencies may not watch /ws: their own incidents, polled.
    document.body.classList.add("agency");
    await loadIncidents();
    setInterval(() => loadIncidents().then(() => { state.lastUpdate = new Date().toISOString(); }), 15000);
    return;
  }
  state.site = await api(state.token, "/api/v1/site");
  const bm = await api(state.token, "/api/v1/site/basemap").catch((e) => { showNotice(String(e.message || e)); return null; });
  map = makeMap(MAP_CHOICE || bm?.renderer);
  map.setSite(state.site);
  if (bm) map.setBasemap(bm);
  fillFilters();
  for (const d of await allDevices(state.token)) {
    // online state and latest values from the server, so a device that is offline shows so
    // from the first frame, not only once the feed says it again
    state.devices.set(d.id, { ...d, online: d.online ?? null, latest: d.latest ?? {} });
  }
  setNames(state.site, state.devices.values());
  for (const d of state.devices.values()) mapDevice(d);
  state.feed = new Feed(state.token, {
    onFrame: applyFrame, onStatus: render,
    onReload: () => reloadAlerts().catch((e) => console.warn("alerts", e)),
  });
  state.feed.connect();
  await Promise.all([loadIncidents(), loadKpis(), loadWater(), loadReports(), loadEnergy()]);
  setInterval(loadEnergy, 300000);
  setInterval(loadWater, 300000);
  setInterval(loadReports, 30000);  // reports are not on the live feed: their incidents are
}
function signOut(message) {
  sessionStorage.removeItem("ioc.token");
  state.feed?.stop();
  $("signin").hidden = false;
  $("signinError").textContent = message || "";
}

$("lang").onclick = () => { setLang(getLang() === "vi" ? "en" : "vi"); if (state.site) fillFilters(); renderAll(); };
$("mute").onclick = () => { state.muted = !state.muted; localStorage.setItem("ioc.muted", state.muted ? "1" : "0"); renderAll(); };
$("signout").onclick = () => { signOut(); location.reload(); };
$("signin").onsubmit = (ev) => {
  ev.preventDefault();
  const tok = $("tokenInput").value.trim();
  if (!tok) return;
  sessionStorage.setItem("ioc.token", tok);
  location.reload(); // one clean start per token
};
for (const [id, k] of [["fCity", "city"], ["fWard", "ward"], ["fDomain", "domain"]]) {
  $(id).onchange = () => { state.filter[k] = $(id).value; if (k === "city") { state.filter.ward = ""; fillFilters(); } renderAll(); };
}
document.addEventListener("keydown", (ev) => {
  if (ev.target.tagName === "INPUT") return;
  if (ev.key === "Escape") { state.detail = null; renderAll(); }
  else if (ev.key === "l") $("lang").click();
  else if (ev.key === "m") $("mute").click();
  else if (ev.key === "0" && map) map.fit();
});
setInterval(() => renderAll(true), 1000); // clock, countdowns and the stale check tick even without frames

// For tests and the benchmark: the state and the frame path, not a public API.
window.wall = { state, applyFrame, renderAll, pick, get map() { return map; } };  // for the tests

renderAll();
if (state.token) start().catch((e) => { console.error(e); showNotice(String(e.message || e)); });
else signOut();
