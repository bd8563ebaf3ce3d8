"""The two things every background worker of the IOC does the same way.

- :func:`stop_task` — stop a background task: cancel it and wait until it has unwound (its
  ``finally`` blocks ran), swallowing only its own cancellation. Used by every ``__aexit__``.
- :func:`listen` — LISTEN on PostgreSQL channels on a connection of its own, for ever: on each
  notification (and, with ``poll_s``, at least every ``poll_s`` seconds) it calls ``on_wake``;
  when the connection is lost it reconnects after an exponential backoff with jitter
  (:class:`ioc.core.backoff.Backoff`), so a database restart costs a few seconds of polling, not the
  worker. ``on_connected`` runs after LISTEN and before the first wait: a worker that re-reads
  there misses nothing committed while nobody listened.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import psycopg
from psycopg import sql

from ioc.core.backoff import Backoff

log = logging.getLogger(__name__)

OnConnection = Callable[[psycopg.AsyncConnection[Any]], Awaitable[None]]


async def stop_task(task: asyncio.Task[Any] | None) -> None:
    """Cancel ``task`` and wait for it to end; None (never started) is fine."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def first_line(exc: BaseException) -> str:
    """The first line of an error message (psycopg's carry the server's detail below it)."""
    return (str(exc).strip().splitlines() or [repr(exc)])[0]


async def listen(
    conninfo: str,
    channels: Sequence[str],
    on_wake: OnConnection,
    *,
    what: str,
    on_connected: OnConnection | None = None,
    on_lost: Callable[[], None] | None = None,
    poll_s: float | None = None,
) -> None:
    """LISTEN on ``channels`` until cancelled (see the module doc). ``what`` names the worker in
    the log line of a lost connection; ``on_lost`` lets it note that it is not listening."""
    if not channels:
        raise ValueError("listen: no channel given")
    backoff = Backoff()
    while True:
        try:
            async with await psycopg.AsyncConnection.connect(
                conninfo, autocommit=True, connect_timeout=5
            ) as conn:
                for channel in channels:
                    await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
                if on_connected is not None:
                    await on_connected(conn)
                backoff.reset()
                while True:
                    # one notification (or the poll interval's end) per round
                    async for _ in conn.notifies(timeout=poll_s, stop_after=1):
                        pass
                    await on_wake(conn)
        except psycopg.Error as exc:
            if on_lost is not None:
                on_lost()
            delay = backoff.next_delay()
            log.warning(
                "%s: LISTEN connection lost (%s); again in %.1f s", what, first_line(exc), delay
            )
            await asyncio.sleep(delay)
