// The map in MapLibre GL (vendored: vendor/SOURCE.md): the basemap (the city's GeoJSON or
// PMTiles file, the shipped base layer), ward outlines, devices coloured by state and clustered,
// incidents, citizens' reports and the flood gauges' level against BĐ. Same interface as the
// canvas fallback (map.js), so main.js drives either; which one: IOC_WALL_MAP or /wall/?map=…
//
// The style is built here and names no glyphs or sprites (nothing may be fetched from outside
// the IOC, and no glyph set ships with the package): labels are HTML markers — a few dozen names
// (rivers, canals, roads, towns, wards, gauge levels, cluster counts) that the browser's own
// fonts set with Vietnamese diacritics — and the incident/report symbols are images drawn here.
import * as maplibregl from "./vendor/maplibre-gl.mjs";
import { STATE_COLOURS } from "./map.js";

const RANK = { normal: 0, offline: 1, warning: 2, alert: 3 };
const DEVICE_MS = 1000;  // the least time between two device updates sent to the map's worker
const MAX_COUNTS = 400;  // cluster-count labels kept at most (HTML markers are DOM nodes)
const COLOURS = { bg: "#121922", water: "#13324a", block: "#1a2430", river: "#2f7fc1", road: "#c9a25a" };
const byRank = (rank) => ["match", rank, 3, STATE_COLOURS.alert, 2, STATE_COLOURS.warning,
  1, STATE_COLOURS.offline, STATE_COLOURS.normal];
const empty = () => ({ type: "FeatureCollection", features: [] });
// A city basemap's features by their `kind` (docs/wall.md): areas water or blocks, lines water or
// roads; single and multi geometries alike.
const AREA_COLOUR = ["match", ["get", "kind"], "water", COLOURS.water, COLOURS.block];
const LINE_COLOUR = ["match", ["get", "kind"], ["water", "river", "canal"], COLOURS.river, "road", COLOURS.road, "#4a5a6e"];
const isA = (...types) => ["in", ["geometry-type"], ["literal", types]];
const AREAS = isA("Polygon", "MultiPolygon"), LINES = isA("LineString", "MultiLineString"), POINTS = isA("Point", "MultiPoint");

// Sizes in CSS pixels at 1920 px wide, scaled with the page's rem (1/96 of the viewport width:
// wall.css) so a 4K wall draws lines, clusters and symbols as large as its text. Device markers
// keep their size: 10,000 of them twice as wide is four times the fill, shaded on the CPU in
// software WebGL — at 4K zoomed in, p95 frame 300–467 ms scaled, 33 ms not (docs/benchmarks.md).
const rem = () => parseFloat(getComputedStyle(document.documentElement).fontSize) || 20;
const SIZES = (k) => [
  ["wards-line", "paint", "line-width", 1 * k],
  ["city-line", "paint", "line-width", 1.5 * k],
  ["base-line", "paint", "line-width", ["match", ["get", "kind"], "river", 4 * k, 2.5 * k]],
  ["towns", "paint", "circle-radius", 5 * k],
  ["clusters", "paint", "circle-radius", ["*", k, ["min", 26, ["+", 10, ["*", 3, ["log2", ["get", "point_count"]]]]]]],
  ["devices", "paint", "circle-radius", ["interpolate", ["linear"], ["zoom"], 10, 4, 16, 7]],
  ["devices", "paint", "circle-stroke-width", k],
  ["reports", "layout", "icon-size", k],
  ["incidents", "layout", "icon-size", k],
];

let pmtilesProtocol = null;  // one pmtiles:// handler for the page (vendor/pmtiles.js, global)

export class GlMap {
  constructor(container, { onPick }) {
    this.container = container;
    this.onPick = onPick;
    this.devices = new Map();  // id -> {lon, lat, state, fid}
    this.incidents = []; this.reports = []; this.gauges = []; this.basemap = null;
    this.grey = false;
    this.pending = new Map();  // fid -> rank, sent to the worker at most every DEVICE_MS
    this.labels = []; this.gaugeMarkers = []; this.countMarkers = new Map();
    this.k = rem() / 20;
    this.gl = new maplibregl.Map({
      container, style: this._style(this.k), attributionControl: false, dragRotate: false,
      pitchWithRotate: false, touchPitch: false, renderWorldCopies: false, fadeDuration: 0,
      maxPitch: 0, center: [105.6, 9.8], zoom: 9,
    });
    this.gl.touchZoomRotate.disableRotation();
    this.loaded = new Promise((resolve) => this.gl.on("load", resolve));
    this.loaded.then(() => this._bind());
    this.gl.on("error", (e) => console.warn("map:", e.error?.message || e));
  }

  _style(k) {
    const dev = { type: "geojson", data: empty(), cluster: true, clusterRadius: 40, clusterMaxZoom: 12,
      clusterProperties: { rank: ["max", ["get", "rank"]] } };
    const style = {
      version: 8,
      sources: { wards: { type: "geojson", data: empty() }, base: { type: "geojson", data: empty() },
        city: { type: "geojson", data: empty() }, devices: dev,
        incidents: { type: "geojson", data: empty() }, reports: { type: "geojson", data: empty() } },
      layers: [
        { id: "bg", type: "background", paint: { "background-color": COLOURS.bg } },
        { id: "city-area", type: "fill", source: "city", filter: AREAS, paint: { "fill-color": AREA_COLOUR } },
        { id: "wards-fill", type: "fill", source: "wards",
          paint: { "fill-color": ["match", ["get", "city"], "nga-bay", "rgba(40,58,80,0.45)", "rgba(36,52,72,0.45)"] } },
        { id: "wards-line", type: "line", source: "wards", paint: { "line-color": "#3a4d66", "line-dasharray": [4, 3] } },
        { id: "city-line", type: "line", source: "city", filter: LINES, paint: { "line-color": LINE_COLOUR } },
        { id: "base-line", type: "line", source: "base", filter: LINES,
          layout: { "line-cap": "round", "line-join": "round" },
          paint: { "line-color": ["match", ["get", "kind"], "road", COLOURS.road, COLOURS.river] } },
        { id: "towns", type: "circle", source: "base", filter: ["all", POINTS, ["==", ["get", "kind"], "town"]],
          paint: { "circle-color": "#e6edf3" } },
        { id: "clusters", type: "circle", source: "devices", filter: ["has", "point_count"],
          paint: { "circle-color": byRank(["get", "rank"]), "circle-opacity": 0.9 } },
        { id: "devices", type: "circle", source: "devices", filter: ["!", ["has", "point_count"]],
          paint: { "circle-color": byRank(["get", "rank"]), "circle-stroke-color": "#0b0f14" },
          layout: { "circle-sort-key": ["get", "rank"] } },
        { id: "reports", type: "symbol", source: "reports", layout: { "icon-image": "report", "icon-allow-overlap": true } },
        { id: "incidents", type: "symbol", source: "incidents",
          layout: { "icon-image": ["case", ["get", "overdue"], "incident-overdue", "incident"], "icon-allow-overlap": true } },
      ],
    };
    for (const [id, kind, prop, value] of SIZES(k)) {
      const layer = style.layers.find((l) => l.id === id);
      (layer[kind] ||= {})[prop] = value;
    }
    return style;
  }
  _rescale() {
    const k = rem() / 20;
    if (k === this.k) return;
    this.k = k;
    for (const [id, kind, prop, value] of SIZES(k)) {
      if (kind === "paint") this.gl.setPaintProperty(id, prop, value); else this.gl.setLayoutProperty(id, prop, value);
    }
    for (const m of [...this.labels, ...this.gaugeMarkers]) m.setOffset(m.baseOffset.map((v) => v * k));
  }

  async setSite(site) {
    this.site = site;
    await this.loaded;
    for (const [name, draw] of [["report", diamond("#ffd166")], ["incident", triangle("#c58bff")], ["incident-overdue", triangle("#ff5d5d")]]) {
      if (!this.gl.hasImage(name)) this.gl.addImage(name, draw, { pixelRatio: 2 });
    }
    this.gl.getSource("wards").setData(site.wards);
    const pts = site.wards.features.flatMap((f) => f.geometry.coordinates[0]);
    this.bounds = [[Math.min(...pts.map((p) => p[0])), Math.min(...pts.map((p) => p[1]))],
                   [Math.max(...pts.map((p) => p[0])), Math.max(...pts.map((p) => p[1]))]];
    this.fit();
    for (const f of site.wards.features) {
      const ring = f.geometry.coordinates[0], n = ring.length;
      const at = [ring.reduce((a, p) => a + p[0], 0) / n, ring.reduce((a, p) => a + p[1], 0) / n];
      this._label("ward", f.properties.name, at, { offset: [0, 16] });
    }
  }
  // Zoom by factor about a point of the map's box (the keyboard and the benchmark use it).
  zoomAt(px, py, factor) {
    this.fitted = false;
    this.gl.zoomTo(this.gl.getZoom() + Math.log2(factor), { around: this.gl.unproject([px, py]), duration: 0 });
  }
  // Both cities in view; kept so when the map's box changes size (a 4K wall, a resized window)
  // until someone pans or zooms.
  fit() {
    if (!this.bounds) return;
    this._rescale();
    this.gl.resize();
    this.gl.fitBounds(this.bounds, { padding: 20, animate: false });
    this.fitted = true;
  }

  // The basemap (GET /api/v1/site/basemap): the city's file under the shipped base layer.
  async setBasemap(bm) {
    this.basemap = bm;
    await this.loaded;
    if (bm.city) this.gl.getSource("city").setData(bm.city);
    if (bm.city_tiles) this._addTiles(bm.city_tiles);
    this.gl.getSource("base").setData(bm.base);
    for (const f of bm.base.features) {
      const p = f.properties || {}, g = f.geometry;
      if (!p.name || p.label === false) continue;
      if (g.type === "Point" && p.kind === "town") this._label("town", p.name, g.coordinates, { anchor: "bottom-right", offset: [-6, -6] });
      else if (g.type === "LineString") this._lineLabel(p, g.coordinates);
    }
  }
  // A PMTiles file, read by range requests with the page's token: vector tiles drawn by geometry
  // (areas, lines, points) in every layer its metadata lists, raster tiles as they are.
  _addTiles(t) {
    if (!pmtilesProtocol) {
      pmtilesProtocol = new globalThis.pmtiles.Protocol();
      maplibregl.addProtocol("pmtiles", pmtilesProtocol.tile);
    }
    const headers = new Headers({ Authorization: `Bearer ${sessionStorage.getItem("ioc.token") || ""}` });
    const url = new URL(t.url, location.href).href;
    pmtilesProtocol.add(new globalThis.pmtiles.PMTiles(new globalThis.pmtiles.FetchSource(url, headers)));
    const src = { url: `pmtiles://${url}`, minzoom: t.minzoom, maxzoom: t.maxzoom, bounds: t.bounds };
    const before = "wards-fill";
    if (t.tile_type !== "mvt") {
      this.gl.addSource("city-tiles", { type: "raster", tileSize: 256, ...src });
      this.gl.addLayer({ id: "city-raster", type: "raster", source: "city-tiles" }, before);
      return;
    }
    this.gl.addSource("city-tiles", { type: "vector", ...src });
    for (const layer of t.layers) {
      const from = { source: "city-tiles", "source-layer": layer };
      this.gl.addLayer({ id: `city-tiles-${layer}-area`, type: "fill", ...from, filter: AREAS, paint: { "fill-color": AREA_COLOUR } }, before);
      this.gl.addLayer({ id: `city-tiles-${layer}-line`, type: "line", ...from, filter: LINES, paint: { "line-color": LINE_COLOUR, "line-width": 1.5 } }, "base-line");
      this.gl.addLayer({ id: `city-tiles-${layer}-point`, type: "circle", ...from, filter: POINTS, paint: { "circle-color": LINE_COLOUR, "circle-radius": 2 } }, "base-line");
    }
  }

  // An HTML marker whose offset (CSS px at 1920 wide) scales with the page (_rescale).
  _marker(el, at, opts = {}) {
    const offset = opts.offset || [0, 0];
    const m = new maplibregl.Marker({ element: el, ...opts, offset: offset.map((v) => v * this.k) }).setLngLat(at).addTo(this.gl);
    m.baseOffset = offset;
    return m;
  }
  _label(cls, text, at, opts = {}) {
    const el = document.createElement("div");
    el.className = `map-label ${cls}`;
    el.textContent = text;
    const m = this._marker(el, at, opts);
    this.labels.push(m);
    return m;
  }
  // A line's name along its longest segment (north is always up: the angle is fixed); a road's
  // above it a third of the way along, water's below it two thirds along, so QL61C and the Xà
  // No canal beside it do not write over each other.
  _lineLabel(p, line) {
    const k = Math.cos((line[0][1] * Math.PI) / 180);
    let best = null;
    for (let i = 1; i < line.length; i++) {
      const dx = (line[i][0] - line[i - 1][0]) * k, dy = line[i][1] - line[i - 1][1], len = Math.hypot(dx, dy);
      if (!best || len > best.len) best = { len, i, a: (Math.atan2(-dy, dx) * 180) / Math.PI };
    }
    let a = best.a;
    if (a > 90) a -= 180; else if (a < -90) a += 180;
    const [x0, y0] = line[best.i - 1], [x1, y1] = line[best.i];
    const t = p.kind === "road" ? 0.3 : 0.65;
    const m = this._label(p.kind, p.name, [x0 + (x1 - x0) * t, y0 + (y1 - y0) * t], { rotation: a, rotationAlignment: "map", offset: [0, p.kind === "road" ? -10 : 12] });
    m.getElement().title = p.ref || p.name;
  }

  // Devices: a feature each with a numeric id; a change of state is a diff (updateData) sent to
  // the map's worker at most every DEVICE_MS, where it re-clusters (a cluster's colour is its
  // worst device) and the tiles are rebuilt: once per batch instead of once per feed frame. Each
  // batch costs a repaint, which in software WebGL is the dear part (docs/wall.md: measured).
  setDevice(id, lon, lat, state) {
    let d = this.devices.get(id);
    if (d && d.state === state) return;
    if (!d) { d = { lon, lat, state, fid: this.devices.size }; this.devices.set(id, d); this.added = true; }
    d.state = state;
    this.pending.set(d.fid, RANK[state]);
    this._schedule();
  }
  _schedule() {
    if (this.timer) return;
    this.timer = setTimeout(() => { this.timer = null; this._flush(); }, this.sent ? DEVICE_MS : 0);
  }
  async _flush() {
    await this.loaded;
    const src = this.gl.getSource("devices");
    if (this.added || !this.sent) {
      this.added = false; this.sent = true; this.pending.clear();
      this.ids = [...this.devices.keys()];
      src.setData({ type: "FeatureCollection", features: this.ids.map((id) => {
        const d = this.devices.get(id);
        return { type: "Feature", id: d.fid, geometry: { type: "Point", coordinates: [d.lon, d.lat] }, properties: { id, rank: RANK[d.state] } };
      }) });
      return;
    }
    const update = [...this.pending].map(([fid, rank]) => ({ id: fid, addOrUpdateProperties: [{ key: "rank", value: rank }] }));
    this.pending.clear();
    if (update.length) src.updateData({ update });
  }

  // Flood gauges: [{lon, lat, level, bd: [bd1, bd2, bd3], label}] — a bar beside the station
  // filled to its level on a scale where its BĐ I/II/III marks sit in the upper half, in the
  // colour of the highest level reached, and the level in metres beside it.
  setGauges(list) {
    this.gauges = list;
    for (const m of this.gaugeMarkers) m.remove();
    this.gaugeMarkers = list.filter((g) => g.level != null && g.bd.length >= 3).map((g) => {
      const span = Math.max(0.05, g.bd[2] - g.bd[0]), lo = g.bd[0] - 2 * span, hi = g.bd[2] + span / 2;
      const pc = (v) => `${((Math.max(lo, Math.min(hi, v)) - lo) / (hi - lo)) * 100}%`;
      const band = g.level >= g.bd[2] ? "#ff5d5d" : g.level >= g.bd[1] ? "#ffb340" : g.level >= g.bd[0] ? "#ffd84d" : "#5aa9ff";
      const el = document.createElement("div");
      el.className = "gauge";
      const bar = el.appendChild(document.createElement("div"));
      bar.className = "gauge-bar";
      const fill = bar.appendChild(document.createElement("i"));
      fill.style.height = pc(g.level); fill.style.background = band;
      for (const [i, c] of ["#ffd84d", "#ffb340", "#ff5d5d"].entries()) {
        const tick = bar.appendChild(document.createElement("b"));
        tick.style.bottom = pc(g.bd[i]); tick.style.background = c;
      }
      const label = el.appendChild(document.createElement("span"));
      label.textContent = g.label; label.style.color = band;
      return this._marker(el, [g.lon, g.lat], { anchor: "left", offset: [9, 0] });
    });
  }
  setIncidents(list) {
    this.incidents = list;
    this._points("incidents", list.map((i) => ({ id: i.id, lon: i.lon, lat: i.lat, overdue: Boolean(i.overdue) })));
  }
  setReports(list) { this.reports = list; this._points("reports", list); }
  async _points(source, list) {
    await this.loaded;
    this.gl.getSource(source).setData({ type: "FeatureCollection", features: list.map(({ lon, lat, ...props }) => (
      { type: "Feature", geometry: { type: "Point", coordinates: [lon, lat] }, properties: props })) });
  }
  setGrey(grey) { if (grey !== this.grey) { this.grey = grey; this.container.classList.toggle("grey", grey); } }

  // Cluster counts: HTML labels over the clusters on screen, refreshed when the view or the data
  // settle (a count is text, and the style has no glyphs).
  _counts() {
    const seen = new Set();
    for (const f of this.gl.querySourceFeatures("devices", { filter: ["has", "point_count"] })) {
      const key = f.properties.cluster_id;
      if (seen.has(key) || seen.size >= MAX_COUNTS) continue;
      seen.add(key);
      let m = this.countMarkers.get(key);
      if (!m) {
        const el = document.createElement("div");
        el.className = "map-count";
        m = new maplibregl.Marker({ element: el }).setLngLat(f.geometry.coordinates).addTo(this.gl);
        this.countMarkers.set(key, m);
      }
      m.setLngLat(f.geometry.coordinates);
      const text = String(f.properties.point_count);
      if (m.getElement().textContent !== text) m.getElement().textContent = text;
    }
    for (const [key, m] of this.countMarkers) if (!seen.has(key)) { m.remove(); this.countMarkers.delete(key); }
  }

  _bind() {
    const gl = this.gl;
    gl.on("moveend", () => this._counts());
    gl.on("sourcedata", (e) => { if (e.sourceId === "devices" && e.isSourceLoaded) this._counts(); });
    gl.on("click", "clusters", async (e) => {
      const f = e.features[0];
      const zoom = await gl.getSource("devices").getClusterExpansionZoom(f.properties.cluster_id);
      this.fitted = false;
      gl.easeTo({ center: f.geometry.coordinates, zoom, duration: 0 });
    });
    for (const [layer, kind] of [["devices", "device"], ["incidents", "incident"], ["reports", "report"]]) {
      gl.on("click", layer, (e) => this.onPick(kind, e.features[0].properties.id));
      gl.on("mouseenter", layer, () => { gl.getCanvas().style.cursor = "pointer"; });
      gl.on("mouseleave", layer, () => { gl.getCanvas().style.cursor = ""; });
    }
    gl.on("dblclick", (e) => { e.preventDefault(); this.fit(); });
    gl.on("movestart", (e) => { if (e.originalEvent) this.fitted = false; });
    new ResizeObserver(() => { if (this.fitted) this.fit(); else { this._rescale(); gl.resize(); } }).observe(this.container);
  }
}

// Symbol images drawn here (the style has no sprite), at twice the size they show.
function image(draw) {
  const c = document.createElement("canvas");
  c.width = c.height = 48;
  const ctx = c.getContext("2d");
  ctx.lineWidth = 2; ctx.strokeStyle = "#000";
  draw(ctx); ctx.fill(); ctx.stroke();
  return ctx.getImageData(0, 0, 48, 48);
}
const diamond = (colour) => image((ctx) => {
  ctx.beginPath(); ctx.moveTo(24, 10); ctx.lineTo(36, 24); ctx.lineTo(24, 38); ctx.lineTo(12, 24); ctx.closePath();
  ctx.fillStyle = colour;
});
const triangle = (colour) => image((ctx) => {
  ctx.beginPath(); ctx.moveTo(24, 4); ctx.lineTo(44, 40); ctx.lineTo(4, 40); ctx.closePath();
  ctx.fillStyle = colour;
});
