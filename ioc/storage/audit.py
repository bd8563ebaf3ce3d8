"""The audit log (table ``audit_log``): one row per change an operator, administrator or agency
made through the API, and per token change. Read by administrators at ``GET /api/v1/audit``."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row


async def record(
    conn: psycopg.AsyncConnection[Any],
    *,
    actor: str,
    role: str,
    action: str,
    target: str | None = None,
    status: int | None = None,
    request_id: str | None = None,
) -> None:
    await conn.execute(
        "INSERT INTO audit_log (actor, role, action, target, status, request_id)"
        " VALUES (%s, %s, %s, %s, %s, %s)",
        (actor, role, action, target, status, request_id),
    )


async def entries(
    conn: psycopg.AsyncConnection[Any],
    *,
    actor: str | None = None,
    action: str | None = None,
    since: datetime | None = None,
    before_id: int | None = None,
    limit: int = 200,
) -> list[dict[str, Any]]:
    """Newest first; ``action`` matches as a substring (``ack``, ``/silences``, ``token.``)."""
    where: list[str] = ["TRUE"]
    params: list[Any] = []
    filters = (
        ("actor = %s", actor),
        ("strpos(action, %s) > 0", action),
        ("time >= %s", since),
        ("id < %s", before_id),
    )
    for clause, value in filters:
        if value is not None:
            where.append(clause)
            params.append(value)
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"SELECT id, time, actor, role, action, target, status, request_id FROM audit_log"
            f" WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT %s",
            (*params, limit),
        )
        return await cur.fetchall()
