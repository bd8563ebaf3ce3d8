"""Reading queries: raw points or buckets, answered from raw data or rollups transparently.

Bucketed answers cover whole buckets: ``from`` is rounded down and ``to`` up to the bucket grid
(aligned to midnight Asia/Ho_Chi_Minh), so the same question gives the same numbers whether it is
answered from raw rows, from the 1-minute or 1-hour rollups, or from a mix of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg.rows import dict_row

from ioc.core import durations
from ioc.storage.migrations import Flavour

MAX_POINTS = 10_000
MAX_BUCKET = timedelta(days=366)
# Times outside this range are typos, and would overflow the bucket arithmetic.
EARLIEST = datetime.fromisoformat("1970-01-01T00:00:00+00:00")
LATEST = datetime.fromisoformat("2200-01-01T00:00:00+00:00")
# Bucket grid origin: local midnight, so day buckets are Vietnamese calendar days.
ORIGIN = datetime.fromisoformat("2000-01-01T00:00:00+07:00")
_ROLLUPS = ((3600, "readings_1h"), (60, "readings_1m"))


class QueryError(ValueError):
    """A reading query that cannot be answered; ``field`` names the parameter to fix."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def parse_bucket(text: str) -> timedelta:
    """A bucket width in the one duration grammar (:mod:`ioc.core.durations`): 30s, 5m, 1h, 1d."""
    if not durations.is_duration(text):
        raise QueryError("bucket", f"{text!r} is not a duration like 30s, 5m, 1h or 1d")
    width = durations.parse(text)
    if width <= timedelta(0):
        raise QueryError("bucket", f"{text!r} is not a duration like 30s, 5m, 1h or 1d")
    if width > MAX_BUCKET:
        raise QueryError("bucket", f"{text!r} is longer than {MAX_BUCKET.days} days")
    return width


@dataclass(frozen=True, slots=True)
class ReadingQuery:
    device_id: str
    metric: str
    start: datetime
    end: datetime
    bucket: timedelta | None = None

    def __post_init__(self) -> None:
        if self.start.tzinfo is None:
            raise QueryError("from", "must carry a UTC offset")
        if self.end.tzinfo is None:
            raise QueryError("to", "must carry a UTC offset")
        for name, t in (("from", self.start), ("to", self.end)):
            if not EARLIEST <= t <= LATEST:
                raise QueryError(name, f"{t.isoformat()} is outside 1970..2200")
        if self.end <= self.start:
            raise QueryError("to", "must be later than 'from'")
        if self.bucket is not None:
            n = (self.end - self.start) / self.bucket
            if n > MAX_POINTS:
                raise QueryError(
                    "bucket",
                    f"{n:.0f} buckets exceed the limit of {MAX_POINTS}; use a larger bucket",
                )


async def query_readings(
    conn: psycopg.AsyncConnection, flavour: Flavour, q: ReadingQuery
) -> list[dict[str, Any]]:
    if q.bucket is None:
        return await _raw(conn, q)
    return await _bucketed(conn, flavour, q)


async def _raw(conn: psycopg.AsyncConnection, q: ReadingQuery) -> list[dict[str, Any]]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT time, value FROM readings WHERE device_id = %s AND metric = %s"
            " AND time >= %s AND time < %s ORDER BY time LIMIT %s",
            (q.device_id, q.metric, q.start, q.end, MAX_POINTS + 1),
        )
        rows = await cur.fetchall()
    if len(rows) > MAX_POINTS:
        raise QueryError(
            "bucket", f"more than {MAX_POINTS} raw points in range; narrow it or add a bucket"
        )
    return rows


async def rollup_boundary(conn: psycopg.AsyncConnection, flavour: Flavour) -> datetime | None:
    """Rollups are exact for buckets ending at or before this time (None: no rollups usable).

    Plain: up to the last refresh, and not past the oldest reading stored since. TimescaleDB's
    real-time aggregates add raw rows above their watermark by themselves, but a late reading
    below it stays invisible until the next refresh: so only ``dirty_from`` bounds them.
    """
    if flavour is Flavour.TIMESCALE:
        cur = await conn.execute("SELECT dirty_from FROM rollup_state WHERE name = 'readings'")
        row = await cur.fetchone()
        if row is None or row[0] is None:
            return LATEST
        return row[0] if isinstance(row[0], datetime) else None
    cur = await conn.execute(
        "SELECT CASE WHEN isfinite(b) THEN b END FROM ("
        " SELECT least(refreshed_to, coalesce(dirty_from, 'infinity')) AS b FROM rollup_state"
        " WHERE name = 'readings') s"
    )
    row = await cur.fetchone()
    value = row[0] if row else None
    return value if isinstance(value, datetime) else None


async def _bucketed(
    conn: psycopg.AsyncConnection, flavour: Flavour, q: ReadingQuery
) -> list[dict[str, Any]]:
    assert q.bucket is not None
    width = q.bucket
    start = _floor(q.start, width)
    end = _ceil(q.end, width)
    seconds = int(width.total_seconds())
    rollup = next((name for size, name in _ROLLUPS if seconds % size == 0), None)
    boundary = await rollup_boundary(conn, flavour) if rollup else None
    # Rollup rows answer whole buckets before the cut; raw rows answer the rest.
    cut = start if boundary is None else min(max(_floor(boundary, width), start), end)
    parts: list[str] = []
    params: dict[str, Any] = {
        "device": q.device_id,
        "metric": q.metric,
        "start": start,
        "cut": cut,
        "end": end,
        "width": width,
        "origin": ORIGIN,
    }
    if rollup and cut > start:
        parts.append(
            "SELECT date_bin(%(width)s, bucket, %(origin)s) AS time, min(min) AS min,"
            " max(max) AS max, sum(sum) AS sum, sum(count)::bigint AS count"
            f" FROM {rollup} WHERE device_id = %(device)s AND metric = %(metric)s"
            " AND bucket >= %(start)s AND bucket < %(cut)s GROUP BY 1"
        )
    if cut < end:
        parts.append(
            "SELECT date_bin(%(width)s, time, %(origin)s) AS time, min(value) AS min,"
            " max(value) AS max, sum(value) AS sum, count(*) AS count"
            " FROM readings WHERE device_id = %(device)s AND metric = %(metric)s"
            " AND time >= %(cut)s AND time < %(end)s GROUP BY 1"
        )
    sql = " UNION ALL ".join(parts) + " ORDER BY time"
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(sql.encode(), params)
        rows = await cur.fetchall()
    return [
        {
            "time": r["time"],
            "value": r["sum"] / r["count"],
            "min": r["min"],
            "max": r["max"],
            "count": r["count"],
        }
        for r in rows
    ]


def _floor(t: datetime, width: timedelta) -> datetime:
    return ORIGIN + ((t - ORIGIN) // width) * width


def _ceil(t: datetime, width: timedelta) -> datetime:
    f = _floor(t, width)
    return f if f == t else f + width
