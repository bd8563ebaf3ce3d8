"""Citizen reports posted over Open311 reach the rules once, like those relayed over MQTT (real
PostgreSQL and broker; the shipped `reports-cluster` rule: 3 reports of one category in one ward
within 6 h). Before, only MQTT reports reached the rules (docs/rules.md, "Citizen reports reach the rules once")."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
import pytest
import yaml

from ioc.app.runtime import Runtime
from ioc.core.settings import Settings
from ioc.core.topics import report_topic
from ioc.rules.language import DEFAULT_PACK
from ioc.storage import reports as report_store
from ioc.storage import tokens
from tests.conftest import TOKEN, MqttPublisher, eventually, running_service

AUTH = {"Authorization": f"Bearer {TOKEN}"}
VI_TAN = {"lat": "9.7845", "long": "105.47"}  # former Phường V, now phường Vị Tân (Cần Thơ)
SUMMARY_3 = "3 phản ánh về ngập nước tại phường Vị Tân trong 6 giờ"


@pytest.fixture
def cluster_settings(settings: Settings, tmp_path: Path) -> Settings:
    pack = yaml.safe_load((DEFAULT_PACK / "default.yaml").read_text(encoding="utf-8"))
    (cluster,) = [r for r in pack["rules"] if r["id"] == "reports-cluster"]
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "cluster.yaml").write_text(
        yaml.safe_dump({"rules": [cluster]}, allow_unicode=True), encoding="utf-8"
    )
    # a long tick: the tests drive time themselves
    return settings.model_copy(update={"rules_dir": rules, "rules_tick_s": 3600.0})


@pytest.fixture
async def api_key(db: psycopg.AsyncConnection) -> str:
    _, secret = await tokens.create(db, name="citizen-app", role="open311")
    return secret


async def post_report(http: httpx.AsyncClient, api_key: str, words: str) -> int:
    r = await http.post(
        "/open311/v2/requests.json",
        data={"api_key": api_key, "service_code": "ngap-nuoc", "description": words, **VI_TAN},
    )
    assert r.status_code == 201, r.text
    return int(r.json()[0]["service_request_id"])


async def firing(http: httpx.AsyncClient) -> list[dict[str, Any]]:
    r = await http.get("/api/v1/alerts", params={"state": "firing"}, headers=AUTH)
    assert r.status_code == 200, r.text
    result: list[dict[str, Any]] = r.json()
    return result


async def taken(db: psycopg.AsyncConnection, ids: list[int]) -> bool:
    cur = await db.execute(
        "SELECT count(*) FROM reports WHERE id = ANY(%s) AND rules_at IS NOT NULL", (ids,)
    )
    row = await cur.fetchone()
    return row is not None and row[0] == len(ids)


async def settled(runtime: Runtime, db: psycopg.AsyncConnection, ids: list[int]) -> None:
    """The rules service has taken and evaluated ``ids`` (its LISTEN did, on their NOTIFY): the
    rows are marked, and a call of our own waits on the service's lock for the evaluation in
    flight; then a tick (timers, storing)."""
    assert runtime.rules is not None
    await eventually(lambda: taken(db, ids))
    assert await runtime.rules.take_posted_reports() == 0  # nothing left for anyone
    await runtime.rules.tick(time.time())


async def test_reports_posted_over_http_fire_the_shipped_cluster_rule(
    cluster_settings: Settings, api_key: str, db: psycopg.AsyncConnection
) -> None:
    async with running_service(cluster_settings) as (runtime, http):
        ids = [await post_report(http, api_key, "Nước ngập qua mặt đường.")]
        ids.append(await post_report(http, api_key, "Ngập sâu trước chợ, xe chết máy."))
        await settled(runtime, db, ids)
        assert await firing(http) == []  # two are not a cluster
        ids.append(await post_report(http, api_key, "Hẻm ngập tới đầu gối."))
        await settled(runtime, db, ids)
        (alert,) = await eventually(lambda: firing(http))
        assert alert["rule"] == "reports-cluster"
        assert (alert["labels"]["ward"], alert["labels"]["category"]) == (
            "phuong-vi-tan", "ngap-nuoc"
        )  # fmt: skip
        assert alert["annotations"]["summary_vi"] == SUMMARY_3


async def test_mqtt_reports_are_counted_once_beside_posted_ones(
    cluster_settings: Settings, api_key: str, db: psycopg.AsyncConnection, publisher: MqttPublisher
) -> None:
    """Two Zalo relays over MQTT (counted with ingest's batch, never taken from the table) and
    one Open311 post make three: a second count of the relays would fire at two."""
    async with running_service(cluster_settings) as (runtime, http):
        assert runtime.ingest is not None and runtime.rules is not None
        committed = runtime.ingest.committed
        now = time.time()
        for n in range(2):
            payload = {"id": f"z-{n}", "ts": int((now - 60 * (2 - n)) * 1000),
                       "category": "ngap-nuoc", "lat": 9.7845, "lon": 105.47,
                       "description": "Nước ngập qua mặt đường."}  # fmt: skip
            publisher.publish(
                report_topic(cluster_settings.mqtt_topic_prefix, "vi-thanh", "zalo"),
                orjson.dumps(payload),
            )

        async def both_committed() -> bool:
            return bool(runtime.ingest and runtime.ingest.committed >= committed + 2)

        await eventually(both_committed)
        assert await runtime.rules.take_posted_reports() == 0  # MQTT rows are not the table's
        await runtime.rules.tick(time.time())
        assert await firing(http) == []
        cur = await db.execute("SELECT count(*) FROM reports WHERE rules_at IS NULL")
        assert await cur.fetchone() == (2,)  # the relays: never marked, never claimed

        posted = await post_report(http, api_key, "Ngập sâu trước chợ.")
        await settled(runtime, db, [posted])
        (alert,) = await eventually(lambda: firing(http))
        assert alert["annotations"]["summary_vi"] == SUMMARY_3


async def test_a_restart_neither_counts_again_nor_misses_a_posted_report(
    cluster_settings: Settings, api_key: str, db: psycopg.AsyncConnection
) -> None:
    """Two posts taken, then a restart (the engine's counts start afresh): they are not taken
    again, the report committed while the rules were down is, so the count after it is 1 — one
    more post makes 2 (no alert; it would fire at 3 had the two been counted again), a second
    makes 3 (fires; it would not had the one from the pause been missed)."""
    async with running_service(cluster_settings) as (runtime, http):
        ids = [await post_report(http, api_key, f"Ngập lần {n}.") for n in range(2)]
        await settled(runtime, db, ids)
    # committed while no rules service runs (another API process kept serving Open311)
    async with db.transaction():
        key = report_store.open311_dedupe_key(
            client="citizen-app", service_code="ngap-nuoc", lat=9.7845, long=105.47,
            address_string=None, address_id=None, description="Ngập khi đang khởi động lại.",
            media_url=None, device_id=None, account_id=None,
        )  # fmt: skip
        paused, _, created = await report_store.insert(
            db,
            report_store.NewReport(
                dedupe_key=key, source="open311", service_code="ngap-nuoc",
                description="Ngập khi đang khởi động lại.", reported_at=datetime.now(UTC),
                city="vi-thanh", ward="phuong-vi-tan", lat=9.7845, lon=105.47,
                client="citizen-app",
            ),
        )  # fmt: skip
        assert created
    async with running_service(cluster_settings) as (runtime, http):
        ids.append(paused)
        ids.append(await post_report(http, api_key, "Ngập sau khi khởi động lại."))
        await settled(runtime, db, ids)
        assert await firing(http) == []
        ids.append(await post_report(http, api_key, "Vẫn còn ngập."))
        await settled(runtime, db, ids)
        (alert,) = await eventually(lambda: firing(http))
        assert alert["annotations"]["summary_vi"] == SUMMARY_3
