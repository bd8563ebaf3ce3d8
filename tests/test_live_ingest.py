"""The wall's telemetry frames come from ingest's own commit (issue 15): real broker, real
PostgreSQL, real /ws sockets — with no rule engine anywhere, and across a database error."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
import psycopg

from ioc.core.settings import Settings
from ioc.core.topics import device_topic
from ioc.ingest.errors import Reason
from ioc.ingest.feed import feed_events
from ioc.ingest.records import DeadLetter, DeviceEvent, StatusChange, Telemetry
from ioc.ingest.service import IngestService
from ioc.routing.intake import report_vocabulary
from ioc.storage import Flavour, feed
from ioc.storage import devices as store
from ioc.storage.feed import FeedEvent
from tests.conftest import FLOOD, LAMP, MqttPublisher, eventually, running_service
from tests.test_live import Client

GAUGE = "vt-flood-01"  # in the site file (ward phuong-vi-tan): the service registers it


def telemetry(t: float, **metrics: float) -> bytes:
    return orjson.dumps({"ts": int(t * 1000), "metrics": metrics})


async def test_readings_and_device_frames_reach_ws_with_no_rule_engine_anywhere(
    settings: Settings, publisher: MqttPublisher
) -> None:
    """IOC_RULES_IN_INGEST=false and no `ioc rules run`: the wall still gets its live data."""
    split = settings.model_copy(update={"rules_in_ingest": False})
    async with running_service(split) as (runtime, _):
        assert runtime.rules is None
        client = await Client.open(runtime, types="readings,device,event")
        try:
            await eventually(lambda: _has(client, "hello"))
            p = split.mqtt_topic_prefix
            now = time.time()
            topic = device_topic(p, "vi-thanh", "flood", GAUGE, "telemetry")
            # two points of one metric in flight: the frame carries the newer one
            publisher.publish_many(
                [
                    (topic, telemetry(now - 2, water_level_m=0.42)),
                    (topic, telemetry(now - 5, water_level_m=0.40)),
                ]
            )
            publisher.publish(device_topic(p, "vi-thanh", "flood", GAUGE, "status"), b"offline")

            async def readings() -> list[dict[str, Any]]:
                return [f for f in client.of("readings") if GAUGE in f["data"]["devices"]]

            got = await eventually(readings)
            entry = got[-1]["data"]["devices"][GAUGE]
            assert (entry["city"], entry["ward"], entry["kind"]) == (
                "vi-thanh",
                "phuong-vi-tan",
                "flood",
            )
            assert entry["metrics"]["water_level_m"]["value"] == 0.42
            assert entry["metrics"]["water_level_m"]["time"].endswith("+07:00")
            (status,) = await eventually(lambda: _of(client, "device"))
            assert status["data"]["device_id"] == GAUGE and status["data"]["online"] is False
            assert status["data"]["ward"] == "phuong-vi-tan"
            seqs = [f["seq"] for f in client.data()]
            assert seqs == sorted(set(seqs))
        finally:
            await client.close()


async def test_a_database_error_leaves_no_committed_reading_unannounced(
    settings: Settings, flavour: Flavour, db: psycopg.AsyncConnection, publisher: MqttPublisher
) -> None:
    """The feed row is written in the readings' own transaction: while appending it fails,
    nothing of the batch commits; once the database takes it, readings and frame commit
    together. (Before, a failed second transaction dropped the frame of committed readings.)"""
    await store.insert_device(db, FLOOD)
    await db.execute(
        "CREATE FUNCTION refuse_feed() RETURNS trigger LANGUAGE plpgsql AS"
        " $$ BEGIN RAISE EXCEPTION 'feed unavailable' USING ERRCODE = '55000'; END $$"
    )
    await db.execute(
        "CREATE TRIGGER refuse_feed BEFORE INSERT ON feed_events"
        " FOR EACH ROW EXECUTE FUNCTION refuse_feed()"
    )
    p = settings.mqtt_topic_prefix
    now = time.time()
    topic = device_topic(p, "vi-thanh", "flood", FLOOD.id, "telemetry")
    sent = [(now - 30 + i, 0.5 + i / 100) for i in range(20)]
    async with IngestService(
        settings, settings.database_url or "", flavour, reports=report_vocabulary(settings)
    ) as svc:
        await svc.wait_connected(20)
        publisher.publish_many([(topic, telemetry(t, water_level_m=v)) for t, v in sent])
        await eventually(lambda: _database_error(svc))
        assert await _count(db, "SELECT count(*) FROM readings") == 0  # nothing unannounced
        assert svc.committed == 0  # nor acknowledged
        await db.execute("DROP TRIGGER refuse_feed ON feed_events")
        await eventually(lambda: _committed(svc, len(sent)))
    assert await _count(db, "SELECT count(*) FROM readings") == len(sent)
    cur = await db.execute(
        "SELECT payload FROM feed_events WHERE type = 'readings' ORDER BY seq DESC LIMIT 1"
    )
    row = await cur.fetchone()
    assert row is not None
    assert row[0]["devices"][FLOOD.id]["metrics"]["water_level_m"]["value"] == sent[-1][1]


def test_one_batch_one_readings_row_newest_point_per_metric() -> None:
    places = {FLOOD.id: ("flood", "vi-thanh", "phuong-5"), LAMP.id: ("lighting", "vi-thanh", None)}
    t = 1_764_900_000.0  # 2025-12-05 02:00 UTC = 09:00 +07:00
    events = feed_events(
        [
            Telemetry(FLOOD.id, t + 10, None, (("water_level_m", 0.7),)),
            Telemetry(FLOOD.id, t, None, (("water_level_m", 0.6), ("battery_v", 3.9))),
            StatusChange(LAMP.id, True, t),
            DeviceEvent(LAMP.id, t, "lamp_failure", b"{}"),
            Telemetry("deleted-meanwhile", t, None, (("water_level_m", 1.0),)),
            StatusChange("deleted-meanwhile", False, t),
            DeadLetter("x/y", b"", Reason.INVALID_PAYLOAD, "bad", t),
        ],
        places,
    )
    assert [e.type for e in events] == ["device", "event", "readings"]
    device, event, readings = events
    assert device.payload == {
        "device_id": LAMP.id,
        "city": "vi-thanh",
        "ward": None,
        "kind": "lighting",
        "online": True,
        "time": "2025-12-05T09:00:00+07:00",
    }
    assert (device.city, device.ward, device.kind) == ("vi-thanh", None, "lighting")
    assert event.payload["event"] == "lamp_failure" and event.kind == "lighting"
    assert readings.payload == {
        "devices": {
            FLOOD.id: {
                "city": "vi-thanh",
                "ward": "phuong-5",
                "kind": "flood",
                "metrics": {
                    "water_level_m": {"time": "2025-12-05T09:00:10+07:00", "value": 0.7},
                    "battery_v": {"time": "2025-12-05T09:00:00+07:00", "value": 3.9},
                },
            }
        }
    }
    assert feed_events([], places) == []


async def _has(client: Client, kind: str) -> bool:
    return bool(client.of(kind))


async def _of(client: Client, kind: str) -> list[dict[str, Any]]:
    return client.of(kind)


async def _database_error(svc: IngestService) -> bool:
    return svc.health().database_error is not None


async def _committed(svc: IngestService, n: int) -> bool:
    return svc.committed >= n


async def _count(db: psycopg.AsyncConnection, query: str) -> int:
    cur = await db.execute(query.encode())
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def test_overlapping_writers_acknowledge_in_arrival_order_after_commit(
    settings: Settings, flavour: Flavour, db: psycopg.AsyncConnection, publisher: MqttPublisher
) -> None:
    """Two writer connections: a batch that commits before the one taken ahead of it waits —
    its listeners and PUBACKs come only after the earlier batch committed, in arrival order."""
    assert settings.ingest_writers == 2
    await store.insert_device(db, FLOOD)
    await store.insert_device(db, LAMP)
    # the lamp's readings take their time to insert (a trigger sleeping while its batch's
    # transaction is open), so the gauge's later batch commits first on the other connection
    await db.execute(
        "CREATE FUNCTION slow_lamp() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
        f" IF NEW.device_id = '{LAMP.id}' THEN PERFORM pg_sleep(2); END IF; RETURN NEW; END $$"
    )
    await db.execute(
        "CREATE TRIGGER slow_lamp BEFORE INSERT ON readings"
        " FOR EACH ROW EXECUTE FUNCTION slow_lamp()"
    )
    seen: list[list[str]] = []

    async def listener(records: Any) -> None:
        seen.append([r.device_id for r in records])

    p = settings.mqtt_topic_prefix
    now = time.time()
    async with IngestService(
        settings, settings.database_url or "", flavour, listeners=[listener],
        reports=report_vocabulary(settings),
    ) as svc:
        await svc.wait_connected(20)
        gauge = device_topic(p, "vi-thanh", "flood", FLOOD.id, "telemetry")
        # first a batch that creates the day's partition (its creator's lock is held to commit)
        publisher.publish(gauge, telemetry(now - 2, water_level_m=0.4))
        await eventually(lambda: _committed(svc, 1))
        seen.clear()
        lamp = device_topic(p, "vi-thanh", "lighting", LAMP.id, "telemetry")
        publisher.publish(lamp, telemetry(now - 1, power_w=90.0))
        await eventually(lambda: _sleeping_in_copy(db))  # the lamp's batch is being written
        publisher.publish(gauge, telemetry(now - 1, water_level_m=0.5))
        await eventually(
            lambda: _count(db, f"SELECT count(*) = 2 FROM readings WHERE device_id = '{FLOOD.id}'")
        )
        # the gauge's batch is committed, the lamp's still not: nothing settled yet
        assert await _count(db, f"SELECT count(*) FROM readings WHERE device_id = '{LAMP.id}'") == 0
        assert (svc.committed, seen) == (1, [])
        await eventually(lambda: _committed(svc, 3))
    assert seen == [[LAMP.id], [FLOOD.id]]


async def _sleeping_in_copy(db: psycopg.AsyncConnection) -> bool:
    return bool(
        await _count(
            db,
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND wait_event = 'PgSleep' AND query LIKE 'COPY readings%'",
        )
    )


async def test_a_feed_row_committed_later_never_takes_a_lower_seq(
    database_url: str, db: psycopg.AsyncConnection
) -> None:
    """A reader resumes after the highest seq it has seen, so a row that commits later must never
    carry a lower seq. An alert-style append (``append`` inside ``conn.transaction()``) holds
    its seq uncommitted; ingest's pipelined ``append_and_commit`` on another connection waits
    for it rather than committing a higher seq first — the resuming reader misses nothing."""
    first = FeedEvent("alert", {"n": 1})
    second = FeedEvent("readings", {"n": 2})
    async with (
        await psycopg.AsyncConnection.connect(database_url) as slow,
        await psycopg.AsyncConnection.connect(database_url, autocommit=True) as fast,
    ):
        async with slow.transaction():
            held = await feed.append(slow, [first])
            await fast.execute("BEGIN")
            pid = fast.info.backend_pid
            task = asyncio.create_task(feed.append_and_commit(fast, [second]))

            async def fast_done_or_waiting() -> bool:
                return task.done() or bool(
                    await _count(
                        db,
                        "SELECT count(*) FROM pg_stat_activity WHERE pid ="
                        f" {pid} AND wait_event_type = 'Lock' AND wait_event = 'advisory'",
                    )
                )

            await eventually(fast_done_or_waiting)
            seen = [r.seq for r in await feed.events_after(db, 0, 100)]
        after = await task
    last = max(seen, default=0)
    seen += [r.seq for r in await feed.events_after(db, last, 100)]
    assert max(held) < min(after)
    assert seen == held + after  # each once, in seq order, none skipped


async def test_concurrent_feed_writers_a_tailing_reader_skips_nothing(
    database_url: str, db: psycopg.AsyncConnection
) -> None:
    """Writers of both kinds (pipelined ingest appends, alert-style appends that linger before
    COMMIT) race while a reader tails ``seq > last`` as the live hub does: it ends up with every
    committed seq, each once, in increasing order."""
    rounds = 15
    done = asyncio.Event()

    async def pipelined(n: int) -> list[int]:
        seqs: list[int] = []
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
            for i in range(rounds):
                await conn.execute("BEGIN")
                await conn.execute("SELECT pg_sleep(random() * 0.01)")
                seqs += await feed.append_and_commit(
                    conn, [FeedEvent("readings", {"w": n, "i": i, "k": k}) for k in range(3)]
                )
        return seqs

    async def lingering(n: int) -> list[int]:
        seqs: list[int] = []
        async with await psycopg.AsyncConnection.connect(database_url) as conn:
            for i in range(rounds):
                async with conn.transaction():
                    seqs += await feed.append(conn, [FeedEvent("alert", {"w": n, "i": i})])
                    await conn.execute("SELECT pg_sleep(random() * 0.01)")
        return seqs

    async def tail() -> list[int]:
        got: list[int] = []
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
            while True:
                finished = done.is_set()  # read before the page: a final page after the end
                rows = await feed.events_after(conn, got[-1] if got else 0, 1000)
                got += [r.seq for r in rows]
                if finished and not rows:
                    return got
                await asyncio.sleep(0.001)

    reader = asyncio.create_task(tail())
    written = await asyncio.gather(
        *(pipelined(n) for n in range(3)), *(lingering(n) for n in range(2))
    )
    done.set()
    got = await reader
    committed = sorted(s for seqs in written for s in seqs)
    assert len(committed) == rounds * (3 * 3 + 2)
    assert got == committed
