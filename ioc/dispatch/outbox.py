"""The transactional outbox: written with the incident change, claimed and settled by the worker.

``enqueue`` runs inside the caller's transaction, so a dispatch exists exactly when the incident
change it announces committed; ``NOTIFY ioc_outbox`` (sent at that commit) wakes the workers.

Claiming is ``SELECT … FOR UPDATE SKIP LOCKED`` plus a lease: the claim moves ``next_attempt_at``
past the attempt's longest duration and commits at once, so no transaction stays open while an
agency's server answers, several workers never take the same row, and a row whose worker died
becomes due again when its lease ends (redelivered with the same idempotency key).

Order: the rows of one incident to one agency on one channel form a *stream*; a row is claimed
only when every earlier row of its stream is delivered, so an update never overtakes its dispatch
(and waits behind a failed one until an operator retries it).
"""

from __future__ import annotations

import uuid
from typing import Any

import orjson
import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from ioc.core.settings import Settings
from ioc.core.topics import dispatch_topic
from ioc.dispatch.delivery import MQTT, WEBHOOK, Attempt, Delivery, Outcome
from ioc.dispatch.webhook import webhook_targets

OUTBOX_CHANNEL = "ioc_outbox"
MQTT_QOS = 1


def _dumps(obj: Any) -> str:
    # orjson: datetimes in the caller's payload become RFC 3339 with their offset
    return orjson.dumps(obj).decode()


def mqtt_topic(settings: Settings, agency_id: str) -> str:
    return dispatch_topic(settings.dispatch_mqtt_prefix, agency_id)


async def enqueue(
    conn: psycopg.AsyncConnection[Any],
    *,
    incident_id: int | None,
    agency_id: str,
    kind: str,
    payload: dict[str, Any],
    settings: Settings,
) -> list[int]:
    """Write one outbox row per channel of ``agency_id`` and return their ids.

    Every agency gets its MQTT topic (``{IOC_DISPATCH_MQTT_PREFIX}/{agency}``, QoS 1); agencies in
    ``IOC_AGENCY_WEBHOOKS`` also get their webhook. Call it inside the transaction that changes
    the incident, on the same connection: it does not commit (nested in a savepoint when a
    transaction is open), so the dispatch is durable if and only if the change is.
    """
    if not agency_id or "/" in agency_id or "+" in agency_id or "#" in agency_id:
        raise ValueError(f"agency_id: {agency_id!r} is not a valid agency code")
    if not kind:
        raise ValueError("kind: must not be empty")
    channels = [(MQTT, mqtt_topic(settings, agency_id))]
    webhook = webhook_targets(settings).get(agency_id)
    if webhook is not None:
        channels.append((WEBHOOK, webhook.url))
    return await insert(
        conn,
        incident_id=incident_id,
        agency_id=agency_id,
        kind=kind,
        payload=payload,
        channels=channels,
    )


async def insert(
    conn: psycopg.AsyncConnection[Any],
    *,
    incident_id: int | None,
    agency_id: str,
    kind: str,
    payload: dict[str, Any],
    channels: list[tuple[str, str]],
) -> list[int]:
    """One row per ``(channel, target)`` and the wake-up; the caller's transaction decides.
    :func:`enqueue` for agencies; :mod:`ioc.alerting.notify` for notification receivers
    (``agency_id`` ``receiver:{name}``)."""
    body = Jsonb(payload, dumps=_dumps)
    ids: list[int] = []
    async with conn.transaction(), conn.cursor() as cur:
        for channel, target in channels:
            await cur.execute(
                "INSERT INTO outbox (idempotency_key, incident_id, agency_id, channel, target,"
                " kind, payload) VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id",
                (str(uuid.uuid4()), incident_id, agency_id, channel, target, kind, body),
            )
            row = await cur.fetchone()
            assert row is not None
            ids.append(int(row[0]))
        await cur.execute(f"NOTIFY {OUTBOX_CHANNEL}")
    return ids


# A row is due when it is pending, its time has come, and nothing earlier in its stream is still
# undelivered. FOR UPDATE OF o SKIP LOCKED: rows another worker is claiming right now are passed
# over, not waited for. Oldest due first.
_CLAIM = """
WITH due AS (
    SELECT o.id FROM outbox o
    WHERE o.state = 'pending' AND o.next_attempt_at <= now()
      AND NOT (o.incident_id IS NOT NULL AND EXISTS (
          SELECT 1 FROM outbox e
          WHERE e.incident_id = o.incident_id AND e.agency_id = o.agency_id
            AND e.channel = o.channel AND e.id < o.id AND e.state <> 'delivered'))
    ORDER BY o.next_attempt_at, o.id
    LIMIT %(limit)s
    FOR UPDATE OF o SKIP LOCKED
)
UPDATE outbox o
SET attempts = o.attempts + 1,
    next_attempt_at = now() + make_interval(secs => %(lease_s)s)
FROM due WHERE o.id = due.id
RETURNING o.id, o.idempotency_key, o.incident_id, o.agency_id, o.channel, o.target, o.kind,
          o.payload, o.attempts, o.created_at, o.next_attempt_at AS lease
"""


async def claim(conn: psycopg.AsyncConnection[Any], limit: int, lease_s: float) -> list[Delivery]:
    """Take up to ``limit`` due rows for one attempt each, leased for ``lease_s`` seconds.

    The attempt is counted here, before it is made: a row that crashes its worker every time
    still reaches ``IOC_DISPATCH_MAX_ATTEMPTS`` and fails instead of looping for ever.
    """
    if limit <= 0:
        return []
    async with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_CLAIM, {"limit": limit, "lease_s": lease_s})
        rows = await cur.fetchall()
    rows.sort(key=lambda r: r["id"])
    return [Delivery(**r) for r in rows]


async def settle(
    conn: psycopg.AsyncConnection[Any],
    delivery: Delivery,
    attempt: Attempt,
    *,
    retry_in_s: float | None = None,
) -> bool:
    """Log ``attempt`` and move the row on: delivered, failed, or pending again in
    ``retry_in_s``. False when the lease was lost (another worker claimed the row meanwhile): the
    attempt is logged, the row is left to the newer claim."""
    outcome = attempt.outcome
    if outcome is Outcome.DELIVERED:
        change = "state = 'delivered', delivered_at = now(), last_error = NULL"
    elif outcome is Outcome.FAILED:
        change = "state = 'failed', last_error = %(error)s"
    else:
        change = (
            "next_attempt_at = now() + make_interval(secs => %(retry_in_s)s),"
            " last_error = %(error)s"
        )
    params = {
        "id": delivery.id,
        "lease": delivery.lease,
        "error": attempt.error,
        "retry_in_s": retry_in_s or 0.0,
    }
    async with conn.transaction(), conn.cursor() as cur:
        await cur.execute(
            "INSERT INTO delivery_attempts (outbox_id, duration_ms, outcome, status_code, error)"
            " VALUES (%s, %s, %s, %s, %s)",
            (
                delivery.id,
                attempt.duration_s * 1000.0,
                str(outcome),
                attempt.status_code,
                attempt.error,
            ),
        )
        await cur.execute(
            f"UPDATE outbox SET {change}"
            " WHERE id = %(id)s AND state = 'pending' AND next_attempt_at = %(lease)s",
            params,
        )
        settled = cur.rowcount == 1
        if settled and outcome is Outcome.DELIVERED and delivery.incident_id is not None:
            # the next row of this stream is due now; tell every worker, not only this one
            await cur.execute(f"NOTIFY {OUTBOX_CHANNEL}")
    return settled


async def release(
    conn: psycopg.AsyncConnection[Any], deliveries: list[Delivery], reason: str
) -> None:
    """Give back rows whose attempt was cut short (worker stopping): due again now, with the
    interruption logged. The receiver may have got them: they go again with the same key."""
    async with conn.transaction(), conn.cursor() as cur:
        for d in deliveries:
            await cur.execute(
                "UPDATE outbox SET next_attempt_at = now(), last_error = %s"
                " WHERE id = %s AND state = 'pending' AND next_attempt_at = %s",
                (reason, d.id, d.lease),
            )
            if cur.rowcount == 1:  # else its result was recorded just before the cut
                await cur.execute(
                    "INSERT INTO delivery_attempts (outbox_id, duration_ms, outcome, error)"
                    " VALUES (%s, 0, 'retry', %s)",
                    (d.id, reason),
                )
        await cur.execute(f"NOTIFY {OUTBOX_CHANNEL}")


async def backlog(conn: psycopg.AsyncConnection[Any]) -> tuple[int, int, float | None]:
    """``(pending, failed, seconds until the next row's time comes)``; the last is None when no
    pending row has a time in the future (rows due now but not claimed wait behind their
    stream, and are woken by its progress)."""
    async with conn.cursor() as cur:
        await cur.execute(
            # three scalar subqueries, each on a partial index (outbox_due, outbox_failed);
            # delivered rows, the bulk of the table, are never read
            "SELECT (SELECT count(*) FROM outbox WHERE state = 'pending'),"
            " (SELECT count(*) FROM outbox WHERE state = 'failed'),"
            " (SELECT extract(epoch FROM min(next_attempt_at) - now()) FROM outbox"
            "   WHERE state = 'pending' AND next_attempt_at > now())"
        )
        row = await cur.fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), (float(row[2]) if row[2] is not None else None)
