"""Reading the dead-letter table (written by ioc.ingest.writer)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row


async def list_dead_letters(
    conn: psycopg.AsyncConnection,
    *,
    reason: str | None = None,
    topic_prefix: str | None = None,
    since: datetime | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Newest first."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT id, received_at, first_received_at, occurrences, topic, reason, detail, payload"
            " FROM dead_letters"
            " WHERE (%(reason)s::text IS NULL OR reason = %(reason)s)"
            " AND (%(prefix)s::text IS NULL OR starts_with(topic, %(prefix)s))"
            " AND (%(since)s::timestamptz IS NULL OR received_at >= %(since)s)"
            " ORDER BY received_at DESC, id DESC LIMIT %(limit)s",
            {"reason": reason, "prefix": topic_prefix, "since": since, "limit": limit},
        )
        return await cur.fetchall()
