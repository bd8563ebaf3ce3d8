"""Backtest speed: 30 days of 1-minute readings from 1,000 devices (≈ 43 million) through one
threshold-with-`for` rule, beside PostgreSQL's own rate of reading the same rows.

    IOC_BENCH_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres \\
      .venv/bin/python benchmarks/bench_backtest.py [--devices 1000] [--days 30] [--keep]

1. Creates database ``ioc_bench_backtest`` (reused with --keep when already filled), registers
   the flood gauges and generates the readings server-side (a tide with noise; a few gauges
   cross their BĐ III now and then).
2. Reference: PostgreSQL scanning the same rows in place (count and sum per series, one and two
   connections): what reading them costs at all, before any byte reaches Python.
3. ``ioc rules backtest`` as a user runs it, in a child process: wall time and peak RSS.
Prints a table and writes benchmarks/results/backtest-<time>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from report import save  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

from ioc.core.devices import Device  # noqa: E402
from ioc.storage import devices as store  # noqa: E402
from ioc.storage import migrate  # noqa: E402
from ioc.storage.maintenance import ensure_partitions_ahead  # noqa: E402

DB = "ioc_bench_backtest"
RULE = """rules:
  - id: flood-bd3
    type: threshold
    select: {kind: flood, metric: water_level_m}
    when: {op: ">=", threshold: device.bd3, clear: device.bd3 - 0.05}
    for: 10m
    labels: {severity: critical, domain: flood}
    annotations:
      summary_vi: "{device.name}: {value:.2f} m vượt BĐ III"
      summary_en: "{device.name}: {value:.2f} m above BĐ III"
"""


def prepare(admin_url: str, devices: int, days: int, keep: bool) -> tuple[str, float, float]:
    url = make_conninfo(admin_url, dbname=DB)
    end = (int(time.time()) // 86400) * 86400.0  # midnight UTC today
    start = end - days * 86400.0
    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DB,)).fetchone()
        if exists and keep:
            with psycopg.connect(url) as c:
                row = c.execute("SELECT count(*) FROM readings").fetchone()
                n = row[0] if row else 0
                if n == devices * days * 1440:
                    meta = c.execute(
                        "SELECT extract(epoch FROM min(time)), extract(epoch FROM max(time))"
                        " FROM readings"
                    ).fetchone()
                    assert meta is not None
                    print(f"reusing {DB}: {n:,} readings")
                    return url, float(meta[0]), float(meta[1]) + 60
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DB)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DB)))
    migrate(url)

    async def setup() -> None:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as c:
            for i in range(devices):
                await store.insert_device(
                    c,
                    Device(
                        f"g{i:04d}", "flood", "vi-thanh", None, f"Gauge {i}", 9.78, 105.47,
                        {"bd1": 0.55, "bd2": 0.65, "bd3": 0.75},
                    ),
                )  # fmt: skip
            await ensure_partitions_ahead(c, int(time.time() - start) + 86400)

    asyncio.run(setup())
    t0 = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as c:
        for i in range(devices):
            # semi-diurnal tide (12.42 h) with a fortnightly spring/neap swing and noise; the
            # device offset makes some gauges reach BĐ III (0.75 m) at spring tides
            c.execute(
                """INSERT INTO readings (time, device_id, metric, value)
                   SELECT to_timestamp(%(start)s + 60 * k), %(dev)s, 'water_level_m',
                          0.25 + %(off)s
                          + (0.3 + 0.1 * sin(2 * pi() * k / (14.77 * 1440)))
                            * sin(2 * pi() * k / 745.2 + %(phase)s)
                          + 0.01 * (random() - 0.5)
                   FROM generate_series(0, %(n)s - 1) AS k""",
                {
                    "start": start, "dev": f"g{i:04d}", "off": (i % 10) * 0.02,
                    "phase": i * 0.1, "n": days * 1440,
                },
            )  # fmt: skip
            if i % 100 == 99:
                print(f"  generated {i + 1} devices ({time.perf_counter() - t0:.0f} s)")
        c.execute("VACUUM ANALYZE readings")
    return url, start, end


async def scan_rate(url: str, connections: int) -> float:
    """PostgreSQL reading every row of every series (count and sum per series): the floor of
    any backtest that reads stored readings, without moving them to a client."""
    async with await psycopg.AsyncConnection.connect(url) as c:
        cur = await c.execute("SELECT id FROM devices ORDER BY id")
        queue = [r[0] for r in await cur.fetchall()]

    async def worker() -> None:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as c:
            while queue:
                dev = queue.pop()
                await c.execute(
                    "SELECT count(*), sum(value) FROM readings WHERE device_id = %s"
                    " AND metric = 'water_level_m'",
                    (dev,),
                )

    started = time.perf_counter()
    async with asyncio.TaskGroup() as tg:
        for _ in range(connections):
            tg.create_task(worker())
    return time.perf_counter() - started


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--devices", type=int, default=1000)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--keep", action="store_true", help="reuse the filled database if present")
    args = ap.parse_args()
    admin = os.environ.get("IOC_BENCH_DATABASE_URL")
    if not admin:
        print("set IOC_BENCH_DATABASE_URL (a role that may CREATE DATABASE)", file=sys.stderr)
        return 2
    t = time.perf_counter()
    url, start, end = prepare(admin, args.devices, args.days, args.keep)
    prepare_s = time.perf_counter() - t
    rows = args.devices * args.days * 1440
    asyncio.run(scan_rate(url, 2))  # warm the cache, as a backtest run after another would be
    scan1_s = asyncio.run(scan_rate(url, 1))
    scan2_s = asyncio.run(scan_rate(url, 2))
    rule = ROOT / "benchmarks" / "results" / "backtest-rule.yaml"
    rule.parent.mkdir(parents=True, exist_ok=True)
    rule.write_text(RULE)
    env = {k: v for k, v in os.environ.items() if not k.startswith("IOC_")}
    env["IOC_DATABASE_URL"] = url
    frm = datetime.fromtimestamp(start, UTC).isoformat()
    to = datetime.fromtimestamp(end, UTC).isoformat()
    ioc = Path(sys.executable).with_name("ioc")
    t = time.perf_counter()
    out = subprocess.run(
        [str(ioc), "rules", "backtest", str(rule), "--from", frm, "--to", to],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    backtest_s = time.perf_counter() - t
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    result = {
        "time": datetime.now(UTC).isoformat(),
        "devices": args.devices,
        "days": args.days,
        "readings": rows,
        "prepare_s": round(prepare_s, 1),
        "scan_1_connection_s": round(scan1_s, 2),
        "scan_1_rows_per_s": round(rows / scan1_s),
        "scan_2_connections_s": round(scan2_s, 2),
        "scan_2_rows_per_s": round(rows / scan2_s),
        "backtest_s": round(backtest_s, 2),
        "backtest_rows_per_s": round(rows / backtest_s),
        "backtest_vs_scan_2": round(scan2_s / backtest_s, 3),
        "backtest_peak_rss_mb": round(peak_kb / 1024),
        "target_s": 60,
        "backtest_output": out.stdout.strip().splitlines()[:6],
    }
    print(json.dumps(result, indent=2, ensure_ascii=False))
    print(f"written {save('backtest', result)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
