"""Shared fixtures: a real PostgreSQL and a real MQTT broker, each test isolated.

Services: ``IOC_TEST_DATABASE_URL`` (a role that may CREATE DATABASE) and ``IOC_TEST_MQTT_URL``
point the suite at running servers (CI uses the machine's); without them the suite starts
embedded ones once per session. The storage flavour follows the server: pointed at a PostgreSQL
with TimescaleDB preloaded, the whole suite runs on the timescale flavour (README, "Tests").
Isolation: every test gets its own database, cloned from a migrated template, and its own MQTT
topic prefix and client ids.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from ioc.core.devices import Device
from ioc.core.settings import Settings
from ioc.storage import Flavour, migrate

TOKEN = "test-admin-token"


def fallbacks_of(base: Path) -> list[Path]:
    """The embedded servers' /tmp fallback directories (ioc.embedded.process) of data dirs
    under ``base``; other runs' are not counted: the machine may be running other suites."""
    from ioc.embedded.process import FALLBACK_PREFIX, FALLBACK_ROOT

    found = []
    for outer in FALLBACK_ROOT.glob(f"{FALLBACK_PREFIX}*"):
        try:
            origin = Path((outer / "origin").read_text().strip())
        except OSError:
            continue
        if origin.is_relative_to(base):
            found.append(outer)
    return found


@pytest.fixture(scope="session", autouse=True)
def nothing_left_in_tmp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The suite leaves nothing in /tmp: checked after every other session fixture (the
    embedded servers among them) has been torn down; an error at the last test's teardown."""
    base = tmp_path_factory.getbasetemp()
    yield
    left = fallbacks_of(base)
    assert not left, f"embedded servers' /tmp directories left behind: {left}"


@pytest.fixture(scope="session")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Admin URL of the PostgreSQL server the suite uses."""
    url = os.environ.get("IOC_TEST_DATABASE_URL")
    if url:
        yield url
        return
    from ioc.embedded import EmbeddedPostgres

    with EmbeddedPostgres(tmp_path_factory.mktemp("postgres")) as pg:
        yield pg.url


@pytest.fixture(scope="session")
def mqtt_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = os.environ.get("IOC_TEST_MQTT_URL")
    if url:
        yield url
        return
    from ioc.embedded import EmbeddedMosquitto

    with EmbeddedMosquitto(tmp_path_factory.mktemp("mosquitto")) as broker:
        yield broker.url


def _with_db(url: str, dbname: str) -> str:
    return make_conninfo(url, dbname=dbname)


@pytest.fixture(scope="session")
def template_db(server_url: str) -> Iterator[tuple[str, Flavour]]:
    """A database migrated once; each test clones it (much faster than migrating per test).

    Marked a template (``IS_TEMPLATE``): TimescaleDB's background scheduler keeps a session in
    every database with the extension, and ``CREATE DATABASE … TEMPLATE`` refuses a source
    with sessions; its launcher leaves template databases alone, and the scheduler already
    started by the migration is ended here.
    """
    name = f"ioc_tpl_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    flavour = migrate(_with_db(server_url, name))
    if flavour is Flavour.TIMESCALE:
        # Tests run upkeep themselves, at the times they choose (as `settings` does for the
        # plain flavour): TimescaleDB's policy jobs are unscheduled in every clone, and a test
        # runs one with CALL run_job. (Scheduled, they also fail on PostgreSQL 15.20 with
        # "cannot drop portal" midway through a batched refresh.)
        with psycopg.connect(_with_db(server_url, name), autocommit=True) as conn:
            conn.execute(
                "SELECT alter_job(job_id, scheduled => false)"
                " FROM timescaledb_information.jobs WHERE job_id >= 1000"
            )
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("ALTER DATABASE {} IS_TEMPLATE true").format(sql.Identifier(name)))
        _end_sessions(conn, name)
    yield name, flavour
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("ALTER DATABASE {} IS_TEMPLATE false").format(sql.Identifier(name)))
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def _end_sessions(conn: psycopg.Connection, dbname: str) -> None:
    conn.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE datname = %s AND pid <> pg_backend_pid()",
        (dbname,),
    )


def clone_database(server_url: str, template: str, name: str) -> None:
    """``CREATE DATABASE name TEMPLATE template``; a session still on the template (a TimescaleDB
    scheduler that was starting when the template was marked) is ended and the copy retried."""
    import time

    with psycopg.connect(server_url, autocommit=True) as conn:
        for attempt in range(50):
            try:
                conn.execute(
                    sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                        sql.Identifier(name), sql.Identifier(template)
                    )
                )
                return
            except psycopg.errors.ObjectInUse:
                if attempt == 49:
                    raise
                _end_sessions(conn, template)
                time.sleep(0.1)


@contextlib.contextmanager
def fresh_database(server_url: str, prefix: str = "ioc_fresh") -> Iterator[str]:
    """A new, empty database on ``server_url`` (not cloned, not migrated), dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield _with_db(server_url, name)
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@pytest.fixture
def database_url(server_url: str, template_db: tuple[str, Flavour]) -> Iterator[str]:
    name = f"ioc_t_{uuid.uuid4().hex[:12]}"
    clone_database(server_url, template_db[0], name)
    yield _with_db(server_url, name)
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@pytest.fixture
def flavour(template_db: tuple[str, Flavour]) -> Flavour:
    return template_db[1]


@pytest.fixture
def topic_prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}/hg"


@pytest.fixture
def settings(database_url: str, mqtt_url: str, topic_prefix: str, tmp_path: Path) -> Settings:
    return Settings(
        database_url=database_url,
        mqtt_url=mqtt_url,
        mqtt_topic_prefix=topic_prefix,
        mqtt_client_id=f"ingest-{uuid.uuid4().hex[:10]}",
        admin_token=TOKEN,
        http_port=0,
        data_dir=tmp_path,
        ingest_linger_ms=5,
        maintenance_interval_s=3600,  # tests run upkeep themselves, at the times they choose
    )


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[psycopg.AsyncConnection]:
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        yield conn


def dbname(url: str) -> str:
    return str(conninfo_to_dict(url)["dbname"])


FLOOD = Device(
    "vt-flood-01",
    "flood",
    "vi-thanh",
    "phuong-5",
    "Trạm Vị Thanh",
    9.784,
    105.47,
    {"bd1": 0.55, "bd2": 0.65, "bd3": 0.75},
)
LAMP = Device(
    "vt-lamp-0001",
    "lighting",
    "vi-thanh",
    "phuong-5",
    "Đèn 1",
    9.785,
    105.471,
    {"cabinet": "vt-cab-01", "nominal_w": 100},
)


class MqttPublisher:
    """A real paho client for tests; ``publish`` returns once the broker acknowledged."""

    def __init__(self, url: str) -> None:
        import paho.mqtt.client as mqtt

        from ioc.core.settings import MqttAddress

        addr = MqttAddress(url)
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=f"test-pub-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv5,
        )
        if addr.username:
            self.client.username_pw_set(addr.username, addr.password)
        self.client.max_queued_messages_set(0)
        self.client.connect(addr.host, addr.port)
        self.client.loop_start()

    def publish(
        self, topic: str, payload: bytes | str, *, qos: int = 1, retain: bool = False
    ) -> None:
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        info.wait_for_publish(timeout=30)

    def publish_many(self, items: list[tuple[str, bytes]], qos: int = 1) -> None:
        infos = [self.client.publish(t, p, qos=qos) for t, p in items]
        for info in infos:
            info.wait_for_publish(timeout=60)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def publisher(mqtt_url: str) -> Iterator[MqttPublisher]:
    pub = MqttPublisher(mqtt_url)
    yield pub
    pub.close()


async def eventually(check, *, timeout: float = 30.0, interval: float = 0.05):  # type: ignore[no-untyped-def]  # noqa: ASYNC109
    """Poll an async ``check`` until it returns a truthy value; fail after ``timeout``.

    A bound against hangs, not a speed assertion: the timeout is generous on purpose.
    """
    import asyncio
    import time

    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s (last value: {last!r})")


@contextlib.asynccontextmanager
async def running_service(settings: Settings) -> AsyncIterator[tuple[Any, Any]]:
    """The whole service (ingest, rules, API) on ``settings``, connected to the broker, and an
    HTTP client for its API: ``(runtime, http)``."""
    import httpx

    from ioc.app.runtime import run_service

    async with run_service(settings) as runtime:
        if runtime.ingest is not None:
            await runtime.ingest.wait_connected(20)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{runtime.http_port}") as http:
            yield runtime, http
