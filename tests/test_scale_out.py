"""Scale-out as deployed: three `ioc ingest` workers on one MQTT v5 shared subscription, one
`ioc rules run`, two `ioc serve` API processes (IOC_SERVE_INGEST=false) — each a real process
with the environment the compose file gives it — while telemetry flows and one worker is
killed (SIGKILL) mid-stream and restarted by its "supervisor" with the same client id.

Nothing may be lost (every reading stored once), no alert missed or doubled, and both API
processes push the same alerts on /ws. Every process must then stop cleanly on SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
import pytest
from websockets.asyncio.client import connect

from ioc.core.topics import device_topic
from ioc.embedded import EmbeddedMosquitto
from tests.conftest import TOKEN, MqttPublisher, eventually

RULE = """
rules:
  - id: scale-high-water
    type: threshold
    select: {kind: flood, metric: water_level_m}
    when: {op: ">=", threshold: 1.0, clear: 0.9}
    labels: {severity: critical, domain: flood}
    annotations:
      summary_vi: "{device.name}: nước cao {value:.2f} m"
      summary_en: "{device.name}: high water {value:.2f} m"
"""
LAMPS = 300
PER_LAMP = 20
STATIONS = ("vt-flood-01", "vt-flood-02", "vt-flood-03", "nb-flood-01", "nb-flood-02",
            "nb-flood-03")  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Proc:
    """One `ioc` command as a child process; its log lines kept for readiness checks."""

    def __init__(self, name: str, env: dict[str, str], *argv: str) -> None:
        self.name, self.env, self.argv = name, env, argv
        self.lines: list[str] = []
        self.proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> Proc:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "ioc", *self.argv, env=self.env,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        self._reader = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        async for raw in self.proc.stderr:
            self.lines.append(raw.decode(errors="replace").rstrip())

    async def logged(self, text: str) -> bool:
        return any(text in line for line in self.lines)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)

    async def stop(self) -> int:
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = await asyncio.wait_for(self.proc.wait(), 60)
        finally:
            if self.proc.returncode is None:
                self.proc.kill()
            if self._reader is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._reader, 5)
        return code

    def log_tail(self) -> str:
        return f"--- {self.name} ---\n" + "\n".join(self.lines[-30:])


async def _watch(port: int, frames: list[dict[str, Any]]) -> None:
    url = f"ws://127.0.0.1:{port}/ws?token={TOKEN}&types=alert"
    async with connect(url) as ws:
        async for raw in ws:
            frames.append(orjson.loads(raw))


@pytest.fixture
def deployed_broker(tmp_path: Path) -> Iterator[str]:
    """A Mosquitto configured as deployed (deploy/mosquitto, the embedded launcher): its
    offline-session queue is lifted. On a broker with the default max_queued_messages (1000)
    a killed worker's session — its unacknowledged in-flight window (Receive Maximum 20,000)
    plus what arrives while it is away — overflows and Mosquitto silently drops the rest, which
    docs/operations.md warns about; this test is about our processes, not that setting."""
    with EmbeddedMosquitto(tmp_path / "broker") as broker:
        yield broker.url


async def test_three_workers_two_apis_one_worker_killed_nothing_lost_no_alert_doubled(
    database_url: str, deployed_broker: str, topic_prefix: str, tmp_path: Path,
) -> None:  # fmt: skip
    mqtt_url = deployed_broker
    publisher = MqttPublisher(mqtt_url)
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    (rules_dir / "scale.yaml").write_text(RULE, encoding="utf-8")
    run = uuid.uuid4().hex[:8]
    env = {
        **os.environ,
        "IOC_DATABASE_URL": database_url, "IOC_MQTT_URL": mqtt_url,
        "IOC_MQTT_TOPIC_PREFIX": topic_prefix, "IOC_ADMIN_TOKEN": TOKEN,
        "IOC_RULES_IN_INGEST": "false", "IOC_RULES_DIR": str(rules_dir),
        "IOC_DATA_DIR": str(tmp_path), "IOC_MAINTENANCE_INTERVAL_S": "3600",
        "IOC_INGEST_LINGER_MS": "5", "IOC_LOG_LEVEL": "INFO",
        "IOC_MQTT_SESSION_EXPIRY_S": "600",  # the test's sessions leave the broker soon after
    }  # fmt: skip
    workers = [
        Proc(f"ingest-{i}", {**env, "IOC_MQTT_SHARED_GROUP": f"ioc{run}",
                             "IOC_MQTT_CLIENT_ID": f"ingest-{run}-{i}"}, "ingest")
        for i in range(3)
    ]  # fmt: skip
    rules = Proc("rules", {**env, "IOC_MQTT_CLIENT_ID": f"ioc-{run}"}, "rules", "run")
    ports = [_free_port(), _free_port()]
    apis = [
        Proc(f"api-{i}", {**env, "IOC_SERVE_INGEST": "false", "IOC_HTTP_PORT": str(port),
                          "IOC_MQTT_CLIENT_ID": f"api-{run}-{i}"}, "serve")
        for i, port in enumerate(ports)
    ]  # fmt: skip
    everyone = [*workers, rules, *apis]
    watchers: list[asyncio.Task[None]] = []
    seen: list[list[dict[str, Any]]] = [[], []]
    try:
        for p in everyone:
            await p.start()
        for p in [*workers, rules]:
            await eventually(lambda p=p: p.logged("subscribed at QoS 1"), timeout=60)
        async with httpx.AsyncClient() as http:
            for port in ports:

                async def healthy(port: int = port) -> bool:
                    with contextlib.suppress(httpx.HTTPError):
                        r = await http.get(f"http://127.0.0.1:{port}/healthz")
                        return r.status_code == 200
                    return False

                await eventually(healthy, timeout=60)
        watchers = [asyncio.create_task(_watch(port, seen[i])) for i, port in enumerate(ports)]
        await asyncio.sleep(0.5)  # both /ws clients connected

        # -- telemetry: 300 lamps × 20 readings and 6 stations crossing 1 m, in 12 chunks;
        # worker 1 is killed after the 4th chunk and restarted after the 6th
        t0 = int(time.time()) - 3 * 3600
        with psycopg.connect(database_url) as conn:
            lamps = [r[0] for r in conn.execute(
                "SELECT id FROM devices WHERE kind = 'lighting' ORDER BY id LIMIT %s", (LAMPS,)
            ).fetchall()]  # fmt: skip
            cities = dict(conn.execute("SELECT id, city FROM devices").fetchall())
        messages = []
        for i in range(PER_LAMP):
            for lamp in lamps:
                topic = device_topic(topic_prefix, cities[lamp], "lighting", lamp, "telemetry")
                doc = {"ts": (t0 + 60 * i) * 1000, "metrics": {"power_w": 100.0 + i}}
                messages.append((topic, orjson.dumps(doc)))
            for station in STATIONS:
                topic = device_topic(topic_prefix, cities[station], "flood", station, "telemetry")
                level = 0.5 if i < PER_LAMP // 2 else 1.5
                doc = {"ts": (t0 + 60 * i) * 1000, "metrics": {"water_level_m": level}}
                messages.append((topic, orjson.dumps(doc)))
        chunk = len(messages) // 12 + 1
        for n in range(12):
            await asyncio.to_thread(publisher.publish_many, messages[n * chunk : (n + 1) * chunk])
            if n == 3:
                workers[1].kill()
                await workers[1].proc.wait()  # type: ignore[union-attr]
            if n == 5:
                await workers[1].start()  # the supervisor restarts it: same client id
            await asyncio.sleep(0.2)

        # -- every reading stored exactly once
        expected = len(messages)

        async def all_stored() -> bool:
            with psycopg.connect(database_url) as conn:
                row = conn.execute("SELECT count(*) FROM readings").fetchone()
            return bool(row and row[0] >= expected)

        await eventually(all_stored, timeout=240)  # generous on a loaded machine
        with psycopg.connect(database_url) as conn:
            assert conn.execute("SELECT count(*) FROM readings").fetchone() == (expected,)
            alerts = conn.execute(
                "SELECT id, device_id, state FROM alerts WHERE rule = 'scale-high-water'"
            ).fetchall()
        # -- one alert per station: none missed, none doubled
        assert sorted(a[1] for a in alerts) == sorted(STATIONS)
        assert {a[2] for a in alerts} == {"firing"}
        ids = {a[0] for a in alerts}

        async def both_pushed() -> bool:
            return all(
                {f["data"]["id"] for f in frames
                 if f["type"] == "alert" and f["data"]["state"] == "firing"} == ids
                for frames in seen
            )  # fmt: skip

        await eventually(both_pushed, timeout=30)
    except BaseException:
        for p in everyone:
            print(p.log_tail())
        raise
    finally:
        for task in watchers:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        codes = {p.name: await p.stop() for p in everyone if p.proc is not None}
        publisher.close()
    assert codes == dict.fromkeys(codes, 0), codes  # every process stopped cleanly on SIGTERM
