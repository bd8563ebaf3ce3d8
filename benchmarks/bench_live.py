"""Alert latency and websocket fan-out under load, beside the broker's own transit time.

    IOC_BENCH_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres \\
      .venv/bin/python benchmarks/bench_live.py [--rate 2000] [--probes 200] [--clients 50]

Processes: `ioc serve` (ingest + rules + API, the default rule pack plus a probe rule), an
embedded Mosquitto configured like production, a steady publisher of lamp telemetry at --rate
msg/s (benchmarks/steady_publisher.py), websocket clients (benchmarks/ws_clients.py), and this
process publishing probes: a gauge reading of 10 + k/1000 m (the probe rule fires at ≥ 5 m, no
`for`), then 0 m to resolve it. Measured in one run, two phases under the same load:
  1. alert latency: probe publish → the firing alert frame at 1 websocket client, p50/p99;
     beside it, publish → receipt by a plain MQTT subscriber of the same probe messages (what the
     broker alone costs);
  2. fan-out: the same with --clients clients subscribed to everything: every client must get
     every probe's alert (no loss), p50/p99 over all deliveries.
Prints a table and writes benchmarks/results/live-<time>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from datetime import UTC, datetime
from pathlib import Path
from statistics import quantiles

import orjson
import paho.mqtt.client as mqtt
import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from report import save  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

from ioc.core.settings import MqttAddress  # noqa: E402
from ioc.core.site import load_site  # noqa: E402
from ioc.embedded import EmbeddedMosquitto  # noqa: E402
from ioc.rules.language import DEFAULT_PACK  # noqa: E402

TOKEN = "bench-token-0123456789"  # the service refuses tokens under 16 characters
PROBES = [f"probe-{i}" for i in range(8)]
PROBE_RULE = """rules:
  - id: probe
    type: threshold
    select: {kind: flood, metric: water_level_m, attributes: {role: probe}}
    when: {op: ">=", threshold: 5}
    labels: {severity: critical, domain: flood}
    annotations: {summary_vi: "thử {value}", summary_en: "probe {value}"}
"""


def sample_feed_lock(url: str, stop: threading.Event) -> dict[str, object]:
    """Who holds the live feed's advisory lock (``ioc.storage.feed``), sampled every ~5 ms until
    ``stop``: the share of samples it was held, held by a session idle in transaction (waiting
    for its client), and per lock wait the longest time it was seen waiting."""
    from ioc.storage.feed import _FEED_LOCK

    query = (
        "SELECT l.granted, a.state, a.pid, a.query_start,"
        " extract(epoch FROM clock_timestamp() - a.query_start) * 1000"
        " FROM pg_locks AS l JOIN pg_stat_activity AS a USING (pid)"
        " WHERE l.locktype = 'advisory' AND l.classid = %s AND l.objid = %s"
        " AND a.datname = current_database()"
    )
    key = (_FEED_LOCK >> 32, _FEED_LOCK & 0xFFFFFFFF)
    samples = held = held_idle = 0
    waits: dict[tuple[object, object], float] = {}
    with psycopg.connect(url, autocommit=True) as conn:
        while not stop.is_set():
            rows = conn.execute(query, key).fetchall()
            samples += 1
            holders = [r for r in rows if r[0]]
            held += bool(holders)
            held_idle += any(str(r[1]).startswith("idle") for r in holders)
            for granted, _state, pid, started, ms in rows:
                if not granted:
                    waits[(pid, started)] = max(waits.get((pid, started), 0.0), float(ms))
            time.sleep(0.005)
    w = sorted(waits.values())
    return {
        "samples": samples,
        "held_share": round(held / max(samples, 1), 3),
        "held_idle_in_transaction_share": round(held_idle / max(samples, 1), 3),
        "waits": len(w),
        "wait_ms_p50": round(pct(w, 50), 1) if w else 0.0,
        "wait_ms_p99": round(pct(w, 99), 1) if w else 0.0,
        "wait_ms_max": round(max(w, default=0.0), 1),
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pct(values: list[float], q: int) -> float:
    if len(values) < 2:
        return values[0] if values else float("nan")
    return quantiles(values, n=100, method="inclusive")[q - 1]


def http(method: str, url: str, body: object | None = None) -> object:
    req = urllib.request.Request(
        url,
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read() or b"null")


class MqttWatch:
    """A plain subscriber of the probe topics: the broker-only transit reference."""

    def __init__(self, addr: MqttAddress, prefix: str) -> None:
        self.got: dict[int, float] = {}
        self.c = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"watch-{uuid.uuid4().hex[:6]}",
            protocol=mqtt.MQTTv5,
        )  # fmt: skip
        self.c.on_message = self._on_message
        self.c.connect(addr.host, addr.port)
        self.c.subscribe(f"{prefix}/vi-thanh/flood/+/telemetry", qos=1)
        self.c.loop_start()

    def _on_message(self, c: mqtt.Client, u: object, m: mqtt.MQTTMessage) -> None:
        now = time.time()
        v = orjson.loads(m.payload)["metrics"]["water_level_m"]
        if v >= 5:
            self.got.setdefault(round((v - 10.0) * 1000), now)

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


def run_probes(addr: MqttAddress, prefix: str, n: int, offset: int) -> dict[int, float]:
    c = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id=f"probe-{uuid.uuid4().hex[:6]}",
        protocol=mqtt.MQTTv5,
    )  # fmt: skip
    c.connect(addr.host, addr.port)
    c.loop_start()
    sent: dict[int, float] = {}
    for i in range(n):
        k = offset + i
        dev = PROBES[k % len(PROBES)]
        topic = f"{prefix}/vi-thanh/flood/{dev}/telemetry"
        now = time.time()
        body = {"ts": int(now * 1000), "metrics": {"water_level_m": 10.0 + k / 1000}}
        sent[k] = time.time()
        c.publish(topic, orjson.dumps(body), qos=1).wait_for_publish(10)
        time.sleep(0.1)
        body = {"ts": int(time.time() * 1000), "metrics": {"water_level_m": 0.0}}
        c.publish(topic, orjson.dumps(body), qos=1).wait_for_publish(10)
        time.sleep(0.15)
    c.loop_stop()
    c.disconnect()
    return sent


def phase(
    name: str, addr: MqttAddress, prefix: str, ws_url: str, clients: int, n: int, offset: int
) -> dict[str, object]:
    out = Path(tempfile.mkdtemp()) / "ws.json"
    seconds = n * 0.25 + 8
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "benchmarks" / "ws_clients.py"), ws_url, str(clients),
         str(seconds), str(out)],
    )  # fmt: skip
    time.sleep(3)  # clients connected and past their hello
    watch = MqttWatch(addr, prefix)
    sent = run_probes(addr, prefix, n, offset)
    proc.wait(timeout=seconds + 60)
    watch.close()
    data = json.loads(out.read_text())
    lat: list[float] = []
    worst: dict[int, float] = {}  # probe number -> its slowest delivery (where is the tail?)
    missing = 0
    resyncs = 0
    for c in data.values():
        got = {int(k): v for k, v in c["received"].items()}
        resyncs += c["resyncs"]
        for k, t in sent.items():
            if k in got:
                lat.append((got[k] - t) * 1000)
                worst[k] = max(worst.get(k, 0.0), lat[-1])
            else:
                missing += 1
    mq = [(watch.got[k] - t) * 1000 for k, t in sent.items() if k in watch.got]
    return {
        "phase": name,
        "clients": clients,
        "probes": n,
        "deliveries_expected": n * clients,
        "deliveries_missing": missing,
        "resyncs": resyncs,
        "alert_ms_p50": round(pct(lat, 50), 1),
        "alert_ms_p99": round(pct(lat, 99), 1),
        "alert_ms_max": round(max(lat), 1) if lat else None,
        "slowest_probes": [
            {"probe": k, "ms": round(v, 1)}
            for k, v in sorted(worst.items(), key=lambda kv: -kv[1])[:5]
        ],
        "mqtt_transit_ms_p50": round(pct(mq, 50), 1),
        "mqtt_transit_ms_p99": round(pct(mq, 99), 1),
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=float, default=2000)
    ap.add_argument("--probes", type=int, default=200)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--linger-ms", type=float, default=None, help="IOC_INGEST_LINGER_MS")
    ap.add_argument("--writers", type=int, default=None, help="IOC_INGEST_WRITERS")
    args = ap.parse_args()
    admin = os.environ.get("IOC_BENCH_DATABASE_URL")
    if not admin:
        print("set IOC_BENCH_DATABASE_URL (a role that may CREATE DATABASE)", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="ioc-bench-live-"))
    db = f"ioc_bench_live_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db)))
    url = make_conninfo(admin, dbname=db)
    rules = work / "rules"
    rules.mkdir()
    shutil.copy(DEFAULT_PACK / "default.yaml", rules / "default.yaml")
    (rules / "probe.yaml").write_text(PROBE_RULE)
    prefix = "bench/hg"
    site = load_site(ROOT / "ioc" / "site_data" / "hau-giang.yaml")
    lamps = [d for d in site.devices if d.kind == "lighting"]
    targets = ",".join(f"{d.city}/{d.kind}/{d.id}" for d in lamps)
    results: list[dict[str, object]] = []
    try:
        with EmbeddedMosquitto(work / "mosquitto") as broker:
            addr = MqttAddress(broker.url)
            port = free_port()
            env = {k: v for k, v in os.environ.items() if not k.startswith("IOC_")}
            env |= {
                "IOC_DATABASE_URL": url, "IOC_MQTT_URL": broker.url, "IOC_ADMIN_TOKEN": TOKEN,
                "IOC_HTTP_PORT": str(port), "IOC_RULES_DIR": str(rules), "IOC_DATA_DIR": str(work),
                "IOC_MQTT_TOPIC_PREFIX": prefix, "IOC_LOG_LEVEL": "WARNING",
            }  # fmt: skip
            if args.linger_ms is not None:
                env["IOC_INGEST_LINGER_MS"] = str(args.linger_ms)
            if args.writers is not None:
                env["IOC_INGEST_WRITERS"] = str(args.writers)
            service = subprocess.Popen(
                [str(Path(sys.executable).with_name("ioc")), "serve"], env=env
            )
            base = f"http://127.0.0.1:{port}"
            try:
                deadline = time.time() + 60
                while True:
                    try:
                        http("GET", f"{base}/readyz")
                        break
                    except OSError:
                        if time.time() > deadline:
                            raise
                        time.sleep(0.5)
                for dev in PROBES:
                    http("POST", f"{base}/api/v1/devices", {
                        "id": dev, "kind": "flood", "city": "vi-thanh", "ward": "phuong-5",
                        "name": f"Probe {dev}", "lat": 9.784, "lon": 105.47,
                        "attributes": {"role": "probe", "station": "vi-thanh"},
                    })  # fmt: skip
                time.sleep(2)  # registry and rules pick the probes up (NOTIFY, then rules reload)
                load_s = (args.probes * 0.25 + 15) * 2 + 10
                load = subprocess.Popen(
                    [sys.executable, str(ROOT / "benchmarks" / "steady_publisher.py"), broker.url,
                     prefix, str(args.rate), str(load_s), targets],
                )  # fmt: skip
                time.sleep(3)
                ws = f"ws://127.0.0.1:{port}/ws?token={TOKEN}"
                # the feed lock during the 1-client phase: what the alert frame waits behind
                stop = threading.Event()
                lock: dict[str, object] = {}
                sampler = threading.Thread(
                    target=lambda: lock.update(sample_feed_lock(url, stop)), daemon=True
                )
                sampler.start()
                results.append(phase("latency", addr, prefix, ws, 1, args.probes, 0))
                stop.set()
                sampler.join(timeout=30)
                results[-1]["feed_lock"] = lock
                results.append(
                    phase("fan-out", addr, prefix, ws, args.clients, args.probes, args.probes)
                )
                load.terminate()
                load.wait(timeout=30)
            finally:
                service.terminate()
                service.wait(timeout=60)
    finally:  # also when the service fails to start: no database left behind
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db))
            )
    report = {
        "time": datetime.now(UTC).isoformat(),
        "rate": args.rate,
        "linger_ms": args.linger_ms,
        "writers": args.writers,
        "phases": results,
    }
    print(json.dumps(report, indent=2))
    print(f"written {save('live', report)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
