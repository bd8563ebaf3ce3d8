"""Issued CAP messages (table ``cap_messages``): each one's XML exactly as published.

The stored XML is the message: the feed and ``…/messages/{identifier}.xml`` serve it byte for
byte, and later Updates and Cancels cite its ``sent`` (stored to the second, as the XML says).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

_COLUMNS = (
    "id, identifier, msg_type, sent_at, alert_id, incident_id, references_id, created_by, xml"
)


@dataclass(frozen=True, slots=True)
class StoredMessage:
    id: int
    identifier: str
    msg_type: str
    sent_at: datetime
    alert_id: int | None
    incident_id: int | None
    references_id: int | None
    created_by: str
    xml: str


async def of_alert(conn: psycopg.AsyncConnection[Any], alert_id: int) -> list[StoredMessage]:
    """Every message issued about an alert, oldest first (the chain an Update or Cancel cites)."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"SELECT {_COLUMNS} FROM cap_messages WHERE alert_id = %s ORDER BY id", (alert_id,)
        )
        return [StoredMessage(**r) for r in await cur.fetchall()]


async def insert(
    conn: psycopg.AsyncConnection[Any],
    *,
    identifier: str,
    msg_type: str,
    sent_at: datetime,
    alert_id: int | None,
    incident_id: int | None,
    references_id: int | None,
    created_by: str,
    xml: str,
) -> StoredMessage:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"""INSERT INTO cap_messages (identifier, msg_type, sent_at, alert_id, incident_id,
                    references_id, created_by, xml)
                VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING {_COLUMNS}""",
            (identifier, msg_type, sent_at, alert_id, incident_id, references_id, created_by, xml),
        )
        row = await cur.fetchone()
    assert row is not None
    return StoredMessage(**row)


async def get(conn: psycopg.AsyncConnection[Any], identifier: str) -> StoredMessage | None:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"SELECT {_COLUMNS} FROM cap_messages WHERE identifier = %s", (identifier,)
        )
        row = await cur.fetchone()
    return StoredMessage(**row) if row else None


async def newest(conn: psycopg.AsyncConnection[Any], limit: int) -> list[StoredMessage]:
    """The latest ``limit`` messages, newest first (the Atom feed)."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"SELECT {_COLUMNS} FROM cap_messages ORDER BY sent_at DESC, id DESC LIMIT %s",
            (limit,),
        )
        return [StoredMessage(**r) for r in await cur.fetchall()]
