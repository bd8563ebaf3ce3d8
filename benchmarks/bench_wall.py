"""The wall screen with 10,000 devices and 50 feed updates/s, in headless Chromium.

    .venv/bin/python benchmarks/bench_wall.py [--devices 10000] [--rate 50] [--seconds 20]

No service, database or broker: Playwright serves the page's own files from the package
(dashboards/wall/) and answers its REST calls and its /ws socket (``page.route_web_socket``),
so what is measured is the page alone — the frame path (Feed → applyFrame → batched canvas and
DOM rendering) fed exactly as the real feed feeds it. Frames per second: 80 % device frames
(online/offline flips: a marker changes colour, so the map redraws), 16 % readings frames,
4 % alert frames (firing/resolved on a random device: the alert list re-renders).

Measured with the Performance API inside the page: requestAnimationFrame deltas (frame time) and
PerformanceObserver('longtask') (main-thread tasks > 50 ms). Three phases of --seconds each, in
one run, in one browser:
  1. baseline: an idle page with the same measuring script (this machine's own frame pacing);
  2. wall, clustered (zoomed out, the default view), under the feed;
  3. wall, zoomed in ×8 (individual markers), under the feed.
Prints p50/p95/max frame time and long-task count per phase; writes
benchmarks/results/wall-<time>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ioc.site import load_site  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
BASE = "http://wall.bench"
TYPES = {"html": "text/html", "js": "text/javascript", "css": "text/css"}
KINDS = ["lighting"] * 7 + ["flood", "rain", "traffic"]

# Installed before any page script: frame deltas and long tasks, read back at the end.
MEASURE = """
window.__perf = { frames: [], longtasks: [] };
new PerformanceObserver((l) => {
  for (const e of l.getEntries()) window.__perf.longtasks.push(e.duration);
})
  .observe({ type: "longtask", buffered: true });
let __last = performance.now();
function __tick(now) {
  window.__perf.frames.push(now - __last); __last = now; requestAnimationFrame(__tick);
}
requestAnimationFrame(__tick);
"""


def site_json() -> dict[str, Any]:
    site = load_site(ROOT / "ioc" / "site_data" / "hau-giang.yaml")
    return {
        "name": site.name, "timezone": site.timezone,
        "cities": [{"id": c.id, "name": c.name, "lat": c.lat, "lon": c.lon} for c in site.cities],
        "wards": {"type": "FeatureCollection", "features": [
            {"type": "Feature", "id": w.id, "properties": {"city": c.id, "name": w.name},
             "geometry": {"type": "Polygon", "coordinates": [[list(p) for p in w.outline]]}}
            for c in site.cities for w in c.wards]},
        "stations": [], "agencies": [],
        "categories": [{"code": "ngap-nuoc", "name_vi": "Ngập", "name_en": "Flood",
                        "alert_domains": ["flood"]}],
    }  # fmt: skip


def synthetic_devices(site: dict[str, Any], n: int, rng: random.Random) -> list[dict[str, Any]]:
    wards = site["wards"]["features"]
    out = []
    for i in range(n):
        w = wards[i % len(wards)]
        ring = w["geometry"]["coordinates"][0]
        lons, lats = [p[0] for p in ring], [p[1] for p in ring]
        kind = KINDS[i % len(KINDS)]
        out.append({
            "id": f"bench-{i:05d}", "kind": kind, "city": w["properties"]["city"], "ward": w["id"],
            "name": f"{kind} {i}", "lat": rng.uniform(min(lats), max(lats)),
            "lon": rng.uniform(min(lons), max(lons)),
            "attributes": {"cabinet": f"cab-{i // 40:03d}"} if kind == "lighting" else {},
        })  # fmt: skip
    return out


class Wall:
    """Answers the page's requests and drives its socket at ``rate`` frames/s while ``feeding``."""

    def __init__(self, devices: list[dict[str, Any]], site: dict[str, Any], rate: float) -> None:
        self.devices, self.site, self.rate = devices, site, rate
        self.seq = 0
        self.rng = random.Random(7)
        self.feeding = False
        self.sent = 0
        self.tasks: set[asyncio.Task[None]] = set()

    def frame(self, type_: str, data: dict[str, Any]) -> str:
        self.seq += 1
        now = datetime.now(UTC).isoformat()
        return json.dumps({"type": type_, "seq": self.seq, "time": now, "data": data})

    async def http(self, route: Any) -> None:
        path = route.request.url.removeprefix(BASE).split("?")[0]
        if path.startswith("/wall/"):
            name = path.removeprefix("/wall/") or "index.html"
            body = resources.files("dashboards").joinpath("wall", name).read_bytes()
            await route.fulfill(body=body, content_type=TYPES[name.rsplit(".", 1)[1]])
            return
        answers: dict[str, Any] = {
            "/api/v1/whoami": {"name": "bench", "role": "operator", "agency": None,
                               "can_act": True},
            "/api/v1/site": self.site,
            "/api/v1/alerts": [], "/api/v1/incidents": [],
            "/api/v1/kpis": {"targets": {"on_time": 0.95, "satisfaction": 0.8},
                             "total": {"on_time_rate": 0.96, "satisfaction": 0.82}},
        }  # fmt: skip
        if path == "/api/v1/devices":
            after = dict(p.split("=") for p in route.request.url.split("?")[1].split("&")).get(
                "after"
            )
            start = next((i + 1 for i, d in enumerate(self.devices) if d["id"] == after), 0)
            body = self.devices[start : start + 5000]
        elif path.startswith("/api/v1/devices/"):
            body = {"device_id": "x", "metric": "water_level_m", "bucket": "10m", "points": []}
        else:
            body = answers.get(path, {})
        await route.fulfill(body=json.dumps(body), content_type="application/json")

    async def socket(self, ws: Any) -> None:
        ws.send(self.frame("hello", {"heartbeat_s": 15}))
        task = asyncio.create_task(self.pump(ws), name="bench-wall-feed")
        self.tasks.add(task)

    async def pump(self, ws: Any) -> None:
        period = 1.0 / self.rate
        next_at = time.monotonic()
        alert_id = 0
        while True:
            next_at += period
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            if not self.feeding:
                continue
            d = self.rng.choice(self.devices)
            roll = self.sent % 25
            if roll == 0:  # 4 %: an alert fires or resolves on a device
                alert_id += 1
                firing = alert_id % 2 == 1
                data = {"id": (alert_id + 1) // 2, "state": "firing" if firing else "resolved",
                        "severity": self.rng.choice(["critical", "warning"]), "rule": "bench",
                        "labels": {"domain": "flood"}, "annotations": {"summary_vi": "bench"},
                        "device_id": d["id"], "city": d["city"], "ward": d["ward"],
                        "started_at": datetime.now(UTC).isoformat()}  # fmt: skip
                msg = self.frame("alert", data)
            elif roll < 5:  # 16 %: readings
                now = datetime.now(UTC).isoformat()
                metrics = {"power_w": {"time": now, "value": self.rng.uniform(0, 120)}}
                one = {"city": d["city"], "kind": d["kind"], "metrics": metrics}
                msg = self.frame("readings", {"devices": {d["id"]: one}})
            else:  # 80 %: a device goes offline or back online (the marker changes colour)
                msg = self.frame(
                    "device", {"device_id": d["id"], "online": self.rng.random() < 0.7}
                )
            ws.send(msg)
            self.sent += 1


async def measure(page: Any, seconds: float) -> dict[str, Any]:
    await page.evaluate("window.__perf.frames = []; window.__perf.longtasks = [];")
    await asyncio.sleep(seconds)
    perf = await page.evaluate("window.__perf")
    frames = sorted(perf["frames"])

    def q(p: float) -> float:
        return round(frames[min(len(frames) - 1, int(p * len(frames)))], 1) if frames else 0.0

    return {"frames": len(frames), "p50_ms": q(0.5), "p95_ms": q(0.95),
            "max_ms": round(frames[-1], 1) if frames else 0.0,
            "long_tasks": len(perf["longtasks"]),
            "long_task_ms": round(sum(perf["longtasks"]), 1)}  # fmt: skip


async def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--devices", type=int, default=10_000)
    ap.add_argument("--rate", type=float, default=50.0, help="feed frames per second")
    ap.add_argument("--seconds", type=float, default=20.0, help="per phase")
    args = ap.parse_args()
    from playwright.async_api import async_playwright

    site = site_json()
    wall = Wall(synthetic_devices(site, args.devices, random.Random(1)), site, args.rate)
    results: dict[str, Any] = {}
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        ctx = await browser.new_context(viewport={"width": 1920, "height": 1080})
        await ctx.add_init_script(MEASURE)
        await ctx.add_init_script("sessionStorage.setItem('ioc.token', 'bench')")

        idle = await ctx.new_page()
        await idle.set_content("<!doctype html><body style='background:#000'>idle</body>")
        results["baseline (idle page)"] = await measure(idle, args.seconds)
        await idle.close()

        page = await ctx.new_page()
        await page.route(f"{BASE}/**", wall.http)
        await page.route_web_socket("ws://wall.bench/ws**", wall.socket)
        await page.goto(f"{BASE}/wall/")
        await page.wait_for_function(
            f"wall.map && wall.map.devices.size === {args.devices}", timeout=60_000
        )
        await page.wait_for_function("wall.state.feed && wall.state.feed.open", timeout=60_000)
        wall.feeding = True
        sent0 = wall.sent
        results["wall, clustered, feed on"] = await measure(page, args.seconds)
        await page.evaluate(
            "wall.map.zoomAt(wall.map.canvas.clientWidth / 4, wall.map.canvas.clientHeight / 2, 8)"
        )
        results["wall, zoomed ×8, feed on"] = await measure(page, args.seconds)
        rate = (wall.sent - sent0) / (2 * args.seconds)
        await page.screenshot(path=str(ROOT / "benchmarks" / "results" / "wall-bench.png"))
        applied = await page.evaluate("wall.state.feed.lastSeq")
        for t in wall.tasks:
            t.cancel()
        await browser.close()

    print(f"{args.devices} devices, feed {rate:.1f} frames/s sent, last seq applied {applied} "
          f"of {wall.seq}")  # fmt: skip
    print(
        f"{'phase':32} {'frames':>7} {'p50 ms':>7} {'p95 ms':>7} {'max ms':>7} {'long tasks':>10}"
    )
    for name, r in results.items():
        print(f"{name:32} {r['frames']:7} {r['p50_ms']:7} {r['p95_ms']:7} {r['max_ms']:7} "
              f"{r['long_tasks']:4} ({r['long_task_ms']} ms)")  # fmt: skip
    out = ROOT / "benchmarks" / "results" / f"wall-{datetime.now(UTC):%Y%m%dT%H%M%S}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(
        json.dumps({"devices": args.devices, "rate_sent": rate, "phases": results}, indent=1)
    )
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    asyncio.run(main())
