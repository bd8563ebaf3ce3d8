"""The delivery log as operators see it: deliveries with their attempts, and retry by hand."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import dict_row

from ioc.dispatch.outbox import OUTBOX_CHANNEL

STATES = ("pending", "delivered", "failed")


class NotRetryable(Exception):
    """Only a failed delivery can be retried by hand; carries the state it is in."""

    def __init__(self, delivery_id: int, state: str) -> None:
        super().__init__(f"delivery {delivery_id} is {state}, not failed: nothing to retry")
        self.delivery_id = delivery_id
        self.state = state


# waiting_for: the earliest undelivered row of the same stream, which this one waits behind
_COLUMNS = """
    o.id, o.idempotency_key, o.incident_id, o.agency_id, o.channel, o.target, o.kind,
    o.state, o.attempts, o.next_attempt_at, o.created_at, o.delivered_at, o.last_error,
    o.retried_at, o.retried_by,
    CASE WHEN o.state = 'pending' AND o.incident_id IS NOT NULL THEN (
        SELECT min(e.id) FROM outbox e
        WHERE e.incident_id = o.incident_id AND e.agency_id = o.agency_id
          AND e.channel = o.channel AND e.id < o.id AND e.state <> 'delivered')
    END AS waiting_for
"""


async def list_deliveries(
    conn: psycopg.AsyncConnection[Any],
    *,
    states: list[str] | None = None,
    agency: str | None = None,
    incident: int | None = None,
    channel: str | None = None,
    before: int | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Newest first; ``before`` pages on by id."""
    where: list[str] = []
    params: list[Any] = []
    if states:
        where.append("o.state = ANY(%s)")
        params.append(states)
    if agency:
        where.append("o.agency_id = %s")
        params.append(agency)
    if incident is not None:
        where.append("o.incident_id = %s")
        params.append(incident)
    if channel:
        where.append("o.channel = %s")
        params.append(channel)
    if before is not None:
        where.append("o.id < %s")
        params.append(before)
    query = f"SELECT {_COLUMNS} FROM outbox o"
    if where:
        query += " WHERE " + " AND ".join(where)
    query += " ORDER BY o.id DESC LIMIT %s"
    params.append(limit)
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params)
        return await cur.fetchall()


async def get_delivery(
    conn: psycopg.AsyncConnection[Any], delivery_id: int
) -> dict[str, Any] | None:
    """One delivery with its payload and every attempt, oldest first."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"SELECT {_COLUMNS}, o.payload FROM outbox o WHERE o.id = %s", (delivery_id,)
        )
        row = await cur.fetchone()
        if row is None:
            return None
        await cur.execute(
            "SELECT time, duration_ms, outcome, status_code, error FROM delivery_attempts"
            " WHERE outbox_id = %s ORDER BY time, id",
            (delivery_id,),
        )
        row["attempt_log"] = await cur.fetchall()
    return row


async def retry_failed(
    conn: psycopg.AsyncConnection[Any], delivery_id: int, *, by: str
) -> dict[str, Any] | None:
    """failed → pending, due now, with a fresh attempt budget; the workers are woken.

    None if there is no such delivery; :class:`NotRetryable` if it is not failed. The attempt
    log keeps the earlier attempts; ``retried_at``/``retried_by`` record who asked.
    """
    async with conn.transaction(), conn.cursor() as cur:
        await cur.execute("SELECT state FROM outbox WHERE id = %s FOR UPDATE", (delivery_id,))
        found = await cur.fetchone()
        if found is None:
            return None
        if found[0] != "failed":
            raise NotRetryable(delivery_id, found[0])
        await cur.execute(
            "UPDATE outbox SET state = 'pending', attempts = 0, next_attempt_at = now(),"
            " retried_at = now(), retried_by = %s WHERE id = %s",
            (by, delivery_id),
        )
        await cur.execute(f"NOTIFY {OUTBOX_CHANNEL}")
    return await get_delivery(conn, delivery_id)
