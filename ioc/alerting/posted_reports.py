"""Citizen reports posted over Open311, into the alert stages.

Ingest hands the reports it commits from MQTT to the rules with its batch
(:meth:`~ioc.alerting.service.RulesService.on_batch`); a report posted over HTTP
(``POST /open311/v2/requests.json``) is only a row in ``reports`` and a ``NOTIFY ioc_reports``.
The rules service LISTENs on that channel and takes the posted rows it has not taken
(:func:`ioc.storage.reports.claim_for_rules`: marked in the database in the claiming transaction,
so a restart does not count them again, and per row, so reports committed out of id order by
several API processes are not skipped). Each becomes the same :class:`CitizenReport` record
ingest decodes, so :func:`ioc.alerting.evaluate.observe` turns both into the same ``report``
event. Reports relayed over MQTT are never taken here: they are counted once, with the batch.
"""

from __future__ import annotations

from typing import Any

import psycopg

from ioc.ingest.records import CitizenReport
from ioc.storage import reports as report_store

CHANNEL = report_store.CHANNEL
OPEN311_CHANNEL = "open311"  # the `channel` of a posted report's record
BATCH = 500  # reports claimed per transaction (bounded; the service loops until none is left)


async def claim(conn: psycopg.AsyncConnection[Any]) -> tuple[list[CitizenReport], int]:
    """Claim up to :data:`BATCH` posted reports in one transaction on ``conn`` (autocommit):
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
        channel=OPEN311_CHANNEL,
        external_id=str(row["id"]),
        time=row["reported_at"].timestamp(),
        category=row["service_code"],
        lat=row["lat"],
        lon=row["lon"],
        ward=row["ward"],
        description=row["description"],
        media_url=row["media_url"],
    )
