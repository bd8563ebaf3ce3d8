"""Citizen reports into the alert stages, from the ``reports`` table: each committed report once,
whatever its channel and wherever the rules run.

A report is committed by ingest (relayed over MQTT: app, hotline, Zalo) or by an API process
(``POST /open311/v2/requests.json``); either way its row's commit sends ``NOTIFY ioc_reports``.
The rules service LISTENs on that channel and claims the rows no rules service has taken
(:func:`ioc.storage.reports.claim_for_rules`: ``rules_at`` set in the claiming transaction, per
row), then evaluates them as :class:`CitizenReport` records, which
:func:`ioc.alerting.evaluate.observe` turns into ``report`` events. Why from the table and not
from ingest's batch: Open311 reports are in no batch; ``ioc rules run`` does not subscribe to
reports over MQTT; and the table holds each report once (``dedupe_key``: a relay retrying or a
QoS 1 redelivery is the same row), so nothing is counted twice. Why a per-row mark and not a
largest-id watermark: several API processes and ingest commit bigserial ids out of order, and a
watermark would skip a smaller id committed after a larger one.
"""

from __future__ import annotations

from typing import Any

import psycopg

from ioc.ingest.records import CitizenReport
from ioc.storage import reports as report_store

CHANNEL = report_store.CHANNEL
BATCH = 500  # reports claimed per transaction (bounded; the service loops until none is left)


async def claim(conn: psycopg.AsyncConnection[Any]) -> tuple[list[CitizenReport], int]:
    """Claim up to :data:`BATCH` reports in one transaction on ``conn`` (autocommit):
    ``(records, claimed)``. A report without a ward (a position outside every outline, an
    address naming no unit) is claimed but yields no record: the rules group reports by ward."""
    async with conn.transaction():
        rows = await report_store.claim_for_rules(conn, limit=BATCH)
    return [r for r in map(_record, rows) if r is not None], len(rows)


def _record(row: dict[str, Any]) -> CitizenReport | None:
    if not row["city"] or not row["ward"]:
        return None
    return CitizenReport(
        city=row["city"],
        channel=row["source"],
        external_id=row["external_id"] or str(row["id"]),
        time=row["reported_at"].timestamp(),
        category=row["service_code"],
        lat=row["lat"],
        lon=row["lon"],
        ward=row["ward"],
        description=row["description"],
        media_url=row["media_url"],
    )
