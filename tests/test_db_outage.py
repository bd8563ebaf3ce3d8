"""Stop the database for a few seconds mid-stream: nothing is lost, and /readyz tells the truth."""

from __future__ import annotations

import asyncio
import time

import httpx
import orjson
import psycopg
import pytest

from ioc.app.runtime import run_service
from ioc.core.settings import Settings
from ioc.core.topics import device_topic
from tests.conftest import TOKEN, MqttPublisher, eventually
from tests.proxy import database_behind_proxy

AUTH = {"Authorization": f"Bearer {TOKEN}"}

pytestmark = pytest.mark.slow


async def test_database_outage_loses_nothing(
    settings: Settings, db: psycopg.AsyncConnection, publisher: MqttPublisher
) -> None:
    proxy, proxied = await database_behind_proxy(settings)
    try:
        async with run_service(proxied) as runtime:
            assert runtime.ingest is not None
            await runtime.ingest.wait_connected(20)
            device = next(d for d in runtime.site.devices if d.kind == "flood")
            topic = device_topic(
                settings.mqtt_topic_prefix, device.city, device.kind, device.id, "telemetry"
            )
            t0 = time.time() - 3000

            def batch(lo: int, hi: int) -> list[tuple[str, bytes]]:
                return [
                    (
                        topic,
                        orjson.dumps(
                            {"ts": int((t0 + i) * 1000), "metrics": {"water_level_m": 0.5}}
                        ),
                    )
                    for i in range(lo, hi)
                ]

            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{runtime.http_port}") as http:
                publisher.publish_many(batch(0, 500))
                await eventually(lambda: _count(db, 500))
                assert (await http.get("/readyz", headers=AUTH)).status_code == 200

                await proxy.stop()  # the database is gone
                publisher.publish_many(batch(500, 1500))
                report = await eventually(lambda: _not_ready(http), timeout=30)
                assert report["checks"]["database"]["ok"] is False
                await asyncio.sleep(3)  # the outage lasts a few seconds (not a timing assertion)
                assert not await _count(db, 501), "nothing can be committed while it is down"

                await proxy.start()  # and back
                await eventually(lambda: _count(db, 1500), timeout=60)
                await eventually(lambda: _ready(http), timeout=30)
    finally:
        await proxy.stop()
    cur = await db.execute("SELECT count(*), count(DISTINCT time) FROM readings")
    assert await cur.fetchone() == (1500, 1500)


async def _count(db: psycopg.AsyncConnection, n: int) -> bool:
    cur = await db.execute("SELECT count(*) FROM readings")
    row = await cur.fetchone()
    return bool(row and row[0] >= n)


async def _not_ready(http: httpx.AsyncClient) -> dict[str, object] | None:
    r = await http.get("/readyz", headers=AUTH)
    return r.json() if r.status_code == 503 else None


async def _ready(http: httpx.AsyncClient) -> bool:
    return (await http.get("/readyz", headers=AUTH)).status_code == 200
