"""The durable live feed (table ``feed_events``): what /ws pushes, with the seq clients resume from.

Writers call ``append`` inside their own transaction, so a feed row exists exactly when the change
it announces committed. ``append`` takes a transaction-level advisory lock first: feed rows then
commit in seq order, and a reader that has seen seq N can never later find a smaller seq appear
(no gaps to wait for). Feed writes are few (alert changes, status changes, one row per ingest
batch for readings), so serialising them is cheap — as long as the lock is held briefly: every
writer waits for the holder's COMMIT. Ingest, whose rows are big and whose event loop is busy,
uses ``append_and_commit`` (rows staged before the lock, lock + seqs + COMMIT in one pipeline);
docs/benchmarks.md has what holding it across a busy loop cost the alert frames.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson
import psycopg
from psycopg.types.json import Jsonb

FEED_CHANNEL = "ioc_feed"
_FEED_LOCK = 0x10C_FEED  # pg_advisory_xact_lock key (any constant unique to this purpose)


@dataclass(frozen=True, slots=True)
class FeedEvent:
    type: str  # alert, device, readings, incident, kpi
    payload: dict[str, Any]
    city: str | None = None
    ward: str | None = None
    kind: str | None = None


def _append_statement(events: Sequence[FeedEvent]) -> tuple[str, tuple[Any, ...]]:
    # the events travel as one JSON document (orjson): an array of jsonb parameters would be
    # quoted character by character on the client — it cost more than the whole batch
    doc = [
        {"type": e.type, "city": e.city, "ward": e.ward, "kind": e.kind, "payload": e.payload}
        for e in events
    ]
    # One statement, one round trip: the lock is held from here to COMMIT, and every round trip
    # in between is time other writers wait (measured: an ingest transaction idle in
    # transaction between lock, nextval and insert, waiting for its busy event loop, held up the
    # rule service's alert frame; docs/benchmarks.md). The lock is taken before any nextval
    # (``seqs`` reads ``lock``); seqs are drawn first and given out in the events' order (an
    # INSERT … SELECT does not promise to call nextval in any order); the notification goes in
    # the same statement.
    return (
        """WITH lock AS MATERIALIZED (SELECT pg_advisory_xact_lock(%s)),
               drawn AS MATERIALIZED (
                   SELECT nextval(pg_get_serial_sequence('feed_events', 'seq')) AS seq
                   FROM lock, generate_series(1, %s)),
               seqs AS (SELECT seq, row_number() OVER (ORDER BY seq) AS n FROM drawn),
               ins AS (
                   INSERT INTO feed_events (seq, type, city, ward, kind, payload)
                   SELECT s.seq, e->>'type', e->>'city', e->>'ward', e->>'kind', e->'payload'
                   FROM seqs AS s
                   JOIN jsonb_array_elements(%s::jsonb) WITH ORDINALITY AS j(e, n) USING (n)
                   RETURNING seq)
           SELECT pg_notify(%s, max(seq)::text), array_agg(seq ORDER BY seq) FROM ins""",
        (_FEED_LOCK, len(events), Jsonb(doc, dumps=orjson.dumps), FEED_CHANNEL),
    )


async def append(conn: psycopg.AsyncConnection, events: Sequence[FeedEvent]) -> list[int]:
    """Insert ``events`` in order and notify listeners at commit; returns their seqs.

    Must run inside a transaction (``async with conn.transaction()``) — the lock is held to commit,
    including the time the caller takes to send COMMIT: a writer whose event loop is busy should
    use :func:`append_and_commit`.
    """
    if not events:
        return []
    query, params = _append_statement(events)
    cur = await conn.execute(query, params)
    row = await cur.fetchone()
    return [int(x) for x in row[1]] if row is not None and row[1] is not None else []


# Placeholder seqs of rows staged before the lock: negative (no real seq is), unique per backend
# (a backend runs one transaction at a time, so two writers never meet on a placeholder key and
# wait for each other), replaced by real seqs before COMMIT — no reader ever sees one.
_PLACEHOLDERS_PER_BACKEND = 1_000_000


# A statement and its parameters (None: none), run ahead of the feed rows by append_and_commit.
Statement = tuple[str, Sequence[Any] | None]


async def append_and_commit(
    conn: psycopg.AsyncConnection,
    events: Sequence[FeedEvent],
    *,
    first: Sequence[Statement] = (),
) -> list[int]:
    """:func:`append`, then COMMIT, for a writer whose event loop is busy and whose rows are big
    (ingest's readings row: ~800 kB of jsonb to parse and TOAST-compress).

    The statements ``first`` (the writer's own last statements, e.g. its upserts), then three
    more, all in one pipeline: one client round trip for the lot, and none inside the lock.
    The rows are inserted first under placeholder seqs (the costly part, before the lock); then
    the lock, the real seqs (an UPDATE that keeps the TOASTed payload in place) and the
    notification; then COMMIT. The lock is held for that small UPDATE and the COMMIT only.

    For a connection in autocommit mode that began its transaction with an explicit ``BEGIN``
    (pipeline mode cannot wrap psycopg's ``conn.transaction()`` exit); one call per
    transaction. On failure the transaction is left aborted: the caller rolls back.
    """
    n = len(events)
    if n >= _PLACEHOLDERS_PER_BACKEND:
        raise ValueError(f"{n} feed events in one append: at most {_PLACEHOLDERS_PER_BACKEND - 1}")
    if not events:
        async with conn.pipeline():
            for query, params in first:
                await conn.execute(query, params)
            await conn.execute("COMMIT")
        return []
    doc = [
        {"type": e.type, "city": e.city, "ward": e.ward, "kind": e.kind, "payload": e.payload}
        for e in events
    ]
    async with conn.pipeline():
        for query, params in first:
            await conn.execute(query, params)
        await conn.execute(
            """INSERT INTO feed_events (seq, type, city, ward, kind, payload)
               SELECT -(pg_backend_pid()::bigint * %s + j.n),
                      e->>'type', e->>'city', e->>'ward', e->>'kind', e->'payload'
               FROM jsonb_array_elements(%s::jsonb) WITH ORDINALITY AS j(e, n)""",
            (_PLACEHOLDERS_PER_BACKEND, Jsonb(doc, dumps=orjson.dumps)),
        )
        # as in ``append``: the lock before any nextval, seqs drawn first and given out in the
        # events' order
        cur = await conn.execute(
            """WITH lock AS MATERIALIZED (SELECT pg_advisory_xact_lock(%s)),
                   drawn AS MATERIALIZED (
                       SELECT nextval(pg_get_serial_sequence('feed_events', 'seq')) AS seq
                       FROM lock, generate_series(1, %s)),
                   seqs AS (SELECT seq, row_number() OVER (ORDER BY seq) AS n FROM drawn),
                   upd AS (
                       UPDATE feed_events AS f SET seq = s.seq FROM seqs AS s
                       WHERE f.seq = -(pg_backend_pid()::bigint * %s + s.n)
                       RETURNING f.seq)
               SELECT pg_notify(%s, max(seq)::text), array_agg(seq ORDER BY seq) FROM upd""",
            (_FEED_LOCK, n, _PLACEHOLDERS_PER_BACKEND, FEED_CHANNEL),
        )
        await conn.execute("COMMIT")
    row = await cur.fetchone()
    return [int(x) for x in row[1]] if row is not None and row[1] is not None else []


# -- readers (the live hub, /ws resume) and upkeep ------------------------------------------------


@dataclass(frozen=True, slots=True)
class FeedRow:
    """One stored feed row; ``payload`` is the JSON text as stored (passed through, not parsed)."""

    seq: int
    time: datetime
    type: str
    city: str | None
    ward: str | None
    kind: str | None
    payload: str


async def head_seq(conn: psycopg.AsyncConnection) -> int:
    """The seq of the newest committed row: every row at or below it is settled (0 if none yet).

    Read under the writers' lock, so nothing is in flight and the sequence's value is exact even
    when old rows were pruned away. ``conn`` must be in autocommit mode or idle.
    """
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_FEED_LOCK,))
        cur = await conn.execute(
            "SELECT coalesce(pg_sequence_last_value(pg_get_serial_sequence('feed_events', 'seq')"
            "::regclass), 0)"
        )
        row = await cur.fetchone()
    return int(row[0]) if row else 0


async def oldest_seq(conn: psycopg.AsyncConnection) -> int:
    """The smallest seq still readable: ``min(seq)``, or the next seq when the table is empty.

    A reader positioned at N has lost rows to pruning when ``N + 1 < oldest_seq``. (A rolled-back
    append leaves a hole in the sequence; a hole exactly at the boundary only costs a needless
    resync, never a silent loss.)
    """
    cur = await conn.execute(
        "SELECT coalesce((SELECT min(seq) FROM feed_events),"
        " pg_sequence_last_value(pg_get_serial_sequence('feed_events', 'seq')::regclass) + 1, 1)"
    )
    row = await cur.fetchone()
    return int(row[0]) if row else 1


async def events_after(conn: psycopg.AsyncConnection, after: int, limit: int) -> list[FeedRow]:
    """Up to ``limit`` rows with ``seq > after``, in seq order."""
    cur = await conn.execute(
        "SELECT seq, time, type, city, ward, kind, payload::text FROM feed_events"
        " WHERE seq > %s ORDER BY seq LIMIT %s",
        (after, limit),
    )
    return [FeedRow(*r) for r in await cur.fetchall()]


async def backlog_page(
    conn: psycopg.AsyncConnection, after: int, limit: int
) -> tuple[int, list[FeedRow]]:
    """``(oldest_seq, events_after(after, limit))`` seen in one snapshot, so a prune running
    meanwhile cannot make rows vanish between the check and the read."""
    async with conn.transaction():
        await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        oldest = await oldest_seq(conn)
        rows = await events_after(conn, after, limit)
    return oldest, rows


PRUNE_BATCH = 10_000


async def prune(conn: psycopg.AsyncConnection, older_than: timedelta) -> int:
    """Delete rows older than ``older_than``; returns how many.

    Cuts by seq, not by time: ``time`` is the writer's transaction start, so a late committer can
    carry an older time than a row below it. Everything up to the newest expired seq goes, leaving
    a contiguous tail, so ``oldest_seq`` tells readers exactly what is gone. Deleted in batches,
    each its own transaction, so a long backlog never holds one huge lock.
    """
    cur = await conn.execute(
        "SELECT max(seq) FROM feed_events WHERE time < now() - %s", (older_than,)
    )
    row = await cur.fetchone()
    await conn.commit()
    cut = row[0] if row else None
    if cut is None:
        return 0
    total = 0
    while True:
        async with conn.transaction():
            cur = await conn.execute(
                "DELETE FROM feed_events WHERE seq IN (SELECT seq FROM feed_events"
                " WHERE seq <= %s ORDER BY seq LIMIT %s)",
                (cut, PRUNE_BATCH),
            )
        total += cur.rowcount
        if cur.rowcount < PRUNE_BATCH:
            return total
