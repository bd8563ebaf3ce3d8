"""Soak: `ioc serve` (ingest, rules, API, upkeep — as deployed on one machine) under the field-
device simulators with faults injected, for ten minutes; memory must stay flat and nothing may
be lost.

    IOC_BENCH_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres \\
        .venv/bin/python benchmarks/soak.py [--minutes 10] [--devices 10000] [--speed 45] \\
        [--faults all=0.01]

The simulators (normal-day scenario, scaled to --devices, every fault kind at the given rate:
malformed, wrong types, duplicates, out-of-order, clock skew, oversize, silence, reconnect
storms) publish from this process; `ioc serve` runs in its own process against a fresh database
and an embedded Mosquitto configured like production. The service's RSS is sampled every 5 s;
after a one-minute warm-up its growth is fitted by least squares (MB per minute). At the end the
database must hold exactly the readings, dead letters (by reason) and events the simulators'
summary expects. Writes benchmarks/results/soak-<time>.json.
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
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
from bench_ingest import ROOT, _database, proc_stat
from psycopg import sql
from psycopg.conninfo import make_conninfo
from report import save

from ioc.core.settings import Settings
from ioc.core.site import load_site
from ioc.embedded import EmbeddedMosquitto
from ioc.simulators.clock import recent_start
from ioc.simulators.faults import FaultConfig
from ioc.simulators.model import LOCAL_TZ
from ioc.simulators.runner import Simulation, load_scenario, scale_site
from ioc.storage import devices as store
from ioc.storage import migrate

PREFIX = "soak/hg"


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def slope_per_minute(samples: list[tuple[float, float]]) -> float:
    n = len(samples)
    mx = sum(t for t, _ in samples) / n
    my = sum(v for _, v in samples) / n
    sxx = sum((t - mx) ** 2 for t, _ in samples)
    sxy = sum((t - mx) * (v - my) for t, v in samples)
    return sxy / sxx * 60 if sxx else 0.0


def scalar(url: str, query: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(query).fetchone()
        return int(row[0]) if row else 0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--devices", type=int, default=10_000)
    ap.add_argument("--speed", type=float, default=45)
    ap.add_argument("--faults", default="all=0.01")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ioc-soak-"))
    with EmbeddedMosquitto(work / "mosquitto") as broker, _database(work) as server_url:
        name = f"ioc_soak_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        url = make_conninfo(server_url, dbname=name)
        migrate(url)
        settings = Settings(
            database_url=url, mqtt_url=broker.url, mqtt_topic_prefix=PREFIX,
            dead_letter_limit=10_000_000,
        )  # fmt: skip
        site = scale_site(load_site(settings.site_path()), args.devices)

        async def register() -> None:
            async with await psycopg.AsyncConnection.connect(url) as conn:
                await store.sync_site_devices(conn, site.devices)
                await conn.commit()

        asyncio.run(register())
        env = {
            **os.environ, "IOC_DATABASE_URL": url, "IOC_MQTT_URL": broker.url,
            "IOC_MQTT_TOPIC_PREFIX": PREFIX, "IOC_ADMIN_TOKEN": uuid.uuid4().hex,
            "IOC_HTTP_PORT": "0", "IOC_LOG_LEVEL": "WARNING",
            "IOC_DEAD_LETTER_LIMIT": "10000000", "IOC_MQTT_CLIENT_ID": f"soak-{name}",
        }  # fmt: skip
        service = subprocess.Popen([sys.executable, "-m", "ioc", "serve"], cwd=ROOT, env=env)
        samples: list[tuple[float, float]] = []
        stop = threading.Event()

        def sample() -> None:
            t0 = time.monotonic()
            while not stop.wait(5.0):
                samples.append((time.monotonic() - t0, rss_mb(service.pid)))

        try:
            time.sleep(8)  # migrate, load the site, subscribe
            if service.poll() is not None:
                raise RuntimeError(f"ioc serve exited with {service.returncode}")
            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            scenario = load_scenario("normal-day")
            duration = timedelta(minutes=args.minutes * args.speed)
            start = recent_start(scenario.start, duration, args.speed, datetime.now(LOCAL_TZ))
            faults = FaultConfig.parse(args.faults, oversize_bytes=settings.max_payload_bytes * 4)
            sim = Simulation(
                site, scenario, mqtt=settings.mqtt, seed=7, speed=args.speed, start=start,
                duration=duration, faults=faults, topic_prefix=PREFIX,
            )  # fmt: skip
            cpu0, _ = proc_stat(service.pid)
            began = time.perf_counter()
            summary = sim.run()
            wall = time.perf_counter() - began
            sent = summary.telemetry + summary.events + summary.status + summary.reports
            print(f"published {sent:,} messages in {wall:.0f} s ({sent / wall:,.0f} msg/s)")
            expected_dead = sum(summary.expected_dead_letters.values())
            # Progress from the statistics collector (count(*) over millions of rows every few
            # seconds would eat the database core the service needs); exact counts at the end.
            inserted = (
                "SELECT coalesce(sum(s.n_tup_ins), 0) FROM pg_stat_user_tables s"
                " JOIN pg_inherits i ON i.inhrelid = s.relid"
                " WHERE i.inhparent = 'readings'::regclass"
            )
            last_progress, seen = time.monotonic(), -1
            while time.monotonic() - last_progress < 180:  # give up only when it stalls
                readings = scalar(url, inserted)
                dead = scalar(url, "SELECT count(*) FROM dead_letters")
                if readings >= summary.readings_expected and dead >= expected_dead:
                    break
                if readings + dead > seen:
                    last_progress, seen = time.monotonic(), readings + dead
                time.sleep(3)
            caught_up_s = time.perf_counter() - began - wall
            time.sleep(5)  # a straggler would show in the equalities below
            cpu1, peak = proc_stat(service.pid)
            stop.set()
            readings = scalar(url, "SELECT count(*) FROM readings")
            with psycopg.connect(url) as conn:
                by_reason = "SELECT reason, count(*) FROM dead_letters GROUP BY reason"
                dead_by = Counter(dict(conn.execute(by_reason).fetchall()))
            events = scalar(url, "SELECT count(*) FROM device_events")
        finally:
            stop.set()
            service.terminate()
            code = service.wait(120)
    warm = [(t, v) for t, v in samples if t >= 60]
    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "minutes": wall / 60, "catch_up_after_publishing_s": caught_up_s,
        "devices": args.devices, "speed": args.speed,
        "faults": args.faults, "messages": sent, "msg_per_s": sent / wall,
        "readings_expected": summary.readings_expected, "readings_stored": readings,
        "dead_letters_expected": dict(summary.expected_dead_letters),
        "dead_letters_stored": dict(dead_by),
        "events_expected": summary.events_expected, "events_stored": events,
        "faults_injected": dict(summary.faults), "reconnects": summary.reconnects,
        "unconfirmed": summary.unconfirmed,
        "service_cpu_cores": (cpu1 - cpu0) / wall, "service_peak_rss_mb": peak / 2**20,
        "rss_first_mb": warm[0][1] if warm else None, "rss_last_mb": warm[-1][1] if warm else None,
        "rss_slope_mb_per_min": slope_per_minute(warm) if len(warm) > 2 else None,
        "rss_samples": samples, "service_exit_code": code,
        "nothing_lost": readings == summary.readings_expected
        and dead_by == summary.expected_dead_letters and events == summary.events_expected,
    }  # fmt: skip
    path = save("soak", result)
    for k, v in result.items():
        if k != "rss_samples":
            print(f"{k:28} {v}")
    print(f"written {path}")
    return 0 if result["nothing_lost"] and code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
