"""Scale-out benchmark: one, two and three `ioc ingest` workers on an MQTT v5 shared subscription
draining the same backlog, beside the counting-paho client of the same run.

    IOC_BENCH_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres \\
        .venv/bin/python benchmarks/bench_scale_out.py [--messages 100000] [--devices 2000]

For each worker count K: a fresh database; K persistent sessions subscribed to
``$share/<group>/<telemetry filter>`` are created first, so the broker spreads the backlog over
them as it is published (Mosquitto queues a shared subscriber's share in its session even while
it is offline); then K `ioc ingest` processes (rules apart, IOC_RULES_IN_INGEST=false, as the
scale-out deployment runs them) drain it. The rate is rows stored between the first and the last
poll of ``count(*)`` that saw progress (polled every 0.25 s; the polling costs the database a
little, equally for every K). The paho counter drains a plain session of the same backlog.
Prints a table and writes benchmarks/results/scale-out-<time>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import orjson
import psycopg
from bench_ingest import (
    FILTER,
    PREFIX,
    ROOT,
    _database,
    count_rows,
    create_session,
    drain_paho_counter,
    make_devices,
    paho_client,
    payloads,
    proc_stat,
    publish_backlog,
    session_props,
)
from psycopg import sql
from psycopg.conninfo import make_conninfo
from report import save

from ioc.core.settings import MqttAddress
from ioc.embedded import EmbeddedMosquitto
from ioc.storage import devices as store
from ioc.storage import migrate


def create_shared_session(addr: MqttAddress, client_id: str, group: str) -> None:
    done = threading.Event()
    c = paho_client(addr, client_id)
    c.on_subscribe = lambda *a: done.set()
    c.connect(addr.host, addr.port, clean_start=False, properties=session_props())
    c.subscribe(f"$share/{group}/{FILTER}", qos=1)
    c.loop_start()
    assert done.wait(10)
    c.disconnect()
    c.loop_stop()


def drain_workers(url: str, mqtt_url: str, group: str, ids: list[str], n_rows: int) -> dict:
    env = {
        **os.environ, "IOC_DATABASE_URL": url, "IOC_MQTT_URL": mqtt_url,
        "IOC_MQTT_TOPIC_PREFIX": PREFIX, "IOC_LOG_LEVEL": "WARNING",
        "IOC_MAINTENANCE_INTERVAL_S": "3600", "IOC_RULES_IN_INGEST": "false",
        "IOC_MQTT_SHARED_GROUP": group,
    }  # fmt: skip
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "ioc", "ingest"],
            cwd=ROOT,
            env={**env, "IOC_MQTT_CLIENT_ID": cid},
        )
        for cid in ids
    ]
    try:
        first_t = last_t = 0.0
        first_rows = last_rows = 0
        cpu0: list[float] = []
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            if any(p.poll() is not None for p in procs):
                raise RuntimeError("an ingest worker exited early")
            rows = count_rows(url)
            now = time.perf_counter()
            if rows and not first_t:
                first_t, first_rows = now, rows
                cpu0 = [proc_stat(p.pid)[0] for p in procs]
            if rows > last_rows:
                last_t, last_rows = now, rows
            if rows >= n_rows:
                break
            time.sleep(0.25)
        else:
            raise TimeoutError(f"{count_rows(url)}/{n_rows} rows")
        stats = [proc_stat(p.pid) for p in procs]
        elapsed = last_t - first_t
        return {
            "rows_per_s": (last_rows - first_rows) / elapsed,
            "elapsed_s": elapsed,
            "cpu_cores": sum(s[0] for s in stats) - sum(cpu0),
            "peak_rss_mb": [s[1] / 2**20 for s in stats],
        }
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(60)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=100_000)
    ap.add_argument("--devices", type=int, default=2000)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2, 3])
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ioc-bench-scale-"))
    devices = make_devices(args.devices)
    items = payloads(devices, args.messages, time.time() - 3 * 86400)
    n_rows = sum(len(orjson.loads(b)["metrics"]) for _, b in items)
    runs: dict[str, dict] = {}
    with EmbeddedMosquitto(work / "mosquitto") as broker, _database(work) as server_url:
        addr = MqttAddress(broker.url)
        paho_id = f"bench-paho-{uuid.uuid4().hex[:6]}"
        create_session(addr, paho_id)
        for k in args.workers:
            name = f"ioc_scale_{k}_{uuid.uuid4().hex[:6]}"
            with psycopg.connect(server_url, autocommit=True) as conn:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            url = make_conninfo(server_url, dbname=name)
            migrate(url)

            async def register(target: str = url) -> None:
                async with await psycopg.AsyncConnection.connect(target) as conn:
                    await store.sync_site_devices(conn, devices)
                    await conn.commit()

            asyncio.run(register())
            group = f"g{uuid.uuid4().hex[:6]}"
            ids = [f"bench-w{k}-{i}-{uuid.uuid4().hex[:4]}" for i in range(k)]
            for cid in ids:
                create_shared_session(addr, cid, group)
            publish_backlog(addr, items)  # the first pass also fills the paho session
            if k == args.workers[0]:
                paho_rate, _ = drain_paho_counter(addr, paho_id, len(items))
            r = drain_workers(url, broker.url, group, ids, n_rows)
            r["msg_per_s"] = r["rows_per_s"] * len(items) / n_rows
            r["cpu_cores"] = r["cpu_cores"] / r["elapsed_s"]
            runs[str(k)] = r
            print(f"{k} worker(s): {r['msg_per_s']:,.0f} msg/s ({r['rows_per_s']:,.0f} rows/s),"
                  f" {r['cpu_cores']:.2f} cores for the workers")  # fmt: skip
    one = runs[str(args.workers[0])]["msg_per_s"]
    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "messages": len(items),
        "rows": n_rows,
        "paho_counter_msg_s": paho_rate,
        "workers": runs,
        "scaling_vs_one": {k: r["msg_per_s"] / one for k, r in runs.items()},
        "vs_paho": {k: r["msg_per_s"] / paho_rate for k, r in runs.items()},
    }
    path = save("scale-out", result)
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    print(f"written {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
