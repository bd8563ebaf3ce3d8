"""Restart: the engine gets back what it knew before the stop.

Open alerts come back from the ``alerts`` table (pending timers keep their deadlines, firing
alerts are not fired again; open alerts no current rule produces are resolved); rate and
aggregate windows are refilled from stored readings; anomaly rules get their per-hour history
(28 days) from stored readings; absence timers start from each device's last message.
"""

from __future__ import annotations

import numpy as np
import psycopg

from ioc.alerting import store
from ioc.alerting.announce import announce_rows
from ioc.alerting.pipeline import OpenAlert, OpenAlerts
from ioc.rules.engine import Engine

ANOMALY_HISTORY = "28 days"


async def restore(
    conn: psycopg.AsyncConnection, engine: Engine, book: OpenAlerts, now: float
) -> int:
    """Fill ``engine`` and ``book``; returns how many orphans were resolved (at ``now``)."""
    opened = await store.open_alerts(conn)
    orphans = engine.restore(opened)
    async with conn.transaction():
        await announce_rows(conn, await store.resolve_orphans(conn, orphans, now))
    for a in opened:
        if a not in orphans:
            book.by_fingerprint[a.fingerprint] = OpenAlert(0, dict(a.labels), a.state, None)
    for fp, (alert_id, suppressed) in (await store.open_ids(conn)).items():
        if fp in book.by_fingerprint:
            book.by_fingerprint[fp].id = alert_id
            book.by_fingerprint[fp].suppressed_by = suppressed
    await _refill(conn, engine)
    return len(orphans)


async def _refill(conn: psycopg.AsyncConnection, engine: Engine) -> None:
    windows: dict[str, float] = {}
    history: set[str] = set()
    for r in engine.rules.values():
        if r.type in ("rate", "aggregate") and r.select.metric:
            windows[r.select.metric] = max(windows.get(r.select.metric, 0), r.window_s)
        if r.type == "anomaly" and r.select.metric:
            history.add(r.select.metric)
    async with conn.cursor() as cur:
        for metric, window in windows.items():
            await cur.execute(
                "SELECT device_id, extract(epoch FROM time), value FROM readings"
                " WHERE metric = %s AND time > now() - make_interval(secs => %s)"
                " ORDER BY device_id, time",
                (metric, window),
            )
            by_device: dict[str, list[tuple[float, float]]] = {}
            for device_id, t, v in await cur.fetchall():
                by_device.setdefault(device_id, []).append((float(t), v))
            for device_id, samples in by_device.items():
                engine.preload(device_id, metric, samples)
        for metric in history:
            await cur.execute(
                "SELECT device_id, extract(epoch FROM time), value FROM readings"
                " WHERE metric = %s AND time > now() - %s::interval ORDER BY device_id",
                (metric, ANOMALY_HISTORY),
            )
            by_dev: dict[str, list[tuple[float, float]]] = {}
            for device_id, t, v in await cur.fetchall():
                by_dev.setdefault(device_id, []).append((float(t), v))
            for device_id, pts in by_dev.items():
                arr = np.array(pts)
                engine.seed_history(device_id, metric, arr[:, 0], arr[:, 1])
        await cur.execute(
            "SELECT device_id, extract(epoch FROM last_seen_at) FROM device_state"
            " WHERE last_seen_at IS NOT NULL"
        )
        for device_id, t in await cur.fetchall():
            engine.seen(device_id, float(t))
