"""Periodic storage upkeep: rollups, partitions and retention (plain PostgreSQL), dead letters,
the live feed's retention.

Retention covers every table of readings: raw readings (``IOC_RETENTION_DAYS``), the 1-minute
rollup (``IOC_ROLLUP_1M_RETENTION_DAYS``, by default the same) and the 1-hour rollup
(``IOC_ROLLUP_1H_RETENTION_DAYS``). Under TimescaleDB the extension's own jobs do rollups
(continuous aggregates), compression and retention; ``apply_policies`` keeps the three retention
policies in line with the settings.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

import psycopg

from ioc.storage import feed
from ioc.storage.migrations import Flavour

log = logging.getLogger(__name__)

MAX_REFRESH_SPAN = timedelta(hours=6)
# Partitions are created this many days ahead so the writer rarely has to create one itself.
PARTITIONS_AHEAD_DAYS = 2


@dataclass(frozen=True, slots=True)
class MaintenanceReport:
    partitions_created: int = 0
    partitions_dropped: int = 0
    rollup_rows: int = 0
    dead_letters_pruned: int = 0
    feed_events_pruned: int = 0
    deliveries_pruned: int = 0


async def run_maintenance(
    conn: psycopg.AsyncConnection,
    flavour: Flavour,
    *,
    retention_days: int,
    dead_letter_limit: int,
    max_age_s: int,
    feed_retention: timedelta | None = None,
    delivered_retention: timedelta | None = None,
    rollup_1m_days: int | None = None,
    rollup_1h_days: int | None = None,
) -> MaintenanceReport:
    """One round of upkeep. ``rollup_1m_days`` defaults to ``retention_days``; without
    ``rollup_1h_days`` the hourly rollup is not pruned (the service always passes it)."""
    created = dropped = rolled = 0
    if flavour is Flavour.PLAIN:
        created = await ensure_partitions_ahead(conn, max_age_s)
        rolled = await refresh_rollups(conn)
        dropped = await drop_expired_partitions(conn, retention_days)
        await prune_rollups(conn, rollup_1m_days or retention_days, rollup_1h_days)
    else:
        await refresh_continuous_aggregates(conn)
    pruned = await prune_dead_letters(conn, dead_letter_limit)
    feed_pruned = await feed.prune(conn, feed_retention) if feed_retention is not None else 0
    delivered = (
        await prune_delivered(conn, delivered_retention) if delivered_retention is not None else 0
    )
    return MaintenanceReport(created, dropped, rolled, pruned, feed_pruned, delivered)


async def prune_delivered(conn: psycopg.AsyncConnection, older_than: timedelta) -> int:
    """Delivered outbox rows (and their attempt logs) older than ``older_than``; pending and
    failed rows stay whatever their age — they are work not yet done."""
    async with conn.transaction():
        cur = await conn.execute(
            "DELETE FROM outbox WHERE state = 'delivered' AND delivered_at < now() - %s",
            (older_than,),
        )
    return cur.rowcount


async def apply_policies(
    conn: psycopg.AsyncConnection,
    flavour: Flavour,
    retention_days: int,
    max_age_s: int,
    *,
    rollup_1m_days: int | None = None,
    rollup_1h_days: int | None = None,
) -> None:
    """At start: TimescaleDB retention policies from the settings (the raw hypertable and both
    continuous aggregates; ``rollup_1m_days`` defaults to ``retention_days``, no
    ``rollup_1h_days`` means no policy on the hourly one); plain: partitions ahead."""
    if flavour is Flavour.TIMESCALE:
        policies: list[tuple[str, int | None]] = [
            ("readings", retention_days),
            ("readings_1m", rollup_1m_days or retention_days),
            ("readings_1h", rollup_1h_days),
        ]
        async with conn.transaction():
            for table, days in policies:
                await conn.execute(
                    "SELECT remove_retention_policy(%s::regclass, if_exists => true)", (table,)
                )
                if days is not None:
                    await conn.execute(
                        "SELECT add_retention_policy(%s::regclass, make_interval(days => %s))",
                        (table, days),
                    )
    else:
        await ensure_partitions_ahead(conn, max_age_s)


async def ensure_partitions_ahead(conn: psycopg.AsyncConnection, max_age_s: int) -> int:
    """Partitions for every day a reading may be accepted for (IOC_READING_MAX_AGE_S back, and
    some days ahead), so the writer's hot path never runs CREATE TABLE: that takes an exclusive
    lock on ``readings`` and could deadlock with a rollup refresh."""
    async with conn.transaction():
        cur = await conn.execute(
            "SELECT ioc_ensure_readings_partitions(now() - make_interval(secs => %s),"
            " now() + make_interval(days => %s))",
            (max_age_s, PARTITIONS_AHEAD_DAYS),
        )
        row = await cur.fetchone()
    return int(row[0]) if row else 0


async def drop_expired_partitions(conn: psycopg.AsyncConnection, retention_days: int) -> int:
    """Retention of raw readings by dropping whole daily partitions (no DELETE, no bloat)."""
    cur = await conn.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = 'readings'::regclass AND c.relname ~ '^readings_p[0-9]{8}$'"
        " AND to_date(substring(c.relname from 11), 'YYYYMMDD') + 1"
        "     <= (now() AT TIME ZONE 'UTC')::date - %s",
        (retention_days,),
    )
    names = [r[0] for r in await cur.fetchall()]
    for name in names:
        async with conn.transaction():
            await conn.execute(f'DROP TABLE IF EXISTS "{name}"')
        log.info("retention: dropped partition %s", name)
    return len(names)


async def prune_rollups(
    conn: psycopg.AsyncConnection, rollup_1m_days: int, rollup_1h_days: int | None
) -> bool:
    """Plain flavour: delete rollup rows from UTC days older than their retention (the same
    day cut as the raw partitions, so raw and 1-minute answers agree with equal retentions).

    Once a UTC day, or at once when the retentions change: a DELETE by bucket scans the table
    (its key leads with the device), too much for every round. ``ioc_meta`` remembers the last
    run, and its row lock keeps two API processes from pruning together. Returns whether it ran.
    """
    marker = f"{rollup_1m_days} {rollup_1h_days}"
    async with conn.transaction():
        cur = await conn.execute(
            "INSERT INTO ioc_meta AS m (key, value)"
            " VALUES ('rollups_pruned', (now() AT TIME ZONE 'UTC')::date || ' ' || %s)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value"
            " WHERE m.value IS DISTINCT FROM excluded.value RETURNING 1",
            (marker,),
        )
        if await cur.fetchone() is None:
            return False
        for table, days in (("readings_1m", rollup_1m_days), ("readings_1h", rollup_1h_days)):
            if days is None:
                continue
            cur = await conn.execute(
                f"DELETE FROM {table} WHERE bucket <"
                " (((now() AT TIME ZONE 'UTC')::date - %s)::timestamp AT TIME ZONE 'UTC')",
                (days,),
            )
            if cur.rowcount:
                log.info("retention: %d rows of %s older than %d days", cur.rowcount, table, days)
    return True


async def refresh_rollups(conn: psycopg.AsyncConnection) -> int:
    """Recompute the 1-minute and 1-hour rollups from the oldest stale minute up to now.

    Correct against concurrent writers: each writer marks ``dirty_from`` in the transaction that
    inserts its readings, and that UPDATE waits for our row lock, so a batch we could not see is
    always marked stale again after we commit.
    """
    async with conn.transaction():
        cur = await conn.execute(
            "SELECT date_trunc('minute', now(), 'UTC'),"
            " CASE WHEN isfinite(refreshed_to) THEN least(refreshed_to, dirty_from) END,"
            " dirty_from FROM rollup_state WHERE name = 'readings' FOR UPDATE"
        )
        row = await cur.fetchone()
        assert row is not None, "rollup_state row missing: migrations incomplete"
        hi, lo, dirty_from = row
        if lo is None:  # first refresh ever: start from the oldest reading
            lo = dirty_from
            if lo is None:
                cur = await conn.execute("SELECT min(time) FROM readings")
                lo = (await cur.fetchone() or (None,))[0]
        rows = 0
        if lo is not None and lo < hi:
            # One run recomputes at most MAX_REFRESH_SPAN: writers wait on our row lock, so a
            # device flushing days of buffered data must not stall intake for the whole rebuild.
            # Everything before ``hi`` is then exact; the next run goes on from there.
            hour = lo.replace(minute=0, second=0, microsecond=0)
            hi = min(hi, hour + MAX_REFRESH_SPAN)
            cur = await conn.execute(
                "INSERT INTO readings_1m AS r (bucket, device_id, metric, min, max, sum, count)"
                " SELECT date_trunc('minute', time, 'UTC'), device_id, metric,"
                " min(value), max(value),"
                " sum(value), count(*) FROM readings"
                " WHERE time >= date_trunc('minute', %(lo)s::timestamptz, 'UTC') AND time < %(hi)s"
                " GROUP BY 1, 2, 3"
                " ON CONFLICT (device_id, metric, bucket) DO UPDATE SET min = excluded.min,"
                " max = excluded.max, sum = excluded.sum, count = excluded.count",
                {"lo": lo, "hi": hi},
            )
            rows = cur.rowcount
            await conn.execute(
                "INSERT INTO readings_1h AS r (bucket, device_id, metric, min, max, sum, count)"
                " SELECT date_trunc('hour', bucket, 'UTC'), device_id, metric, min(min), max(max),"
                " sum(sum), sum(count) FROM readings_1m"
                " WHERE bucket >= date_trunc('hour', %(lo)s::timestamptz, 'UTC')"
                " AND bucket < %(hi)s"
                " GROUP BY 1, 2, 3"
                " ON CONFLICT (device_id, metric, bucket) DO UPDATE SET min = excluded.min,"
                " max = excluded.max, sum = excluded.sum, count = excluded.count",
                {"lo": lo, "hi": hi},
            )
        await conn.execute(
            "UPDATE rollup_state SET refreshed_to = %s, dirty_from = NULL WHERE name = 'readings'",
            (hi,),
        )
    return rows


async def refresh_continuous_aggregates(conn: psycopg.AsyncConnection) -> bool:
    """TimescaleDB: refresh both continuous aggregates from the oldest late reading, so their
    materialised part includes it. Returns True if it refreshed."""
    cur = await conn.execute(
        "SELECT dirty_from, dirty_seq FROM rollup_state WHERE name = 'readings'"
    )
    row = await cur.fetchone()
    await conn.commit()
    if row is None or row[0] is None:
        return False
    dirty_from, seq = row
    autocommit = conn.autocommit
    await conn.set_autocommit(True)  # CALL refresh_continuous_aggregate refuses a transaction
    try:
        for view, unit in (("readings_1m", "minute"), ("readings_1h", "hour")):
            await conn.execute(
                f"CALL refresh_continuous_aggregate('{view}',"
                f" date_trunc('{unit}', %s::timestamptz, 'UTC'), NULL)",
                (dirty_from,),
            )
        # Cleared only if no writer marked new data meanwhile (it bumps dirty_seq).
        await conn.execute(
            "UPDATE rollup_state SET dirty_from = NULL WHERE name = 'readings' AND dirty_seq = %s",
            (seq,),
        )
    finally:
        await conn.set_autocommit(autocommit)
    return True


async def prune_dead_letters(conn: psycopg.AsyncConnection, limit: int) -> int:
    async with conn.transaction():
        cur = await conn.execute(
            "DELETE FROM dead_letters WHERE id IN (SELECT id FROM dead_letters"
            " ORDER BY received_at DESC OFFSET %s)",
            (limit,),
        )
    if cur.rowcount:
        log.warning("dead letters over the limit of %d: pruned the %d oldest", limit, cur.rowcount)
    return cur.rowcount
