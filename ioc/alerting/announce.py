"""Stage *announce*: one ``alert`` frame on the live feed per changed alert row, and a
``NOTIFY ioc_alerts`` for the incident worker — in the transaction that changed them, so both
hear of exactly what committed.

Only alert frames: the ``readings`` and ``device`` frames are ingest's, written in the
transaction that stores the readings.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import psycopg

from ioc.alerting.pipeline import Pass
from ioc.alerting.store import alert_json
from ioc.storage.feed import FeedEvent, append

ALERTS_CHANNEL = "ioc_alerts"  # alerts changed: what wakes the incident worker


def frame(row: Mapping[str, Any]) -> FeedEvent:
    doc = alert_json(row)
    return FeedEvent("alert", doc, city=doc["city"], ward=doc["ward"], kind=doc["kind"])


async def announce_rows(conn: psycopg.AsyncConnection, rows: Iterable[Mapping[str, Any]]) -> None:
    """Frames for ``rows`` and the signal; call inside the transaction that changed them."""
    events = [frame(r) for r in rows]
    if not events:
        return
    # the signal first (delivered at COMMIT either way), the append last: the feed's lock is
    # held from the append to COMMIT, so no round trip of ours should follow it
    await conn.execute("SELECT pg_notify(%s, '')", (ALERTS_CHANNEL,))
    await append(conn, events)


async def announce(conn: psycopg.AsyncConnection, p: Pass) -> None:
    await announce_rows(conn, p.changed)
