"""Citizen reports (table ``reports``): idempotent intake from MQTT and Open311, and the reads
the Open311 API answers from.

**One report per real submission.** Every report carries a ``dedupe_key`` (UNIQUE) and is inserted
with ``ON CONFLICT (dedupe_key) DO NOTHING``, so the same report sent twice is one row:

- MQTT: ``mqtt:{city}:{channel}:{id}`` — the relaying channel's own id is unique per channel
  (and city: the topic's city), so a QoS 1 redelivery or a relay retrying is the same row.
- Open311 POST: ``open311:`` + SHA-256 (hex) of the canonical JSON array
  ``[client, service_code, lat, long, address_string, address_id, description, media_url,
  device_id, account_id]`` — the submitting client (its api_key's name), then the fields as
  posted (strings stripped, absent = null, coordinates as floats so ``9.78`` and ``9.780`` are
  one value). A client that retries a POST whose answer it lost gets the first request back.
  There is no time in the key: the same words at the same place from the same device are taken
  as the same report however late they come again (see docs/open311.md).

Every insert that creates a row sends ``NOTIFY ioc_reports`` (delivered at COMMIT), which wakes the
incident router, which takes rows with ``routed_at IS NULL``, and the rules service, which takes
rows with ``rules_at IS NULL`` (:func:`claim_for_rules`). This module never routes nor evaluates.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

CHANNEL = "ioc_reports"
MAX_DESCRIPTION = 4000  # the table's CHECK; Open311's own limit


@dataclass(frozen=True, slots=True)
class NewReport:
    dedupe_key: str
    source: str  # open311 | app | hotline | zalo
    service_code: str
    description: str
    reported_at: datetime
    external_id: str | None = None
    city: str | None = None
    ward: str | None = None
    lat: float | None = None
    lon: float | None = None
    address: str | None = None
    media_url: str | None = None
    reporter: Mapping[str, str] = field(default_factory=dict)  # personal data: never listed
    client: str | None = None


def mqtt_dedupe_key(city: str, channel: str, external_id: str) -> str:
    return f"mqtt:{city}:{channel}:{external_id}"


def open311_dedupe_key(
    *,
    client: str,
    service_code: str,
    lat: float | None,
    long: float | None,
    address_string: str | None,
    address_id: str | None,
    description: str,
    media_url: str | None,
    device_id: str | None,
    account_id: str | None,
) -> str:
    canonical = json.dumps(
        [
            client,
            service_code,
            None if lat is None else float(lat),
            None if long is None else float(long),
            address_string,
            address_id,
            description,
            media_url,
            device_id,
            account_id,
        ],
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return "open311:" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def new_token() -> str:
    """The Open311 token of a report: unguessable, so it can stand for the request in a URL."""
    return secrets.token_urlsafe(16)


_INSERT = """
    INSERT INTO reports (dedupe_key, token, source, external_id, service_code, city, ward, lat,
                         lon, address, description, media_url, reporter, client, reported_at)
    VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
    ON CONFLICT (dedupe_key) DO NOTHING"""


def _params(r: NewReport) -> tuple[Any, ...]:
    return (
        r.dedupe_key, new_token(), r.source, r.external_id, r.service_code, r.city, r.ward,
        r.lat, r.lon, r.address, r.description, r.media_url, Jsonb(dict(r.reporter)), r.client,
        r.reported_at,
    )  # fmt: skip


async def insert(conn: psycopg.AsyncConnection[Any], report: NewReport) -> tuple[int, str, bool]:
    """Insert one report unless its dedupe_key exists: ``(id, token, created)`` of the row.

    Run it inside the caller's transaction: the NOTIFY goes out when that commits. A concurrent
    insert of the same key waits for the other transaction (the unique index) and then finds
    its row, so two simultaneous POSTs still make one report.
    """
    async with conn.cursor() as cur:
        await cur.execute(_INSERT + " RETURNING id, token", _params(report))
        row = await cur.fetchone()
        if row is not None:
            await cur.execute("SELECT pg_notify(%s, %s)", (CHANNEL, str(row[0])))
            return int(row[0]), str(row[1]), True
        await cur.execute(
            "SELECT id, token FROM reports WHERE dedupe_key = %s", (report.dedupe_key,)
        )
        row = await cur.fetchone()
    assert row is not None, "a conflicting report vanished (reports are never deleted)"
    return int(row[0]), str(row[1]), False


async def insert_many(conn: psycopg.AsyncConnection[Any], reports: Sequence[NewReport]) -> int:
    """Insert a batch (the ingest writer's, inside its transaction); returns how many were new."""
    if not reports:
        return 0
    created = 0
    async with conn.cursor() as cur:
        # executemany's rowcount is the sum over the statements: the rows actually inserted.
        await cur.executemany(_INSERT, [_params(r) for r in reports])
        created = max(cur.rowcount, 0)
        if created:
            await cur.execute("SELECT pg_notify(%s, '')", (CHANNEL,))
    return created


# -- the rules' share ---------------------------------------------------------------------------

# Every report reaches the rule engine from this table, once (docs/rules.md, "Citizen reports
# reach the rules once"): the rows no rules service has taken.
FOR_RULES_SQL = "rules_at IS NULL"


async def claim_for_rules(
    conn: psycopg.AsyncConnection[Any], *, limit: int
) -> list[dict[str, Any]]:
    """Up to ``limit`` reports the rule engine has not taken, oldest first, marked taken
    (``rules_at``) in the caller's transaction; rows another transaction is claiming are skipped,
    so two rules services never take the same report."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"""UPDATE reports SET rules_at = now()
                WHERE id IN (SELECT id FROM reports WHERE {FOR_RULES_SQL}
                             ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED)
                RETURNING id, source, external_id, city, ward, service_code, reported_at, lat,
                          lon, description, media_url""",
            (limit,),
        )
        rows = await cur.fetchall()
    return sorted(rows, key=lambda r: (r["reported_at"], r["id"]))


# -- reads for Open311 -------------------------------------------------------------------------

# Open311's two statuses from the incident's: open until the incident is resolved or closed.
OPEN311_STATUS_SQL = "CASE WHEN i.status IN ('resolved', 'closed') THEN 'closed' ELSE 'open' END"

# Open311 status_notes are public (requests.json needs no key): only the notes meant for the
# citizen — the agency's progress and resolution, an operator's closing or reopening word. Rejection
# reasons, reassignment, merge and split notes are internal; rating comments are another
# citizen's words.
PUBLIC_NOTE_KINDS = "('progress', 'resolve', 'close', 'reopen')"

_VIEW = f"""
    SELECT r.id, r.token, r.source, r.service_code, r.city, r.ward, r.lat, r.lon, r.address,
           r.description, r.media_url, r.reported_at, r.received_at, r.incident_id,
           r.rating, r.rating_comment, r.rated_at,
           i.status AS incident_status, i.agency_id, i.deadline_at,
           i.updated_at AS incident_updated_at, i.resolved_at, i.closed_at,
           {OPEN311_STATUS_SQL} AS status,
           (SELECT e.note FROM incident_events e
             WHERE e.incident_id = i.id AND e.kind IN {PUBLIC_NOTE_KINDS}
               AND e.note IS NOT NULL AND e.note <> ''
             ORDER BY e.time DESC, e.id DESC LIMIT 1) AS status_notes
    FROM reports r LEFT JOIN incidents i ON i.id = r.incident_id"""


async def get(conn: psycopg.AsyncConnection[Any], report_id: int) -> dict[str, Any] | None:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_VIEW + " WHERE r.id = %s", (report_id,))
        return await cur.fetchone()


async def by_token(conn: psycopg.AsyncConnection[Any], token: str) -> dict[str, Any] | None:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute("SELECT id, token FROM reports WHERE token = %s", (token,))
        return await cur.fetchone()


async def search(
    conn: psycopg.AsyncConnection[Any],
    *,
    ids: Sequence[int] | None = None,
    service_codes: Sequence[str] | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    statuses: Sequence[str] | None = None,
    limit: int = 1000,
) -> list[dict[str, Any]]:
    """Reports newest first (by ``reported_at``, Open311's requested_datetime). ``ids`` given:
    those reports only, every other filter ignored (as the spec says)."""
    if ids is not None:
        where = "r.id = ANY(%(ids)s)"
    else:
        where = (
            "(%(codes)s::text[] IS NULL OR r.service_code = ANY(%(codes)s))"
            " AND (%(start)s::timestamptz IS NULL OR r.reported_at >= %(start)s)"
            " AND (%(end)s::timestamptz IS NULL OR r.reported_at <= %(end)s)"
            f" AND (%(statuses)s::text[] IS NULL OR {OPEN311_STATUS_SQL} = ANY(%(statuses)s))"
        )
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"{_VIEW} WHERE {where} ORDER BY r.reported_at DESC, r.id DESC LIMIT %(limit)s",
            {
                "ids": list(ids) if ids is not None else None,
                "codes": list(service_codes) if service_codes else None,
                "start": start,
                "end": end,
                "statuses": list(statuses) if statuses else None,
                "limit": limit,
            },
        )
        return await cur.fetchall()


# -- feedback ----------------------------------------------------------------------------------


async def lock_for_rating(
    conn: psycopg.AsyncConnection[Any], report_id: int
) -> dict[str, Any] | None:
    """The report with its incident's status, locked until the transaction ends (two ratings
    of one report cannot interleave)."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            """SELECT r.id, r.incident_id, r.rating, r.rating_comment, r.rated_at,
                      i.status AS incident_status
               FROM reports r LEFT JOIN incidents i ON i.id = r.incident_id
               WHERE r.id = %s FOR UPDATE OF r""",
            (report_id,),
        )
        return await cur.fetchone()


async def record_rating(
    conn: psycopg.AsyncConnection[Any],
    report_id: int,
    *,
    rating: int,
    comment: str | None,
    at: datetime,
) -> None:
    await conn.execute(
        "UPDATE reports SET rating = %s, rating_comment = %s, rated_at = %s WHERE id = %s",
        (rating, comment, at, report_id),
    )
