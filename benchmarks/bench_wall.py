"""The wall screen on a running, loaded IOC: frame time in headless Chromium.

    IOC_BENCH_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres \\
      .venv/bin/python benchmarks/bench_wall.py [--devices 10000] [--rate 50] [--seconds 20] \\
      [--size 1920x1080] [--maps maplibre,canvas]

Processes: `ioc serve` (ingest, the default rule pack plus a bench rule, API) on its own database
and an embedded Mosquitto; its site is the packaged one with street lamps added (copies of the
real lamps, a few metres apart) up to --devices; this process publishes over MQTT at --rate
messages/s: 80 % status flips (a lamp goes offline or back: a `device` frame, the marker changes
colour), 16 % lamp telemetry (`readings` frames), 4 % a lamp's power over the bench rule's 200 W
or back under it (an alert fires or resolves: `alert` frames, the alert list re-renders). What
the page gets is what the service makes of that — ingest, rules, the feed's coalescing — not a
script of frames.

Measured with the Performance API inside the page: requestAnimationFrame deltas (frame time) and
PerformanceObserver('longtask') (main-thread tasks > 50 ms), in phases of --seconds:
  1. baseline: an idle page with the same measuring script (this machine's own frame pacing);
then for each map of --maps (MapLibre GL in WebGL — software, SwiftShader, on a machine without a
GPU — and the 2D-canvas fallback, /wall/?map=…), one after the other in the same run:
  2. wall, clustered (zoomed out, the default view), under the load;
  3. wall, zoomed in ×8 (individual markers), under the load.
Prints p50/p95/max frame time, frames over 1 s (stalls), long tasks and the feed frames the page
applied per phase; writes benchmarks/results/wall-<time>.json and a screenshot per map
benchmarks/results/wall-bench-<map>.png.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt
import psycopg
import yaml
from psycopg import sql
from psycopg.conninfo import make_conninfo

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from report import save  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

from ioc.core.settings import MqttAddress  # noqa: E402
from ioc.embedded import EmbeddedMosquitto  # noqa: E402
from ioc.rules.language import DEFAULT_PACK  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
TOKEN = "bench-wall-token-0123456789"
PREFIX = "bench/hg"
BENCH_RULE = """rules:
  - id: bench-lamp-overpower
    type: threshold
    select: {kind: lighting, metric: power_w}
    when: {op: ">", threshold: 200, clear: 150}
    labels: {severity: warning, domain: lighting}
    annotations:
      summary_vi: "{device.name}: công suất {value:.0f} W"
      summary_en: "{device.name}: power {value:.0f} W"
"""

# Installed before any page script: frame deltas and long tasks, read back at the end.
MEASURE = """
window.__perf = { frames: [], longtasks: [] };
new PerformanceObserver((l) => {
  for (const e of l.getEntries()) window.__perf.longtasks.push(e.duration);
}).observe({ type: "longtask", buffered: true });
let __last = performance.now();
function __tick(now) {
  window.__perf.frames.push(now - __last); __last = now; requestAnimationFrame(__tick);
}
requestAnimationFrame(__tick);
"""


def site_with_lamps(work: Path, devices: int) -> tuple[Path, list[dict[str, Any]]]:
    """The packaged site with lamps added until it has ``devices`` devices; its lamps."""
    data = ROOT / "ioc" / "site_data"
    for f in data.glob("*.yaml"):  # the site file names its neighbours (tides.yaml, …)
        shutil.copy(f, work / f.name)
    doc = yaml.safe_load((data / "hau-giang.yaml").read_text("utf-8"))
    real = [d for d in doc["devices"] if d["kind"] == "lighting"]
    rng = random.Random(1)
    extra = []
    for i in range(max(0, devices - len(doc["devices"]))):
        src = real[i % len(real)]
        extra.append({**src, "id": f"bench-lamp-{i:05d}", "name": f"{src['name']} · {i}",
                      "lat": round(src["lat"] + rng.uniform(-4e-4, 4e-4), 6),
                      "lon": round(src["lon"] + rng.uniform(-4e-4, 4e-4), 6)})  # fmt: skip
    doc["devices"] += extra
    path = work / "bench-site.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False), "utf-8")
    return path, real + extra


class Load:
    """Publishes the mix at ``rate`` messages/s from a paho thread while ``running``."""

    def __init__(self, url: str, lamps: list[dict[str, Any]], rate: float) -> None:
        addr = MqttAddress(url)
        self.c = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-wall-{uuid.uuid4().hex[:6]}",
            protocol=mqtt.MQTTv5,
        )  # fmt: skip
        self.c.max_queued_messages_set(0)
        self.c.connect(addr.host, addr.port)
        self.c.loop_start()
        self.lamps, self.rate, self.sent = lamps, rate, 0
        self.over: set[str] = set()
        self.rng = random.Random(7)

    def topic(self, d: dict[str, Any], channel: str) -> str:
        return f"{PREFIX}/{d['city']}/lighting/{d['id']}/{channel}"

    def one(self) -> None:
        d, roll = self.rng.choice(self.lamps), self.sent % 25
        now = int(time.time() * 1000)
        if roll == 0:  # 4 %: over the rule's 200 W, or back under it
            watts = 100.0 if d["id"] in self.over else 260.0
            self.over ^= {d["id"]}
            body = {"ts": now, "metrics": {"power_w": watts}}
            self.c.publish(self.topic(d, "telemetry"), orjson.dumps(body), qos=1)
        elif roll < 5:  # 16 %: ordinary telemetry
            body = {"ts": now, "metrics": {"power_w": round(self.rng.uniform(80, 140), 1)}}
            self.c.publish(self.topic(d, "telemetry"), orjson.dumps(body), qos=1)
        else:  # 80 %: offline or back online
            word = "online" if self.rng.random() < 0.7 else "offline"
            self.c.publish(self.topic(d, "status"), word, qos=1)
        self.sent += 1

    async def run(self, seconds: float) -> float:
        start, n0 = time.perf_counter(), self.sent
        while (elapsed := time.perf_counter() - start) < seconds:
            while self.sent - n0 < int(elapsed * self.rate):
                self.one()
            await asyncio.sleep(0.005)
        return (self.sent - n0) / seconds

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


def ready(base: str, deadline_s: float) -> None:
    deadline = time.time() + deadline_s
    while True:
        try:
            req = urllib.request.Request(
                f"{base}/readyz", headers={"Authorization": f"Bearer {TOKEN}"}
            )
            with urllib.request.urlopen(req, timeout=5):
                return
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.5)


async def measure(page: Any, load: Load, seconds: float) -> dict[str, Any]:
    seq0 = await page.evaluate("window.wall?.state?.feed?.lastSeq ?? 0")
    await page.evaluate("window.__perf.frames = []; window.__perf.longtasks = [];")
    published = await load.run(seconds) if load else await asyncio.sleep(seconds) or 0.0
    perf = await page.evaluate("window.__perf")
    seq1 = await page.evaluate("window.wall?.state?.feed?.lastSeq ?? 0")
    frames = sorted(perf["frames"])

    def q(p: float) -> float:
        return round(frames[min(len(frames) - 1, int(p * len(frames)))], 1) if frames else 0.0

    return {"frames": len(frames), "p50_ms": q(0.5), "p95_ms": q(0.95),
            "max_ms": round(frames[-1], 1) if frames else 0.0,
            "stalls_over_1s": sum(f > 1000 for f in frames),
            "long_tasks": len(perf["longtasks"]), "long_task_ms": round(sum(perf["longtasks"]), 1),
            "published_per_s": round(published, 1),
            "feed_frames_per_s": round((seq1 - seq0) / seconds, 1)}  # fmt: skip


async def drive(
    base: str, load: Load, devices: int, seconds: float, size: str, maps: list[str]
) -> dict[str, Any]:
    from playwright.async_api import async_playwright

    width, height = (int(v) for v in size.split("x"))
    results: dict[str, Any] = {}
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        ctx = await browser.new_context(viewport={"width": width, "height": height})
        await ctx.add_init_script(MEASURE)
        idle = await ctx.new_page()
        await idle.set_content("<!doctype html><body style='background:#000'>idle</body>")
        results["baseline (idle page)"] = await measure(idle, None, seconds)  # type: ignore[arg-type]
        await idle.close()

        for name in maps:
            page = await ctx.new_page()
            page.on("pageerror", lambda e: print("page error:", e, file=sys.stderr))
            await page.goto(f"{base}/wall/?map={name}#token={TOKEN}")
            await page.wait_for_function(
                f"wall.map && wall.map.devices.size >= {devices}", timeout=120_000
            )
            await page.wait_for_function("wall.state.feed && wall.state.feed.open", timeout=60_000)
            kind = await page.evaluate("wall.map.gl ? 'maplibre' : 'canvas'")
            assert kind == name, f"asked for the {name} map, the page drew {kind}"
            if kind == "maplibre":  # every device is in the map's worker, drawn
                await page.wait_for_function(
                    "wall.map.gl.isSourceLoaded('devices') && wall.map.gl"
                    ".querySourceFeatures('devices').length > 0",
                    timeout=120_000,
                )  # fmt: skip
            await load.run(3)  # warm: the first frames of the load are through
            results[f"{name}, clustered, load on"] = await measure(page, load, seconds)
            box = "document.getElementById('map')"
            await page.evaluate(
                f"wall.map.zoomAt({box}.clientWidth / 4, {box}.clientHeight / 2, 8)"
            )
            results[f"{name}, zoomed ×8, load on"] = await measure(page, load, seconds)
            shot = ROOT / "benchmarks" / "results" / f"wall-bench-{name}.png"
            await page.screenshot(path=str(shot))
            results[f"{name}: alerts firing on the page"] = await page.evaluate(
                "[...wall.state.alerts.values()].filter((a) => a.state === 'firing').length"
            )
            await page.close()
        await browser.close()
    return results


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--devices", type=int, default=10_000)
    ap.add_argument("--rate", type=float, default=50.0, help="MQTT messages per second")
    ap.add_argument("--seconds", type=float, default=20.0, help="per phase")
    ap.add_argument("--size", default="1920x1080", help="viewport, WIDTHxHEIGHT")
    ap.add_argument("--maps", default="maplibre,canvas", help="the wall maps to measure, in turn")
    args = ap.parse_args()
    admin = os.environ.get("IOC_BENCH_DATABASE_URL")
    if not admin:
        print("set IOC_BENCH_DATABASE_URL (a role that may CREATE DATABASE)", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="ioc-bench-wall-"))
    site, lamps = site_with_lamps(work, args.devices)
    rules = work / "rules"
    rules.mkdir()
    shutil.copy(DEFAULT_PACK / "default.yaml", rules / "default.yaml")
    (rules / "bench.yaml").write_text(BENCH_RULE, "utf-8")
    db = f"ioc_bench_wall_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db)))
    try:
        with EmbeddedMosquitto(work / "mosquitto") as broker:
            from bench_live import free_port

            port = free_port()
            env = {k: v for k, v in os.environ.items() if not k.startswith("IOC_")}
            env |= {
                "IOC_DATABASE_URL": make_conninfo(admin, dbname=db), "IOC_MQTT_URL": broker.url,
                "IOC_ADMIN_TOKEN": TOKEN, "IOC_HTTP_PORT": str(port), "IOC_RULES_DIR": str(rules),
                "IOC_DATA_DIR": str(work), "IOC_MQTT_TOPIC_PREFIX": PREFIX, "IOC_SITE": str(site),
                "IOC_LOG_LEVEL": "WARNING",
            }  # fmt: skip
            service = subprocess.Popen(
                [str(Path(sys.executable).with_name("ioc")), "serve"], env=env
            )
            base = f"http://127.0.0.1:{port}"
            load = None
            try:
                ready(base, 180)
                load = Load(broker.url, lamps, args.rate)
                results = asyncio.run(
                    drive(base, load, args.devices, args.seconds, args.size, args.maps.split(","))
                )
            finally:
                if load:
                    load.close()
                service.terminate()
                service.wait(timeout=60)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db))
            )
        shutil.rmtree(work, ignore_errors=True)
    print(f"{args.devices} devices, {args.rate:g} MQTT messages/s, viewport {args.size}")
    print(f"{'phase':30} {'frames':>6} {'p50 ms':>7} {'p95 ms':>7} {'max ms':>7} {'>1 s':>4} "
          f"{'long tasks':>16} {'pub/s':>6} {'feed/s':>6}")  # fmt: skip
    for name, r in results.items():
        if isinstance(r, dict):
            print(f"{name:30} {r['frames']:6} {r['p50_ms']:7} {r['p95_ms']:7} {r['max_ms']:7} "
                  f"{r['stalls_over_1s']:4} {r['long_tasks']:4} ({r['long_task_ms']:7} ms) "
                  f"{r['published_per_s']:6} {r['feed_frames_per_s']:6}")  # fmt: skip
        else:
            print(f"{name}: {r}")
    # the machine's load at the end (1-minute average): other work on the same cores shows here
    load_1m = round(os.getloadavg()[0], 2)
    print(f"load average (1 min) at the end: {load_1m} on {os.cpu_count()} CPUs")
    report = {"devices": args.devices, "rate": args.rate, "size": args.size, "maps": args.maps,
              "phases": results, "loadavg_1m_end": load_1m, "cpus": os.cpu_count()}  # fmt: skip
    print(f"written {save('wall', report)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
