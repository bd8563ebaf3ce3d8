"""Where the ingest writer's database time goes: each statement of its transaction, timed.

    IOC_BENCH_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres \\
      .venv/bin/python benchmarks/bench_writer.py [--batch 5000] [--batches 10]

One ``BatchWriter`` (one connection, no MQTT) writes ``--batches`` batches shaped like
bench_ingest.py's backlog (2,000 devices, 4 metrics per message) into a fresh database; its
steps are timed on the client (round trips included) and printed with their share of the total:
``prepare`` (the Python that builds the batch), the readings COPY, the commit pipeline (upserts,
feed rows, COMMIT) and every other statement. The database is dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid
from typing import Any

import psycopg
from bench_ingest import make_devices  # benchmarks/ is on sys.path when run as a script
from psycopg import sql
from psycopg.conninfo import make_conninfo

from ioc.ingest import writer as writer_module
from ioc.ingest.handoff import Delivery
from ioc.ingest.records import Telemetry
from ioc.ingest.writer import BatchWriter
from ioc.storage import devices as store
from ioc.storage import feed as feed_module
from ioc.storage import migrate

FLOOD = (("water_level_m", 0.5), ("battery_v", 3.9), ("rain_mm", 0.0), ("signal_dbm", -70.0))
LAMP = (("power_w", 90.0), ("voltage_v", 221.0), ("dim_level_pct", 80.0), ("current_a", 0.4))

timings: dict[str, float] = {}


def _timed(name: str, seconds: float) -> None:
    timings[name] = timings.get(name, 0.0) + seconds


def instrument() -> None:
    """Time the writer's steps: building the batch in Python, the readings COPY, the commit
    pipeline (upserts, feed rows, COMMIT: one round trip), and every other statement."""
    conn_execute = psycopg.AsyncConnection.execute
    prepare = writer_module.prepare
    copy_readings = writer_module._copy_readings
    append_and_commit = feed_module.append_and_commit

    async def on_conn(self: Any, query: Any, params: Any = None, **kw: Any) -> Any:
        if self._pipeline is not None:  # queued, timed with its pipeline
            return await conn_execute(self, query, params, **kw)
        t = time.perf_counter()
        try:
            return await conn_execute(self, query, params, **kw)
        finally:
            _timed(" ".join(str(query).split())[:64], time.perf_counter() - t)

    def on_prepare(records: Any, places: Any) -> Any:
        t = time.perf_counter()
        try:
            return prepare(records, places)
        finally:
            _timed("prepare (Python: COPY text, newest points, feed rows)", time.perf_counter() - t)

    async def on_copy(conn: Any, rows: str) -> None:
        t = time.perf_counter()
        try:
            await copy_readings(conn, rows)
        finally:
            _timed("COPY readings", time.perf_counter() - t)

    async def on_commit(conn: Any, events: Any, *, first: Any = ()) -> Any:
        t = time.perf_counter()
        try:
            return await append_and_commit(conn, events, first=first)
        finally:
            _timed("pipeline: upserts, feed rows, COMMIT", time.perf_counter() - t)

    psycopg.AsyncConnection.execute = on_conn  # type: ignore[method-assign]
    writer_module.prepare = on_prepare
    writer_module._copy_readings = on_copy
    feed_module.append_and_commit = on_commit


async def run(server: str, batch: int, batches: int) -> None:
    name = f"ioc_bench_writer_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(server, autocommit=True) as c:
        c.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = make_conninfo(server, dbname=name)
    try:
        flavour = migrate(url)
        devices = [d for d in make_devices(2000) if d.id.startswith(("b-flood", "b-lamp"))]
        async with await psycopg.AsyncConnection.connect(url) as conn:
            await store.sync_site_devices(conn, devices)
            await conn.commit()
            places = await store.device_places(conn)
        instrument()
        timings.clear()
        writer = BatchWriter(url, flavour)
        writer.places = places
        t0 = time.time() - 3 * 86400
        k = 0
        total = 0.0
        for _ in range(batches):
            items = []
            for _ in range(batch):
                d = devices[k % len(devices)]
                k += 1
                rec = Telemetry(d.id, t0 + k * 0.01, None, FLOOD if d.kind == "flood" else LAMP)
                items.append(Delivery(0, 1, 0, "t", b"", rec))
            started = time.perf_counter()
            await writer.write(items)
            total += time.perf_counter() - started
        await writer.close()
        rows = batches * batch * 4
        print(
            f"{batches} batches of {batch} messages: {total:.2f} s = "
            f"{batches * batch / total:,.0f} msg/s = {rows / total:,.0f} rows/s"
        )
        for what, seconds in sorted(timings.items(), key=lambda kv: -kv[1]):
            print(f"{seconds / batches * 1000:8.1f} ms/batch {seconds / total:6.1%}  {what}")
    finally:
        with psycopg.connect(server, autocommit=True) as c:
            c.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=5000, help="messages per batch")
    ap.add_argument("--batches", type=int, default=10)
    args = ap.parse_args()
    server = os.environ.get("IOC_BENCH_DATABASE_URL")
    if not server:
        print("set IOC_BENCH_DATABASE_URL (a role that may CREATE DATABASE)", file=sys.stderr)
        return 2
    asyncio.run(run(server, args.batch, args.batches))
    return 0


if __name__ == "__main__":
    sys.exit(main())
