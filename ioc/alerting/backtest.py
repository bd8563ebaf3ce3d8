"""Backtest over stored readings: fetch them fast (binary COPY straight into numpy), then replay
through the pure engine (``ioc.rules.backtest.replay``). Used by ``ioc rules backtest`` and
``POST /api/v1/rules/backtest``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime

import numpy as np
import psycopg

from ioc.alerting.tide_source import PredictedTide
from ioc.core.tides import TidePredictor
from ioc.rules.backtest import BacktestResult, Stream, StreamReducer, replay
from ioc.rules.language import RuleSet
from ioc.storage import devices as device_store

FETCH_CONNECTIONS = 2  # PostgreSQL reads partitions on two backends while Python waits

# One row per series: PostgreSQL packs the times (timestamptz_send: int64 microseconds since
# 2000-01-01) and values (float8send) into two byte strings, which numpy reads in place. Row by
# row (COPY, or a cursor) costs a Python round per reading — minutes for 43 million.
_SERIES = """SELECT string_agg(timestamptz_send(time), '' ORDER BY time),
                    string_agg(float8send(value), '' ORDER BY time)
             FROM readings
             WHERE device_id = %s AND metric = %s AND time >= %s AND time < %s"""
_PG_EPOCH = 946_684_800.0  # 2000-01-01 in Unix seconds


async def fetch_stream(
    conn: psycopg.AsyncConnection, device_id: str, metric: str, start: float, end: float
) -> Stream:
    cur = await conn.execute(_SERIES, (device_id, metric, _utc(start), _utc(end)), binary=True)
    row = await cur.fetchone()
    raw_t, raw_v = (row[0], row[1]) if row and row[0] is not None else (b"", b"")
    times = np.frombuffer(raw_t, dtype=">i8").astype(np.float64) / 1e6 + _PG_EPOCH
    return Stream(device_id, metric, times, np.frombuffer(raw_v, dtype=">f8").astype(np.float64))


async def run_backtest(
    conninfo: str,
    ruleset: RuleSet,
    start: float,
    end: float,
    *,
    progress: Callable[[str, int, int], None] | None = None,
    tides: TidePredictor | None = None,
) -> BacktestResult:
    """``tides``: the tide model for the residual and forecast rules (the site's, usually)."""
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
        devices = await device_store.list_devices(conn, limit=10_000_000)
        wanted: list[tuple[str, str]] = []
        event_types: set[str] = set()
        for r in ruleset.rules:
            if not r.enabled:
                continue
            if r.select.event:
                event_types.add(r.select.event)
                if r.clear_event:
                    event_types.add(r.clear_event)
            if r.count_event:
                event_types.add(r.count_event)
            metric = r.select.metric
            for d in devices:
                if r.select.matches(d.kind, d.city, d.ward, d.id, d.attributes):
                    if metric:
                        wanted.append((d.id, metric))
                    elif r.type == "absence":
                        wanted.extend((d.id, m) for m in _metrics_of(d.kind))
        wanted = sorted(set(wanted))
        async with conn.cursor() as cur:
            await cur.execute(
                "SELECT extract(epoch FROM time)::float8, device_id, type FROM device_events"
                " WHERE type = ANY(%s) AND time >= %s AND time < %s ORDER BY time",
                (
                    sorted(event_types),
                    datetime.fromtimestamp(start, UTC),
                    datetime.fromtimestamp(end, UTC),
                ),
            )
            events = [(float(t), d, ty) for t, d, ty in await cur.fetchall()]

    by_id = {d.id: d for d in devices}
    streams: list[Stream] = []
    reducer = StreamReducer(ruleset, devices)
    queue = list(wanted)
    done = 0

    async def worker() -> None:
        nonlocal done
        async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as c:
            while queue:
                device_id, metric = queue.pop()
                streams.append(reducer(await fetch_stream(c, device_id, metric, start, end)))
                done += 1
                if progress is not None:
                    progress("fetch", done, len(wanted))

    async with asyncio.TaskGroup() as tg:
        for _ in range(min(FETCH_CONNECTIONS, max(1, len(wanted)))):
            tg.create_task(worker())

    def replay_progress(i: int, n: int) -> None:
        if progress is not None:
            progress("replay", i, n)

    return await asyncio.to_thread(
        replay,
        ruleset,
        devices,
        streams,
        events,
        start=start,
        end=end,
        progress=replay_progress,
        reducer=reducer,
        tide=PredictedTide(tides, by_id.get) if tides is not None else None,
    )


def _utc(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)


def _metrics_of(kind: str) -> list[str]:
    from ioc.core.catalogue import METRICS

    return list(METRICS.get(kind, {}))
