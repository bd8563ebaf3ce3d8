"""Storage on the real database: migrations, partitions, rollups, retention, both flavours."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from psycopg import sql

from ioc.ingest.handoff import Delivery
from ioc.ingest.records import Telemetry
from ioc.ingest.writer import BatchWriter
from ioc.storage import Flavour, migrate
from ioc.storage import devices as store
from ioc.storage.maintenance import (
    apply_policies,
    drop_expired_partitions,
    prune_dead_letters,
    prune_rollups,
    refresh_rollups,
    run_maintenance,
)
from ioc.storage.readings import ReadingQuery, parse_bucket, query_readings
from tests.conftest import FLOOD


def reading(t: datetime, value: float, device: str = FLOOD.id) -> Delivery:
    rec = Telemetry(device, t.timestamp(), None, (("water_level_m", value),))
    return Delivery(0, 0, 0, "t", b"", rec)


async def write(url: str, flavour: Flavour, items: list[Delivery]) -> None:
    w = BatchWriter(url, flavour)
    try:
        await w.write(items)
    finally:
        await w.close()


def expected_buckets(
    points: list[tuple[datetime, float]], start: datetime, end: datetime, width: timedelta
):  # type: ignore[no-untyped-def]
    origin = datetime.fromisoformat("2000-01-01T00:00:00+07:00")
    out: dict[datetime, list[float]] = {}
    lo = origin + ((start - origin) // width) * width
    for t, v in points:
        if lo <= t < end:
            b = origin + ((t - origin) // width) * width
            out.setdefault(b, []).append(v)
    return [(b, sum(vs) / len(vs), min(vs), max(vs), len(vs)) for b, vs in sorted(out.items())]


def as_tuples(rows):  # type: ignore[no-untyped-def]
    return [(r["time"], pytest.approx(r["value"]), r["min"], r["max"], r["count"]) for r in rows]


async def test_migrations_are_idempotent_and_recorded(database_url: str, flavour: Flavour) -> None:
    assert migrate(database_url) == flavour
    assert migrate(database_url) == flavour
    with psycopg.connect(database_url) as conn:
        versions = [
            r[0] for r in conn.execute("SELECT version FROM ioc_schema_migrations ORDER BY 1")
        ]
        assert versions == sorted(set(versions)) and versions[:2] == [1, 2]


async def test_buckets_agree_between_raw_and_rollups(
    database_url: str, flavour: Flavour, db: psycopg.AsyncConnection
) -> None:
    await store.insert_device(db, FLOOD)
    rng = random.Random(3)
    base = datetime.now(UTC).replace(microsecond=0) - timedelta(days=2)
    points = [
        (base + timedelta(seconds=37 * i), round(rng.uniform(0.1, 0.9), 3)) for i in range(4000)
    ]
    await write(database_url, flavour, [reading(t, v) for t, v in points])
    start, end = base - timedelta(hours=1), base + timedelta(days=2)

    async def ask(bucket: str) -> list[tuple]:  # type: ignore[type-arg]
        q = ReadingQuery(FLOOD.id, "water_level_m", start, end, parse_bucket(bucket))
        return as_tuples(await query_readings(db, flavour, q))

    cases = ["5m", "1h", "1d", "90s"]
    before = {b: await ask(b) for b in cases}  # no rollups yet: raw
    for b in cases:
        assert before[b] == expected_buckets(points, start, end, parse_bucket(b)), b
    if flavour is Flavour.PLAIN:
        assert await refresh_rollups(db) > 0  # one capped run: rollups before, raw after it
        assert {b: await ask(b) for b in cases} == before
        for _ in range(20):  # later runs go on from where the last one stopped
            cur = await db.execute("SELECT refreshed_to FROM rollup_state")
            row = await cur.fetchone()
            assert row is not None
            if row[0] > datetime.now(UTC) - timedelta(minutes=2):
                break
            await refresh_rollups(db)
        else:
            raise AssertionError("rollup refresh never caught up")
    after = {b: await ask(b) for b in cases}  # from rollups (1m/1h), 90s from raw
    assert after == before
    # A late reading makes the rollups stale from its time on; answers stay exact.
    late = (base + timedelta(hours=3, seconds=1), 0.999)
    await write(database_url, flavour, [reading(*late)])
    points.append(late)
    for b in cases:
        assert await ask(b) == expected_buckets(points, start, end, parse_bucket(b)), b
    if flavour is Flavour.PLAIN:
        await refresh_rollups(db)
        for b in cases:
            assert await ask(b) == expected_buckets(points, start, end, parse_bucket(b)), b


async def test_raw_query_and_limits(
    database_url: str, flavour: Flavour, db: psycopg.AsyncConnection
) -> None:
    from ioc.storage.readings import QueryError

    await store.insert_device(db, FLOOD)
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    await write(
        database_url, flavour, [reading(t0 + timedelta(seconds=i), i / 100) for i in range(10)]
    )
    rows = await query_readings(
        db, flavour, ReadingQuery(FLOOD.id, "water_level_m", t0, t0 + timedelta(seconds=5))
    )
    assert [r["value"] for r in rows] == [0.0, 0.01, 0.02, 0.03, 0.04]
    with pytest.raises(QueryError) as err:
        ReadingQuery(FLOOD.id, "water_level_m", t0, t0 + timedelta(days=30), parse_bucket("1m"))
    assert err.value.field == "bucket"
    with pytest.raises(QueryError):
        parse_bucket("5 minutes")


async def test_plain_partitions_and_retention(
    database_url: str, flavour: Flavour, db: psycopg.AsyncConnection
) -> None:
    if flavour is not Flavour.PLAIN:
        pytest.skip("partition upkeep is TimescaleDB's job under the timescale flavour")
    await store.insert_device(db, FLOOD)
    now = datetime.now(UTC)
    old, recent = now - timedelta(days=12), now - timedelta(hours=1)
    await write(database_url, flavour, [reading(old, 0.4), reading(recent, 0.5)])
    cur = await db.execute(
        "SELECT count(*) FROM pg_inherits WHERE inhparent = 'readings'::regclass"
    )
    assert (await cur.fetchone() or [0])[0] >= 2
    assert await drop_expired_partitions(db, retention_days=10) >= 1
    cur = await db.execute("SELECT value FROM readings")
    assert await cur.fetchall() == [(0.5,)]


async def _rollup_buckets(db: psycopg.AsyncConnection, view: str) -> list[int]:
    """Age in whole days of each bucket of ``view``, oldest first."""
    cur = await db.execute(f"SELECT (now()::date - bucket::date) FROM {view} ORDER BY bucket")
    return [int(r[0]) for r in await cur.fetchall()]


async def test_plain_rollups_have_their_own_retention(
    flavour: Flavour, db: psycopg.AsyncConnection
) -> None:
    """Each rollup is pruned by its own setting, whether or not a raw partition was dropped the
    same round (before, the 1-minute rollup went only with a dropped partition, the hourly one
    never)."""
    if flavour is not Flavour.PLAIN:
        pytest.skip("plain flavour; under TimescaleDB: test_timescale_retention_policies")
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    for view in ("readings_1m", "readings_1h"):
        for days in (900, 400, 45, 5):
            await db.execute(
                f"INSERT INTO {view} (bucket, device_id, metric, min, max, sum, count)"
                " VALUES (%s, 'd', 'm', 1, 1, 1, 1)",
                (now - timedelta(days=days),),
            )
    report = await run_maintenance(
        db, flavour, retention_days=30, dead_letter_limit=100, max_age_s=3600,
        rollup_1m_days=40, rollup_1h_days=500,
    )  # fmt: skip
    assert report.partitions_dropped == 0  # no raw partition that old: rollups pruned anyway
    assert await _rollup_buckets(db, "readings_1m") == [5]
    assert await _rollup_buckets(db, "readings_1h") == [400, 45, 5]
    # once a day per setting: the next round of the same day leaves rows it would keep anyway
    assert not await prune_rollups(db, 40, 500)
    # a changed setting applies at once
    assert await prune_rollups(db, 40, 60)
    assert await _rollup_buckets(db, "readings_1h") == [45, 5]


async def test_timescale_retention_policies(
    database_url: str, flavour: Flavour, db: psycopg.AsyncConnection
) -> None:
    """Retention policies on the hypertable and on both continuous aggregates, from the
    settings; run (CALL run_job) they drop the old rollups and keep the younger ones."""
    if flavour is not Flavour.TIMESCALE:
        pytest.skip("needs the suite on TimescaleDB (README, Tests)")
    await apply_policies(db, flavour, 30, 3600, rollup_1m_days=40, rollup_1h_days=500)
    await apply_policies(db, flavour, 30, 3600, rollup_1m_days=40, rollup_1h_days=500)  # again
    # new policies are scheduled to run at once: this test runs them when the data is in
    await db.execute(
        "SELECT alter_job(job_id, scheduled => false) FROM timescaledb_information.jobs"
        " WHERE job_id >= 1000"
    )
    cur = await db.execute(
        "SELECT coalesce(c.view_name, j.hypertable_name), j.config->>'drop_after', j.job_id"
        " FROM timescaledb_information.jobs j"
        " LEFT JOIN timescaledb_information.continuous_aggregates c"
        "   ON c.materialization_hypertable_name = j.hypertable_name"
        " WHERE j.proc_name = 'policy_retention'"
    )
    policies = {r[0]: (r[1], r[2]) for r in await cur.fetchall()}
    assert {k: v[0] for k, v in policies.items()} == {
        "readings": "30 days", "readings_1m": "40 days", "readings_1h": "500 days",
    }  # fmt: skip
    await store.insert_device(db, FLOOD)
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    await write(database_url, flavour, [reading(now - timedelta(days=d), 0.5) for d in (70, 35)])
    for view in ("readings_1m", "readings_1h"):
        await db.execute(f"CALL refresh_continuous_aggregate('{view}', NULL, NULL)")
    assert await _rollup_buckets(db, "readings_1m") == [70, 35]
    for table in ("readings", "readings_1m", "readings_1h"):
        await db.execute(f"CALL run_job({policies[table][1]})")
    cur = await db.execute("SELECT count(*) FROM readings")
    assert await cur.fetchone() == (0,)  # raw: both older than 30 days
    assert await _rollup_buckets(db, "readings_1m") == [35]
    assert await _rollup_buckets(db, "readings_1h") == [70, 35]


async def test_timescale_compression_keeps_answers(
    database_url: str, flavour: Flavour, db: psycopg.AsyncConnection
) -> None:
    """The compression policy (chunks older than 8 days, segmented by device and metric): run,
    it compresses the old chunk, and raw and bucketed queries answer the same from it."""
    if flavour is not Flavour.TIMESCALE:
        pytest.skip("needs the suite on TimescaleDB (README, Tests)")
    await store.insert_device(db, FLOOD)
    base = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=12)
    points = [(base + timedelta(seconds=30 * i), round(i / 1000, 3)) for i in range(240)]
    await write(database_url, flavour, [reading(t, v) for t, v in points])
    start, end = base, base + timedelta(hours=2)

    async def answers() -> list[list[tuple]]:  # type: ignore[type-arg]
        raw = await query_readings(db, flavour, ReadingQuery(FLOOD.id, "water_level_m", start, end))
        out = [[(r["time"], r["value"]) for r in raw]]
        for b in ("5m", "1h"):
            q = ReadingQuery(FLOOD.id, "water_level_m", start, end, parse_bucket(b))
            out.append(as_tuples(await query_readings(db, flavour, q)))
        return out

    before = await answers()
    assert len(before[0]) == 240
    cur = await db.execute(
        "SELECT job_id, config->>'compress_after' FROM timescaledb_information.jobs"
        " WHERE proc_name = 'policy_compression' AND hypertable_name = 'readings'"
    )
    job = await cur.fetchone()
    assert job is not None and job[1] == "8 days"
    await db.execute(f"CALL run_job({job[0]})")
    cur = await db.execute(
        "SELECT count(*) FILTER (WHERE is_compressed) FROM timescaledb_information.chunks"
        " WHERE hypertable_name = 'readings'"
    )
    assert await cur.fetchone() == (1,)
    assert await answers() == before


async def test_dead_letter_pruning_keeps_the_newest(db: psycopg.AsyncConnection) -> None:
    for i in range(150):
        await db.execute(
            "INSERT INTO dead_letters (topic, payload, payload_sha256, reason, detail,"
            " first_received_at, received_at) VALUES (%s, %s, %s, 'malformed_json', 'x',"
            " now() - make_interval(secs => %s), now() - make_interval(secs => %s))",
            (f"t/{i}", b"x", uuid.uuid4().bytes, 150 - i, 150 - i),
        )
    assert await prune_dead_letters(db, 100) == 50
    cur = await db.execute("SELECT topic FROM dead_letters")
    assert {r[0] for r in await cur.fetchall()} == {f"t/{i}" for i in range(50, 150)}


async def test_timescaledb_flavour(server_url: str) -> None:
    """Runs the hypertable path where the extension exists (production image); skips here."""
    with psycopg.connect(server_url, autocommit=True) as conn:
        available = conn.execute(
            "SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'"
        ).fetchone()
    if not available:
        pytest.skip("TimescaleDB extension is not installed on this PostgreSQL server")
    name = f"ioc_ts_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        url = psycopg.conninfo.make_conninfo(server_url, dbname=name)
        assert migrate(url) is Flavour.TIMESCALE
        with psycopg.connect(url) as conn:
            assert conn.execute(
                "SELECT count(*) FROM timescaledb_information.hypertables"
                " WHERE hypertable_name = 'readings'"
            ).fetchone() == (1,)
            assert conn.execute(
                "SELECT count(*) FROM timescaledb_information.continuous_aggregates"
            ).fetchone() == (2,)
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


async def test_only_old_delivered_dispatches_are_pruned(db: psycopg.AsyncConnection) -> None:
    from datetime import timedelta

    from ioc.storage.maintenance import prune_delivered

    for key, state, age_days in (
        ("old-delivered", "delivered", 100), ("new-delivered", "delivered", 10),
        ("old-failed", "failed", 100), ("old-pending", "pending", 100),
    ):  # fmt: skip
        await db.execute(
            """INSERT INTO outbox (idempotency_key, agency_id, channel, target, kind, payload,
                   state, created_at, delivered_at)
               VALUES (%s, 'pctt', 'mqtt', 'ioc/dispatch/pctt', 'incident.dispatched', '{}',
                       %s, now() - %s, CASE WHEN %s = 'delivered' THEN now() - %s END)""",
            (key, state, timedelta(days=age_days), state, timedelta(days=age_days)),
        )
    assert await prune_delivered(db, timedelta(days=90)) == 1
    rows = await (await db.execute("SELECT idempotency_key FROM outbox ORDER BY 1")).fetchall()
    assert [r[0] for r in rows] == ["new-delivered", "old-failed", "old-pending"]


def test_retention_settings_that_would_lose_answers_are_refused() -> None:
    from pydantic import ValidationError

    from ioc.core.settings import Settings

    assert Settings(retention_days=30).rollup_1m_days == 30  # by default, with the raw readings
    with pytest.raises(ValidationError, match="IOC_ROLLUP_1M_RETENTION_DAYS must be at least"):
        Settings(retention_days=30, rollup_1m_retention_days=20)
    with pytest.raises(ValidationError, match="IOC_ROLLUP_1H_RETENTION_DAYS must be at least"):
        Settings(retention_days=30, rollup_1h_retention_days=29)
    with pytest.raises(ValidationError, match="storage_flavour"):
        Settings(storage_flavour="hypertable")
