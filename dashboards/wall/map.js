// The map: ward outlines from /api/v1/site, devices and incidents as markers, on one canvas
// (10,000 DOM/SVG nodes would make every update a layout pass; a canvas redraw is one loop).
// Redraws are batched: any number of changes between two frames cost one requestAnimationFrame.
export const STATE_COLOURS = { normal: "#3ddc84", warning: "#ffb340", alert: "#ff5d5d", offline: "#6b7785" };
// "#rrggbb" → one little-endian RGBA pixel (ImageData's byte order), opaque.
function rgba(hex) {
  const n = parseInt(hex.slice(1), 16);
  return (0xff << 24 | (n & 0xff) << 16 | (n & 0xff00) | (n >> 16)) >>> 0;
}
// The page's rem in pixels (1/96 of the viewport width): a canvas font in "rem" resolves against
// the canvas's own default (16 px) when it is not in the document, so labels came out at half
// size on a 4K wall.
const rem = () => parseFloat(getComputedStyle(document.documentElement).fontSize) || 16;
const RANK = { normal: 0, offline: 1, warning: 2, alert: 3 };
const CELL = 48;          // px: grid cell for clustering when zoomed out
const CLUSTER_BELOW = 6;  // zoom (× fit) under which markers are clustered
const DATA_MS = 100;      // the least time between two redraws caused by data (not by the user)

export class WallMap {
  constructor(canvas, { onPick }) {
    this.canvas = canvas;
    this.ctx = canvas.getContext("2d");
    this.onPick = onPick;
    this.wards = [];          // [{id, city, ring: [[lon,lat]...]}]
    this.devices = new Map(); // id -> {lon, lat, state}
    this.incidents = [];      // [{id, lon, lat, overdue}]
    this.reports = [];        // open citizen reports: [{id, lon, lat}]
    this.zoom = 1; this.cx = 0; this.cy = 0; // view centre in projected units
    this.grey = false;
    this.queued = false;
    this.lastDraw = 0;
    this.dataTimer = null;
    this.hits = [];
    this._bind();
    new ResizeObserver(() => this.draw()).observe(canvas);
  }

  // Equirectangular with cos(latitude) is exact enough for a province a few tens of km across.
  setSite(site) {
    this.wards = site.wards.features.map((f) => ({ id: f.id, city: f.properties.city, name: f.properties.name, ring: f.geometry.coordinates[0] }));
    const pts = this.wards.flatMap((w) => w.ring);
    const lats = pts.map((p) => p[1]);
    this.k = Math.cos(((Math.min(...lats) + Math.max(...lats)) / 2) * Math.PI / 180);
    const xs = pts.map((p) => p[0] * this.k), ys = lats;
    this.bounds = [Math.min(...xs), Math.min(...ys), Math.max(...xs), Math.max(...ys)];
    this.fit();
  }
  fit() {
    const [x0, y0, x1, y1] = this.bounds;
    this.cx = (x0 + x1) / 2; this.cy = (y0 + y1) / 2; this.zoom = 1;
    this.draw();
  }
  scale() {
    const [x0, y0, x1, y1] = this.bounds;
    const w = this.canvas.clientWidth, h = this.canvas.clientHeight;
    return Math.min(w / (x1 - x0), h / (y1 - y0)) * 0.95 * this.zoom;
  }
  project(lon, lat, s) {
    return [this.canvas.clientWidth / 2 + (lon * this.k - this.cx) * s,
            this.canvas.clientHeight / 2 - (lat - this.cy) * s];
  }

  // Devices are kept projected (x = lon·k, y = lat) and grouped by state, so a redraw is one pass
  // of multiply-adds per device with no per-device lookups.
  setDevice(id, lon, lat, state) {
    const d = this.devices.get(id);
    if (d && d.state === state) return;
    this.devices.set(id, { lon, lat, x: lon * this.k, y: lat, state });
    this.dataChanged();
  }
  // The basemap (GET /api/v1/site/basemap): the city's file, then the shipped base layer.
  setBasemap(bm) {
    this.basemap = [...(bm.city?.features || []).map((f) => ({ f, city: true })),
                    ...(bm.base?.features || []).map((f) => ({ f, city: false }))];
    this.bgVersion = (this.bgVersion || 0) + 1;
    this.draw();
  }
  // Flood gauges: [{lon, lat, level, bd: [bd1, bd2, bd3], label}] — a bar beside the station
  // showing its level against its BĐ lines, so a rising river reads from across the room.
  setGauges(list) { this.gauges = list; this.dataChanged(); }
  setIncidents(list) { this.incidents = list; this.dataChanged(); }
  setReports(list) { this.reports = list; this.dataChanged(); }
  setGrey(grey) { if (grey !== this.grey) { this.grey = grey; this.draw(); } }

  // Data changes (50/s from the feed) redraw at most every DATA_MS: a marker turning red 0.1 s
  // later is invisible on a wall, while a redraw per feed frame would take the whole frame
  // budget. Pan and zoom still redraw on the next animation frame.
  dataChanged() {
    if (this.dataTimer) return;
    const wait = Math.max(0, DATA_MS - (performance.now() - this.lastDraw));
    this.dataTimer = setTimeout(() => { this.dataTimer = null; this.draw(); }, wait);
  }

  draw() {
    if (this.queued) return;
    this.queued = true;
    requestAnimationFrame(() => { this.queued = false; this.lastDraw = performance.now(); this._draw(); });
  }

  _draw() {
    const c = this.canvas, ctx = this.ctx, dpr = window.devicePixelRatio || 1;
    const w = c.clientWidth, h = c.clientHeight;
    if (c.width !== Math.round(w * dpr) || c.height !== Math.round(h * dpr)) {
      c.width = Math.round(w * dpr); c.height = Math.round(h * dpr);
    }
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    if (!this.bounds) return;
    const s = this.scale();
    ctx.globalAlpha = this.grey ? 0.35 : 1;
    // The background (city basemap, wards, base layer, labels) changes only with the view: drawn
    // once into its own canvas and copied on the redraws the feed causes.
    const key = `${w}x${h}@${dpr}/${this.cx},${this.cy},${this.zoom}/${this.bgVersion}`;
    if (this.bgKey !== key) { this._drawBackground(s, w, h, dpr); this.bgKey = key; }
    ctx.drawImage(this.bg, 0, 0, w, h);
    this.hits = [];
    if (this.zoom < CLUSTER_BELOW) this._drawClusters(s, w, h);
    else this._drawMarkers(s, w, h);
    this._drawGauges(s);  // over the device markers: the level is what a flood evening is about
    for (const rep of this.reports) {  // citizens' reports: small amber diamonds, under incidents
      const [x, y] = this.project(rep.lon, rep.lat, s);
      ctx.beginPath();
      ctx.moveTo(x, y - 7); ctx.lineTo(x + 6, y); ctx.lineTo(x, y + 7); ctx.lineTo(x - 6, y);
      ctx.closePath();
      ctx.fillStyle = "#ffd166"; ctx.strokeStyle = "#000"; ctx.fill(); ctx.stroke();
      this.hits.push({ x, y, r: 9, kind: "report", id: rep.id });
    }
    for (const inc of this.incidents) {
      const [x, y] = this.project(inc.lon, inc.lat, s);
      ctx.beginPath();
      ctx.moveTo(x, y - 11); ctx.lineTo(x + 10, y + 8); ctx.lineTo(x - 10, y + 8); ctx.closePath();
      ctx.fillStyle = inc.overdue ? "#ff5d5d" : "#c58bff";
      ctx.strokeStyle = "#000"; ctx.fill(); ctx.stroke();
      this.hits.push({ x, y, r: 14, kind: "incident", id: inc.id });
    }
    ctx.globalAlpha = 1;
  }

  _drawBackground(s, w, h, dpr) {
    const bg = this.bg ||= document.createElement("canvas");
    if (bg.width !== Math.round(w * dpr) || bg.height !== Math.round(h * dpr)) {
      bg.width = Math.round(w * dpr); bg.height = Math.round(h * dpr);
    }
    const ctx = bg.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    const path = (ring) => ring.forEach(([lon, lat], i) => {
      const [x, y] = this.project(lon, lat, s);
      if (i) ctx.lineTo(x, y); else ctx.moveTo(x, y);
    });
    const items = this.basemap || [];
    // the city's own areas (water, blocks) first
    for (const { f } of items) {
      const g = f.geometry, polys = g.type === "Polygon" ? [g.coordinates] : g.type === "MultiPolygon" ? g.coordinates : [];
      for (const poly of polys) {
        ctx.beginPath(); poly.forEach((ring) => { path(ring); ctx.closePath(); });
        ctx.fillStyle = f.properties?.kind === "water" ? "#13324a" : "#1a2430"; ctx.fill("evenodd");
      }
    }
    ctx.lineWidth = 1;
    for (const ward of this.wards) {
      ctx.beginPath(); path(ward.ring); ctx.closePath();
      ctx.fillStyle = ward.city === "nga-bay" ? "rgba(40,58,80,0.45)" : "rgba(36,52,72,0.45)";
      ctx.strokeStyle = "#3a4d66"; ctx.setLineDash([4, 3]);
      ctx.fill(); ctx.stroke(); ctx.setLineDash([]);
    }
    // lines: rivers wider than canals, roads in sand
    const style = { river: ["#2f7fc1", 4], canal: ["#2f7fc1", 2.5], road: ["#c9a25a", 2.5] };
    const labels = [];
    for (const { f, city } of items) {
      const g = f.geometry, kind = f.properties?.kind;
      const lines = g.type === "LineString" ? [g.coordinates] : g.type === "MultiLineString" ? g.coordinates : [];
      const [colour, width] = style[kind] || ["#4a5a6e", 1];
      for (const ln of lines) {
        ctx.beginPath(); path(ln);
        ctx.strokeStyle = colour; ctx.lineWidth = city ? Math.min(width, 1.5) : width; ctx.stroke();
        if (!city && f.properties?.name) labels.push({ kind, name: f.properties.name, ref: f.properties.ref, line: ln });
      }
      if (g.type === "Point" && f.properties?.name && f.properties.label !== false) labels.push({ kind, name: f.properties.name, point: g.coordinates });
    }
    // ward names, small and dim, under the centre of their outline
    ctx.textAlign = "center"; ctx.textBaseline = "middle";
    ctx.font = `${0.7 * rem()}px system-ui, sans-serif`; ctx.fillStyle = "#7d8ca0";
    for (const ward of this.wards) {
      const n = ward.ring.length, lon = ward.ring.reduce((a, p) => a + p[0], 0) / n, lat = ward.ring.reduce((a, p) => a + p[1], 0) / n;
      const [x, y] = this.project(lon, lat, s);
      ctx.fillText(ward.name, x, y + 16);
    }
    for (const l of labels) this._label(ctx, l, s, w, h);
    ctx.lineWidth = 1;
  }
  // A line is labelled along its longest on-screen segment; a town with a dot and bold text.
  _label(ctx, l, s, w, h) {
    if (l.point) {
      const [x, y] = this.project(l.point[0], l.point[1], s);
      ctx.beginPath(); ctx.arc(x, y, 5, 0, 2 * Math.PI); ctx.fillStyle = "#e6edf3"; ctx.fill();
      // to the left of its dot: the right is where flood gauges show their level
      ctx.font = `700 ${1.1 * rem()}px system-ui, sans-serif`; ctx.textAlign = "right";
      ctx.lineWidth = 4; ctx.strokeStyle = "#0b0f14"; ctx.strokeText(l.name, x - 9, y - 14);
      ctx.fillStyle = "#e6edf3"; ctx.fillText(l.name, x - 9, y - 14);
      ctx.textAlign = "center";
      return;
    }
    let best = null;
    for (let i = 1; i < l.line.length; i++) {
      const [x0, y0] = this.project(l.line[i - 1][0], l.line[i - 1][1], s), [x1, y1] = this.project(l.line[i][0], l.line[i][1], s);
      const mx = (x0 + x1) / 2, my = (y0 + y1) / 2;
      if (mx < 60 || my < 20 || mx > w - 60 || my > h - 20) continue;
      const len = Math.hypot(x1 - x0, y1 - y0);
      if (!best || len > best.len) best = { mx, my, len, a: Math.atan2(y1 - y0, x1 - x0) };
    }
    if (!best) return;
    ctx.font = `${l.kind === "road" ? "600 " : "italic "}${0.75 * rem()}px system-ui, sans-serif`;
    // the road's number when its name does not fit the segment
    const text = l.ref && ctx.measureText(l.name).width > best.len ? l.ref : l.name;
    let a = best.a;
    if (a > Math.PI / 2) a -= Math.PI; else if (a < -Math.PI / 2) a += Math.PI;
    ctx.save(); ctx.translate(best.mx, best.my); ctx.rotate(a);
    ctx.lineWidth = 3; ctx.strokeStyle = "#0b0f14"; ctx.strokeText(text, 0, -8);
    ctx.fillStyle = l.kind === "road" ? "#e0bd78" : "#7cc0f5"; ctx.fillText(text, 0, -8);
    ctx.restore();
  }
  // Each flood gauge: a bar filled to its level on a scale where its BĐ I/II/III marks sit in the
  // upper half, in the colour of the highest level reached, and the level in metres beside it.
  _drawGauges(s) {
    const ctx = this.ctx, BH = 36, BW = 9;
    for (const g of this.gauges || []) {
      if (g.level == null || g.bd.length < 3) continue;
      const [x, y] = this.project(g.lon, g.lat, s), bx = x + 9, by = y - BH / 2;
      const span = Math.max(0.05, g.bd[2] - g.bd[0]), lo = g.bd[0] - 2 * span, hi = g.bd[2] + span / 2;
      const fy = (v) => by + BH - (Math.max(lo, Math.min(hi, v)) - lo) / (hi - lo) * BH;
      const band = g.level >= g.bd[2] ? "#ff5d5d" : g.level >= g.bd[1] ? "#ffb340" : g.level >= g.bd[0] ? "#ffd84d" : "#5aa9ff";
      ctx.fillStyle = "#0b0f14"; ctx.fillRect(bx - 1, by - 1, BW + 2, BH + 2);
      ctx.fillStyle = band; ctx.fillRect(bx, fy(g.level), BW, by + BH - fy(g.level));
      for (const [i, c] of ["#ffd84d", "#ffb340", "#ff5d5d"].entries()) {
        ctx.fillStyle = c; ctx.fillRect(bx - 3, fy(g.bd[i]) - 1, BW + 6, 2);
      }
      ctx.font = `700 ${0.8 * rem()}px system-ui, sans-serif`; ctx.textAlign = "left"; ctx.textBaseline = "middle";
      ctx.lineWidth = 3; ctx.strokeStyle = "#0b0f14"; ctx.strokeText(g.label, bx + BW + 5, y);
      ctx.fillStyle = band; ctx.fillText(g.label, bx + BW + 5, y);
    }
  }

  // Markers are written as pixels into one ImageData and blitted once. Measured in Chromium
  // without a GPU (benchmarks/bench_wall.py): a few thousand arcs, sprite drawImage or fillRect
  // calls cost 50–90 ms of rasterisation per redraw (long tasks); plain pixel writes a few ms.
  _drawMarkers(s, w, h) {
    const dpr = window.devicePixelRatio || 1, W = this.canvas.width, H = this.canvas.height;
    if (!this.layer || this.layer.width !== W || this.layer.height !== H) {
      this.layer = document.createElement("canvas");
      this.layer.width = W; this.layer.height = H;
      this.layerCtx = this.layer.getContext("2d");
      this.img = this.layerCtx.createImageData(W, H);
      this.px = new Uint32Array(this.img.data.buffer);
    }
    const px = this.px;
    px.fill(0);
    const r = Math.round(Math.max(3, Math.min(7, 2 + this.zoom / 2)) * dpr), rr = r * r + r;
    const ox = (w / 2 - this.cx * s) * dpr, oy = (h / 2 + this.cy * s) * dpr, sd = s * dpr;
    // Worst state last, so it is on top where markers overlap.
    for (const state of ["normal", "offline", "warning", "alert"]) {
      const colour = rgba(this.grey ? "#555555" : STATE_COLOURS[state]);
      for (const d of this.devices.values()) {
        if (d.state !== state) continue;
        const x = Math.round(ox + d.x * sd), y = Math.round(oy - d.y * sd);
        if (x < r || y < r || x >= W - r || y >= H - r) continue;
        for (let dy = -r; dy <= r; dy++) {
          const row = (y + dy) * W + x;
          for (let dx = -r; dx <= r; dx++) if (dx * dx + dy * dy <= rr) px[row + dx] = colour;
        }
      }
    }
    this.layerCtx.putImageData(this.img, 0, 0);
    this.ctx.drawImage(this.layer, 0, 0, w, h);
    // Devices are hit-tested on click (see _pick), not recorded here: 10,000 objects per frame.
    this.markerR = r / dpr;
  }
  _pick(px, py) {
    const hit = this.hits.findLast((h) => (h.x - px) ** 2 + (h.y - py) ** 2 <= h.r ** 2);
    if (hit || this.zoom < CLUSTER_BELOW) return hit;
    const s = this.scale(), w = this.canvas.clientWidth, h = this.canvas.clientHeight;
    const ox = w / 2 - this.cx * s, oy = h / 2 + this.cy * s, r2 = (this.markerR + 4) ** 2;
    let best = null, bestD = r2;
    for (const [id, d] of this.devices) {
      const dd = (ox + d.x * s - px) ** 2 + (oy - d.y * s - py) ** 2;
      if (dd <= bestD) { best = { kind: "device", id }; bestD = dd; }
    }
    return best;
  }

  // Grid clustering in screen space: one circle per cell, coloured by its worst device.
  _drawClusters(s, w, h) {
    const ctx = this.ctx, cells = new Map();
    const ox = w / 2 - this.cx * s, oy = h / 2 + this.cy * s;
    for (const [id, d] of this.devices) {
      const x = ox + d.x * s, y = oy - d.y * s;
      if (x < 0 || y < 0 || x > w || y > h) continue;
      const key = Math.floor(x / CELL) * 100000 + Math.floor(y / CELL);
      let cl = cells.get(key);
      if (!cl) cells.set(key, cl = { x: 0, y: 0, n: 0, worst: "normal", id });
      cl.x += x; cl.y += y; cl.n += 1;
      if (RANK[d.state] > RANK[cl.worst]) cl.worst = d.state;
    }
    ctx.font = `600 ${0.8 * rem()}px system-ui, sans-serif`;
    ctx.textAlign = "center"; ctx.textBaseline = "middle";
    for (const cl of cells.values()) {
      const x = cl.x / cl.n, y = cl.y / cl.n;
      const r = cl.n === 1 ? 6 : Math.min(26, 10 + 3 * Math.log2(cl.n));
      ctx.beginPath(); ctx.arc(x, y, r, 0, 2 * Math.PI);
      ctx.fillStyle = this.grey ? "#555" : STATE_COLOURS[cl.worst];
      ctx.fill();
      if (cl.n > 1) { ctx.fillStyle = "#000"; ctx.fillText(String(cl.n), x, y); }
      this.hits.push(cl.n === 1 ? { x, y, r: r + 4, kind: "device", id: cl.id }
                                : { x, y, r, kind: "cluster" });
    }
  }

  _bind() {
    const c = this.canvas;
    let drag = null;
    c.addEventListener("wheel", (ev) => {
      ev.preventDefault();
      this.zoomAt(ev.offsetX, ev.offsetY, ev.deltaY < 0 ? 1.25 : 0.8);
    }, { passive: false });
    c.addEventListener("pointerdown", (ev) => { drag = { x: ev.offsetX, y: ev.offsetY, moved: false }; });
    c.addEventListener("pointermove", (ev) => {
      if (!drag) return;
      const dx = ev.offsetX - drag.x, dy = ev.offsetY - drag.y;
      if (Math.abs(dx) + Math.abs(dy) > 2) drag.moved = true;
      const s = this.scale();
      this.cx -= dx / s; this.cy += dy / s;
      drag.x = ev.offsetX; drag.y = ev.offsetY;
      this.draw();
    });
    c.addEventListener("pointerup", (ev) => {
      const click = drag && !drag.moved;
      drag = null;
      if (!click) return;
      const hit = this._pick(ev.offsetX, ev.offsetY);
      if (hit?.kind === "cluster") this.zoomAt(ev.offsetX, ev.offsetY, 2.5);
      else if (hit) this.onPick(hit.kind, hit.id);
    });
    c.addEventListener("dblclick", () => this.fit());
  }

  zoomAt(px, py, factor) {
    const s = this.scale();
    const x = this.cx + (px - this.canvas.clientWidth / 2) / s;
    const y = this.cy - (py - this.canvas.clientHeight / 2) / s;
    this.zoom = Math.max(0.5, Math.min(200, this.zoom * factor));
    const s2 = this.scale();
    this.cx = x - (px - this.canvas.clientWidth / 2) / s2;
    this.cy = y + (py - this.canvas.clientHeight / 2) / s2;
    this.draw();
  }
}
