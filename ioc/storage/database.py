"""Connection pool for request handlers and background jobs (ingest owns its own connection)."""

from __future__ import annotations

from psycopg_pool import AsyncConnectionPool


async def open_pool(conninfo: str, *, max_size: int) -> AsyncConnectionPool:
    pool = AsyncConnectionPool(
        conninfo,
        min_size=1,
        max_size=max_size,
        open=False,
        # Requests queue for a connection at most this long, then fail with 503 (see api.py):
        # a stuck database must not pile up requests without bound.
        timeout=5.0,
        max_waiting=200,
        kwargs={"connect_timeout": 5},
        check=AsyncConnectionPool.check_connection,
    )
    await pool.open(wait=False)
    return pool
