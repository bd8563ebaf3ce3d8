"""Every committed citizen report reaches the rules once, whatever its channel (Open311 POST, MQTT
relay) and wherever the rules run (in ingest, `ioc rules run`); real PostgreSQL and broker, the
shipped `reports-cluster` rule (3 reports of one category in one ward within 6 h). Before, only
MQTT reports reached the rules, and only in ingest (docs/rules.md, "Citizen reports reach the
rules once")."""

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

from ioc.alerting.service import RulesService
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


async def settled(rules: RulesService | None, db: psycopg.AsyncConnection, ids: list[int]) -> None:
    """The rules service has taken and evaluated ``ids`` (its LISTEN did, on their NOTIFY): the
    rows are marked, and a call of our own waits on the service's lock for the evaluation in
    flight; then a tick (timers, storing)."""
    assert rules is not None
    await eventually(lambda: taken(db, ids))
    assert await rules.take_reports() == 0  # nothing left for anyone
    await rules.tick(time.time())


def relay(publisher: MqttPublisher, settings: Settings, n: int, minutes_ago: float) -> None:
    """A Zalo relay of report ``z-{n}`` over MQTT, in phường Vị Tân."""
    payload = {"id": f"z-{n}", "ts": int((time.time() - minutes_ago * 60) * 1000),
               "category": "ngap-nuoc", "lat": 9.7845, "lon": 105.47,
               "description": "Nước ngập qua mặt đường."}  # fmt: skip
    publisher.publish(
        report_topic(settings.mqtt_topic_prefix, "vi-thanh", "zalo"), orjson.dumps(payload)
    )


async def report_ids(db: psycopg.AsyncConnection) -> list[int]:
    cur = await db.execute("SELECT id FROM reports ORDER BY id")
    return [row[0] for row in await cur.fetchall()]


async def test_reports_posted_over_http_fire_the_shipped_cluster_rule(
    cluster_settings: Settings, api_key: str, db: psycopg.AsyncConnection
) -> None:
    async with running_service(cluster_settings) as (runtime, http):
        ids = [await post_report(http, api_key, "Nước ngập qua mặt đường.")]
        ids.append(await post_report(http, api_key, "Ngập sâu trước chợ, xe chết máy."))
        await settled(runtime.rules, db, ids)
        assert await firing(http) == []  # two are not a cluster
        ids.append(await post_report(http, api_key, "Hẻm ngập tới đầu gối."))
        await settled(runtime.rules, db, ids)
        (alert,) = await eventually(lambda: firing(http))
        assert alert["rule"] == "reports-cluster"
        assert (alert["labels"]["ward"], alert["labels"]["category"]) == (
            "phuong-vi-tan", "ngap-nuoc"
        )  # fmt: skip
        assert alert["annotations"]["summary_vi"] == SUMMARY_3


async def test_mqtt_reports_are_counted_once_beside_posted_ones(
    cluster_settings: Settings, api_key: str, db: psycopg.AsyncConnection, publisher: MqttPublisher
) -> None:
    """Two Zalo relays over MQTT, one of them sent twice (a relay retrying: one row), and one
    Open311 post make three: a report counted with ingest's batch and again from the table, or a
    retried relay counted twice, would fire before the post."""
    async with running_service(cluster_settings) as (runtime, http):
        assert runtime.ingest is not None and runtime.rules is not None
        committed = runtime.ingest.committed
        relay(publisher, cluster_settings, 0, 2)
        relay(publisher, cluster_settings, 1, 1)

        async def committed_after(n: int) -> bool:
            return bool(runtime.ingest and runtime.ingest.committed >= committed + n)

        await eventually(lambda: committed_after(2))
        relay(publisher, cluster_settings, 1, 1)  # the same report again
        await eventually(lambda: committed_after(3))
        ids = await report_ids(db)
        assert len(ids) == 2
        await settled(runtime.rules, db, ids)
        assert await firing(http) == []

        ids.append(await post_report(http, api_key, "Ngập sâu trước chợ."))
        await settled(runtime.rules, db, ids)
        (alert,) = await eventually(lambda: firing(http))
        assert alert["annotations"]["summary_vi"] == SUMMARY_3


async def test_rules_as_their_own_worker_count_relayed_and_posted_reports(
    cluster_settings: Settings, api_key: str, db: psycopg.AsyncConnection, publisher: MqttPublisher
) -> None:
    """`ioc rules run` (IOC_RULES_IN_INGEST=false): its MQTT session does not subscribe to
    reports, yet the reports ingest stores and the ones posted over HTTP reach it, once."""
    from ioc.app.runtime import run_rules_worker

    split = cluster_settings.model_copy(update={"rules_in_ingest": False})
    async with running_service(split) as (runtime, http), run_rules_worker(split) as rules:
        assert runtime.rules is None  # this ingest only stores
        relay(publisher, split, 0, 2)
        relay(publisher, split, 1, 1)

        async def two_stored() -> bool:
            return len(await report_ids(db)) == 2

        await eventually(two_stored)
        await settled(rules, db, await report_ids(db))
        assert await firing(http) == []
        await post_report(http, api_key, "Ngập sâu trước chợ.")
        await settled(rules, db, await report_ids(db))
        (alert,) = await eventually(lambda: firing(http))
        assert alert["rule"] == "reports-cluster"
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
        await settled(runtime.rules, db, ids)
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
        await settled(runtime.rules, db, ids)
        assert await firing(http) == []
        ids.append(await post_report(http, api_key, "Vẫn còn ngập."))
        await settled(runtime.rules, db, ids)
        (alert,) = await eventually(lambda: firing(http))
        assert alert["annotations"]["summary_vi"] == SUMMARY_3
