"""Ingest end to end on the real broker and database: publish → committed rows → REST."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime
from typing import Any

import orjson
import psycopg
import pytest

from ioc.core.devices import Device
from ioc.core.settings import Settings
from ioc.core.topics import device_topic, report_topic
from ioc.ingest.errors import Reason
from ioc.ingest.handoff import Delivery
from ioc.ingest.records import CitizenReport, Telemetry
from ioc.ingest.service import IngestService
from ioc.ingest.writer import BatchWriter
from ioc.routing.intake import report_vocabulary
from ioc.storage import Flavour
from ioc.storage import devices as store
from ioc.storage import reports as report_store
from tests.conftest import FLOOD, LAMP, MqttPublisher, eventually


async def _register(db: psycopg.AsyncConnection, *devices: Device) -> None:
    for d in devices:
        assert await store.insert_device(db, d)


def telemetry(t: float, seq: int, **metrics: float) -> bytes:
    return orjson.dumps({"ts": int(t * 1000), "seq": seq, "metrics": metrics})


async def count(db: psycopg.AsyncConnection, query: str, *params: object) -> int:
    cur = await db.execute(query.encode(), params)
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def test_published_readings_are_stored_once_each(
    settings: Settings, flavour: Flavour, db: psycopg.AsyncConnection, publisher: MqttPublisher
) -> None:
    await _register(db, FLOOD, LAMP)
    p = settings.mqtt_topic_prefix
    t0 = time.time() - 600
    sent = [(t0 + i * 10, 0.5 + i / 100) for i in range(50)]
    async with IngestService(
        settings, settings.database_url or "", flavour, reports=report_vocabulary(settings)
    ) as svc:
        await svc.wait_connected(20)
        topic = device_topic(p, "vi-thanh", "flood", FLOOD.id, "telemetry")
        items = [(topic, telemetry(t, i, water_level_m=v)) for i, (t, v) in enumerate(sent)]
        # The same message twice (a device retrying) must be stored once.
        publisher.publish_many(items + items[:5])
        lamp = device_topic(p, "vi-thanh", "lighting", LAMP.id, "telemetry")
        publisher.publish(lamp, telemetry(t0, 1, power_w=98.5, voltage_v=221.0, dim_level_pct=80))
        await eventually(lambda: _committed(svc, 56))
    cur = await db.execute(
        "SELECT extract(epoch from time)::float8, value FROM readings"
        " WHERE device_id = %s AND metric = 'water_level_m' ORDER BY time",
        (FLOOD.id,),
    )
    rows = await cur.fetchall()
    assert [(round(t, 3), v) for t, v in rows] == [
        (round(int(t * 1000) / 1000, 3), v) for t, v in sent
    ]
    assert await count(db, "SELECT count(*) FROM readings WHERE device_id = %s", LAMP.id) == 3
    cur = await db.execute(
        "SELECT value FROM latest_readings WHERE device_id = %s AND metric = 'water_level_m'",
        (FLOOD.id,),
    )
    assert (await cur.fetchone()) == (sent[-1][1],)
    assert await count(db, "SELECT count(*) FROM dead_letters") == 0


async def _committed(svc: IngestService, n: int) -> bool:
    return svc.committed >= n


async def test_every_bad_input_is_dead_lettered_and_intake_goes_on(
    settings: Settings, flavour: Flavour, db: psycopg.AsyncConnection, publisher: MqttPublisher
) -> None:
    await _register(db, FLOOD, LAMP)
    p = settings.mqtt_topic_prefix
    now = time.time()
    good = device_topic(p, "vi-thanh", "flood", FLOOD.id, "telemetry")
    bad: dict[Reason, tuple[str, bytes]] = {
        Reason.MALFORMED_JSON: (good, b'{"ts": 1, "metrics": '),
        Reason.WRONG_TYPE: (
            good,
            orjson.dumps({"ts": int(now * 1000), "metrics": {"water_level_m": "0.8"}}),
        ),
        Reason.UNKNOWN_DEVICE: (
            device_topic(p, "vi-thanh", "flood", "ghost-9", "telemetry"),
            telemetry(now, 1, water_level_m=0.5),
        ),
        Reason.DEVICE_MISMATCH: (
            device_topic(p, "nga-bay", "flood", FLOOD.id, "telemetry"),
            telemetry(now, 1, water_level_m=0.5),
        ),
        Reason.UNKNOWN_METRIC: (good, telemetry(now, 2, salinity_ppt=3.0)),
        Reason.OUT_OF_RANGE: (good, telemetry(now, 3, water_level_m=42.0)),
        Reason.MISSING_TIMESTAMP: (good, orjson.dumps({"metrics": {"water_level_m": 0.5}})),
        Reason.TIMESTAMP_OUT_OF_BOUNDS: (good, telemetry(now + 86_400 * 30, 4, water_level_m=0.5)),
        Reason.OVERSIZE: (good, b'{"pad": "' + b"x" * (settings.max_payload_bytes + 10) + b'"}'),
        # Matches our subscription (an empty level matches '+') but not the scheme.
        Reason.BAD_TOPIC: (
            f"{p}/vi-thanh//{FLOOD.id}/telemetry",
            telemetry(now, 5, water_level_m=0.5),
        ),
        Reason.INVALID_STATUS: (device_topic(p, "vi-thanh", "flood", FLOOD.id, "status"), b"maybe"),
        Reason.UNKNOWN_EVENT_TYPE: (
            device_topic(p, "vi-thanh", "lighting", LAMP.id, "event"),
            orjson.dumps({"ts": int(now * 1000), "type": "meteor"}),
        ),
    }
    async with IngestService(
        settings, settings.database_url or "", flavour, reports=report_vocabulary(settings)
    ) as svc:
        await svc.wait_connected(20)
        for topic, payload in bad.values():
            publisher.publish(topic, payload)
        publisher.publish(good, telemetry(now, 99, water_level_m=0.61))
        await eventually(
            lambda: count(db, "SELECT count(*) FROM readings WHERE device_id = %s", FLOOD.id)
        )
        await eventually(lambda: _rows_at_least(db, "dead_letters", len(bad)))
    cur = await db.execute("SELECT reason, topic, payload, detail FROM dead_letters")
    got = {r[0]: (r[1], bytes(r[2]), r[3]) for r in await cur.fetchall()}
    assert set(got) == set(bad)
    for reason in bad:
        topic, payload = bad[reason]
        assert got[reason][0] == topic and got[reason][1] == payload
        assert got[reason][2], f"{reason} has no detail"
    assert await count(db, "SELECT count(*) FROM readings") == 1


async def _rows_at_least(db: psycopg.AsyncConnection, table: str, n: int) -> bool:
    return await count(db, f"SELECT count(*) FROM {table}") >= n


async def test_status_events_and_late_registration(
    settings: Settings, flavour: Flavour, db: psycopg.AsyncConnection, publisher: MqttPublisher
) -> None:
    await _register(db, LAMP)
    p = settings.mqtt_topic_prefix
    now = time.time()
    async with IngestService(
        settings, settings.database_url or "", flavour, reports=report_vocabulary(settings)
    ) as svc:
        await svc.wait_connected(20)
        publisher.publish(device_topic(p, "vi-thanh", "lighting", LAMP.id, "status"), b"offline")
        publisher.publish(
            device_topic(p, "vi-thanh", "lighting", LAMP.id, "event"),
            orjson.dumps({"ts": int(now * 1000), "type": "lamp_failure", "reason": "open circuit"}),
        )
        await eventually(lambda: count(db, "SELECT count(*) FROM device_events"))
        await eventually(lambda: _is_online(db, LAMP.id, False))
        publisher.publish(device_topic(p, "vi-thanh", "lighting", LAMP.id, "status"), b"online")
        await eventually(lambda: _is_online(db, LAMP.id, True))
        # A device registered while the service runs is accepted without a restart.
        await _register(db, FLOOD)
        topic = device_topic(p, "vi-thanh", "flood", FLOOD.id, "telemetry")
        publisher.publish(topic, telemetry(now, 1, water_level_m=0.7))
        await eventually(
            lambda: count(db, "SELECT count(*) FROM readings WHERE device_id = %s", FLOOD.id)
        )
    cur = await db.execute("SELECT type, data->>'reason' FROM device_events")
    assert await cur.fetchall() == [("lamp_failure", "open circuit")]


async def _is_online(db: psycopg.AsyncConnection, device_id: str, online: bool) -> bool:
    cur = await db.execute("SELECT online FROM device_state WHERE device_id = %s", (device_id,))
    row = await cur.fetchone()
    return row is not None and row[0] is online


async def test_messages_queued_while_stopped_arrive_after_restart(
    settings: Settings, flavour: Flavour, db: psycopg.AsyncConnection, publisher: MqttPublisher
) -> None:
    """The persistent session keeps what devices publish while ingest is down."""
    await _register(db, FLOOD)
    topic = device_topic(settings.mqtt_topic_prefix, "vi-thanh", "flood", FLOOD.id, "telemetry")
    now = time.time() - 100
    async with IngestService(
        settings, settings.database_url or "", flavour, reports=report_vocabulary(settings)
    ) as svc:
        await svc.wait_connected(20)
    publisher.publish_many([(topic, telemetry(now + i, i, water_level_m=0.3)) for i in range(200)])
    async with IngestService(
        settings, settings.database_url or "", flavour, reports=report_vocabulary(settings)
    ) as svc:
        await svc.wait_connected(20)
        await eventually(lambda: _committed(svc, 200))
    assert await count(db, "SELECT count(*) FROM readings") == 200


@pytest.mark.parametrize("when", ["2026-01-01T00:00:00+07:00"])
def test_partition_days_are_utc(when: str) -> None:
    # Guard for the writer's day arithmetic: UTC day index of a +07:00 midnight is the day before.
    t = datetime.fromisoformat(when).timestamp()
    assert datetime.fromtimestamp((t // 86400) * 86400, UTC).date().isoformat() == "2025-12-31"


# -- citizen reports -------------------------------------------------------------------------------


def citizen_report(t: float, **over: object) -> bytes:
    base: dict[str, object] = {
        "id": "app-000123",
        "ts": int(t * 1000),
        "category": "chieu-sang",
        "lat": 9.784,
        "lon": 105.47,
        "description": "Đèn đường trước số 12 không sáng.",
        "media_url": None,
    }
    base.update(over)
    return orjson.dumps({k: v for k, v in base.items() if v is not ...})


async def test_reports_commit_with_readings_once_each_and_wake_the_router(
    settings: Settings, flavour: Flavour, db: psycopg.AsyncConnection, publisher: MqttPublisher
) -> None:
    await _register(db, FLOOD)
    p = settings.mqtt_topic_prefix
    now = time.time() - 60
    async with await psycopg.AsyncConnection.connect(
        settings.database_url or "", autocommit=True
    ) as listener:
        await listener.execute(f"LISTEN {report_store.CHANNEL}")
        async with IngestService(
            settings, settings.database_url or "", flavour, reports=report_vocabulary(settings)
        ) as svc:
            await svc.wait_connected(20)
            reading = (
                device_topic(p, "vi-thanh", "flood", FLOOD.id, "telemetry"),
                telemetry(now, 1, water_level_m=0.5),
            )
            app = (report_topic(p, "vi-thanh", "app"), citizen_report(now))
            # The same id on another channel is another report; on the same channel, a repeat.
            hotline = (report_topic(p, "vi-thanh", "hotline"), citizen_report(now))
            publisher.publish_many([reading, app, hotline, app])
            await eventually(lambda: _committed(svc, 4))
            notified = [n async for n in listener.notifies(timeout=5, stop_after=1)]
    assert notified and notified[0].channel == report_store.CHANNEL
    assert await count(db, "SELECT count(*) FROM readings") == 1
    cur = await db.execute(
        "SELECT source, external_id, dedupe_key, service_code, city, ward, lat, lon,"
        " description, extract(epoch from reported_at), routed_at FROM reports ORDER BY source"
    )
    rows = await cur.fetchall()
    assert [r[:8] for r in rows] == [
        # the position lies in the former Phường V: the current unit, Phường Vị Tân
        ("app", "app-000123", "mqtt:vi-thanh:app:app-000123", "chieu-sang", "vi-thanh",
         "phuong-vi-tan", 9.784, 105.47),
        ("hotline", "app-000123", "mqtt:vi-thanh:hotline:app-000123", "chieu-sang", "vi-thanh",
         "phuong-vi-tan", 9.784, 105.47),
    ]  # fmt: skip
    assert rows[0][8] == "Đèn đường trước số 12 không sáng."
    assert float(rows[0][9]) == pytest.approx(int(now * 1000) / 1000)
    assert rows[0][10] is None  # left for the incident router
    assert await count(db, "SELECT count(*) FROM dead_letters") == 0


async def test_one_batch_writes_readings_and_reports_in_one_transaction(
    settings: Settings, flavour: Flavour, db: psycopg.AsyncConnection
) -> None:
    """The writer's unit of work is the batch: a batch whose readings the database refuses
    stores none of its reports either (then the service isolates the culprit)."""
    await _register(db, FLOOD)
    now = time.time()
    report = CitizenReport(
        "vi-thanh", "app", "app-1", now, "khac", 9.784, 105.47, "phuong-5", "x", None
    )
    ok = Telemetry(FLOOD.id, now, 1, (("water_level_m", 0.5),))
    orphan = Telemetry("never-registered", now, 1, (("water_level_m", 0.5),))
    writer = BatchWriter(settings.database_url or "", flavour)
    try:
        with pytest.raises(psycopg.errors.IntegrityError):
            await writer.write([_delivery(ok), _delivery(report), _delivery(orphan)])
        await writer.close()
        assert await count(db, "SELECT count(*) FROM reports") == 0
        assert await count(db, "SELECT count(*) FROM readings") == 0
        result = await writer.write_isolating_failures(
            [_delivery(ok), _delivery(report), _delivery(report), _delivery(orphan)]
        )
        assert (result.reports, result.dead_letters) == (1, 1)
        # In one batch: two new reports and a repeat of a stored one count as two.
        other = CitizenReport(
            "vi-thanh", "zalo", "zalo-1", now, "khac", 9.784, 105.47, "phuong-5", "y", None
        )
        third = CitizenReport(
            "vi-thanh", "zalo", "zalo-2", now, "khac", 9.784, 105.47, "phuong-5", "z", None
        )
        result = await writer.write([_delivery(other), _delivery(report), _delivery(third)])
        assert result.reports == 2
    finally:
        await writer.close()
    assert await count(db, "SELECT count(*) FROM reports") == 3
    assert await count(db, "SELECT count(*) FROM readings") == 1


async def test_a_redelivered_batch_is_stored_once_and_announced_again(
    settings: Settings, flavour: Flavour, db: psycopg.AsyncConnection
) -> None:
    """A batch whose readings are partly stored (a redelivery after a crash before the PUBACK)
    fails the straight COPY; the writer rolls back and writes it again through the staging
    table: the new readings stored, the old ones once, the newest values and last-seen time
    right, and a feed row for the commit."""
    await _register(db, FLOOD)
    await _register(db, LAMP)
    now = time.time()
    first = [
        Telemetry(FLOOD.id, now - 2, 1, (("water_level_m", 0.5), ("battery_v", 12.5))),
        Telemetry(LAMP.id, now - 2, 1, (("power_w", 90.0),)),
    ]
    second = [
        *first,  # redelivered
        Telemetry(FLOOD.id, now - 1, 2, (("water_level_m", 0.75),)),
        Telemetry(FLOOD.id, now - 3, 0, (("water_level_m", 0.25),)),  # older: not the newest
    ]
    writer = BatchWriter(settings.database_url or "", flavour)
    writer.places = await store.device_places(db)
    try:
        one = await writer.write([_delivery(r) for r in first])
        assert (one.readings, one.stored) == (3, 3)
        feed_before = await count(db, "SELECT count(*) FROM feed_events WHERE type = 'readings'")
        two = await writer.write([_delivery(r) for r in second])
        assert (two.readings, two.stored) == (5, 2)
        again = await writer.write([_delivery(r) for r in second])
        assert (again.readings, again.stored) == (5, 0)
    finally:
        await writer.close()
    assert await count(db, "SELECT count(*) FROM readings") == 5
    cur = await db.execute("SELECT device_id, metric, value FROM latest_readings ORDER BY 1, 2")
    assert await cur.fetchall() == [
        (FLOOD.id, "battery_v", 12.5),
        (FLOOD.id, "water_level_m", 0.75),
        (LAMP.id, "power_w", 90.0),
    ]
    cur = await db.execute(
        "SELECT extract(epoch FROM last_seen_at) FROM device_state WHERE device_id = %s",
        (FLOOD.id,),
    )
    row = await cur.fetchone()
    assert row is not None and float(row[0]) == pytest.approx(now - 1, abs=1e-3)
    # each committed batch announced its newest points, the redelivered ones too
    assert (
        await count(db, "SELECT count(*) FROM feed_events WHERE type = 'readings'")
        == feed_before + 2
    )


async def test_a_batch_rolled_back_by_a_deadlock_is_written_again_at_once(
    settings: Settings, flavour: Flavour, db: psycopg.AsyncConnection, caplog: Any
) -> None:
    """A deadlock (SQLSTATE 40P01) is another transaction's doing, not the database's state: the
    batch is written again at once, without the backoff and without /readyz calling the
    database unusable. Provoked for real: another transaction holds a ``device_state`` row the
    batch needs, then asks for a ``latest_readings`` row the batch holds."""
    await _register(db, FLOOD, LAMP)
    places = await store.device_places(db)
    now = time.time()
    first = [
        Telemetry(FLOOD.id, now - 10, 1, (("water_level_m", 0.5),)),
        Telemetry(LAMP.id, now - 10, 1, (("power_w", 90.0),)),
    ]
    batch = [
        _delivery(Telemetry(FLOOD.id, now - 5, 2, (("water_level_m", 0.6),))),
        _delivery(Telemetry(LAMP.id, now - 5, 2, (("power_w", 91.0),))),
    ]
    service = IngestService(
        settings, settings.database_url or "", flavour, reports=report_vocabulary(settings)
    )
    writer = BatchWriter(settings.database_url or "", flavour)
    writer.places = places
    await writer.write([_delivery(r) for r in first])  # the rows exist, to be locked
    # the row the batch upserts last (``device_state``, key order) held by another transaction
    last = max(FLOOD.id, LAMP.id)
    other = await psycopg.AsyncConnection.connect(settings.database_url or "")
    try:
        await other.execute(
            "UPDATE device_state SET last_seen_at = last_seen_at WHERE device_id = %s", (last,)
        )
        caplog.set_level(logging.INFO, logger="ioc.ingest.service")
        commit = asyncio.create_task(service._commit(writer, batch))

        async def batch_waits() -> bool:
            cur = await db.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                " AND query LIKE '%%latest_readings%%'"
            )
            return await cur.fetchone() == (1,)

        await eventually(batch_waits)
        # now ask for a row the batch holds: a cycle; the batch, waiting longest, is the victim
        await other.execute(
            "UPDATE latest_readings SET value = value WHERE device_id = %s",
            (min(FLOOD.id, LAMP.id),),
        )
        await other.commit()
        result = await commit
    finally:
        await other.close()
        await writer.close()
    assert (result.readings, result.stored) == (2, 2)
    messages = [r.getMessage() for r in caplog.records]
    assert any("rolled back (40P01)" in m for m in messages), messages
    assert not any("database unusable" in m for m in messages)
    assert service.health().database_error is None
    cur = await db.execute("SELECT device_id, value FROM latest_readings")
    assert dict(await cur.fetchall()) == {FLOOD.id: 0.6, LAMP.id: 91.0}


def _delivery(record: object) -> Delivery:
    return Delivery(0, 1, 0, "t/x", b"{}", record)  # type: ignore[arg-type]


async def test_bad_reports_are_dead_lettered_with_their_reason(
    settings: Settings, flavour: Flavour, db: psycopg.AsyncConnection, publisher: MqttPublisher
) -> None:
    p = settings.mqtt_topic_prefix
    now = time.time()
    app = report_topic(p, "vi-thanh", "app")
    bad: dict[Reason, tuple[str, bytes]] = {
        Reason.UNKNOWN_CATEGORY: (app, citizen_report(now, category="ufo")),
        Reason.OUTSIDE_SITE: (app, citizen_report(now, lat=10.5, lon=106.0)),
        Reason.CITY_MISMATCH: (report_topic(p, "nga-bay", "app"), citizen_report(now)),
        Reason.TOO_LONG: (app, citizen_report(now, description="x" * 4001)),
        Reason.INVALID_PAYLOAD: (app, citizen_report(now, description=...)),
        Reason.WRONG_TYPE: (app, citizen_report(now, ts="hôm qua")),
        Reason.TIMESTAMP_OUT_OF_BOUNDS: (app, citizen_report(now - 30 * 86_400)),
        Reason.BAD_TOPIC: (report_topic(p, "vi-thanh", "fax"), citizen_report(now)),
        Reason.MALFORMED_JSON: (app, b'{"id": '),
    }
    async with IngestService(
        settings, settings.database_url or "", flavour, reports=report_vocabulary(settings)
    ) as svc:
        await svc.wait_connected(20)
        for topic, payload in bad.values():
            publisher.publish(topic, payload)
        publisher.publish(app, citizen_report(now, id="app-ok"))
        await eventually(lambda: _committed(svc, len(bad) + 1))
    cur = await db.execute("SELECT reason, topic, payload, detail FROM dead_letters")
    got = {r[0]: (r[1], bytes(r[2]), r[3]) for r in await cur.fetchall()}
    assert set(got) == {r.value for r in bad}
    for reason, (topic, payload) in bad.items():
        assert got[reason][:2] == (topic, payload), reason
    assert "description" in got[Reason.TOO_LONG][2] and "4001" in got[Reason.TOO_LONG][2]
    assert "ufo" in got[Reason.UNKNOWN_CATEGORY][2]
    assert await count(db, "SELECT count(*) FROM reports") == 1
