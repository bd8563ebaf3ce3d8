"""Kill the ingest process with SIGKILL mid-stream: after a restart every message is stored once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import psycopg
import pytest

from ioc.core.devices import Device
from ioc.core.settings import Settings
from ioc.core.topics import device_topic
from ioc.storage import devices as store
from tests.conftest import MqttPublisher, eventually

ROOT = Path(__file__).resolve().parents[1]
DEVICES = 200
PER_DEVICE = 100  # 20,000 messages in all

pytestmark = pytest.mark.slow


def ingest_process(settings: Settings, **overrides: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "IOC_DATABASE_URL": settings.database_url or "",
        "IOC_MQTT_URL": settings.mqtt_url or "",
        "IOC_MQTT_TOPIC_PREFIX": settings.mqtt_topic_prefix,
        "IOC_MQTT_CLIENT_ID": settings.mqtt_client_id,
        "IOC_LOG_LEVEL": "WARNING",
        **overrides,
    }
    return subprocess.Popen([sys.executable, "-m", "ioc", "ingest"], cwd=ROOT, env=env)


async def stored(db: psycopg.AsyncConnection) -> int:
    cur = await db.execute("SELECT count(*) FROM readings WHERE metric = 'water_level_m'")
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def test_sigkill_mid_stream_loses_and_duplicates_nothing(
    settings: Settings, db: psycopg.AsyncConnection, publisher: MqttPublisher
) -> None:
    devices = [
        Device(f"crash-{i:03d}", "flood", "vi-thanh", None, f"gauge {i}", 9.78, 105.47)
        for i in range(DEVICES)
    ]
    for d in devices:
        await store.insert_device(db, d)
    # Throttled (small batches, long linger) so that the kill lands while most of the stream is
    # still un-acknowledged in the broker's in-flight window.
    throttled = {"IOC_INGEST_BATCH_MAX": "100", "IOC_INGEST_LINGER_MS": "100"}
    proc = ingest_process(settings, **throttled)
    try:
        probe = devices[0]
        status = device_topic(
            settings.mqtt_topic_prefix, probe.city, probe.kind, probe.id, "status"
        )
        # Retained: delivered whenever the worker's subscription comes up.
        publisher.publish(status, b"online", retain=True)
        await eventually(lambda: _online(db, probe.id), timeout=60)
        t0 = time.time() - 3600
        messages = [
            (
                device_topic(settings.mqtt_topic_prefix, d.city, d.kind, d.id, "telemetry"),
                orjson.dumps(
                    {"ts": int((t0 + k) * 1000), "seq": k, "metrics": {"water_level_m": k / 1000}}
                ),
            )
            for k in range(PER_DEVICE)
            for d in devices
        ]
        publisher.publish_many(messages)
        await eventually(lambda: _at_least(db, 2000), timeout=120)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        at_kill = await stored(db)
        assert at_kill < len(messages), "the kill came too late to test recovery"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    proc = ingest_process(settings)
    try:
        await eventually(lambda: _at_least(db, len(messages)), timeout=180)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    cur = await db.execute(
        "SELECT count(*), count(DISTINCT (device_id, time)) FROM readings"
        " WHERE metric = 'water_level_m'"
    )
    assert await cur.fetchone() == (len(messages), len(messages))
    cur = await db.execute("SELECT count(*) FROM dead_letters")
    assert await cur.fetchone() == (0,)
    publisher.publish(status, b"", retain=True)  # clear the retained message from the broker


async def _online(db: psycopg.AsyncConnection, device_id: str) -> bool:
    cur = await db.execute("SELECT online FROM device_state WHERE device_id = %s", (device_id,))
    row = await cur.fetchone()
    return bool(row and row[0])


async def _at_least(db: psycopg.AsyncConnection, n: int) -> bool:
    return await stored(db) >= n
