"""Durable batch writes: one transaction per batch, readings through COPY.

Readings are copied straight into ``readings`` under a savepoint; when a key is already stored
(a redelivered QoS 1 message after a crash before its PUBACK, a device retrying) that COPY fails,
and the batch goes through a temporary staging table and ``INSERT … ON CONFLICT DO NOTHING``
instead: stored once either way, and the common case pays for one COPY. ``latest_readings`` and
``device_state`` are upserted from the batch's newest point per device and metric, folded here
(a batch of 5,000 messages from 2,000 devices holds 20,000 readings but 8,000 newest points),
in key order, so two writers' transactions take those row locks in one order. The batch's
live-feed rows (``ioc/ingest/feed.py``) are
appended in the same transaction, so what commits is announced and nothing else. The caller
acknowledges the batch's messages only after ``write`` returns, i.e. after COMMIT.
"""

from __future__ import annotations

import hashlib
import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import psycopg
from psycopg import sql

from ioc.ingest.errors import Reason
from ioc.ingest.feed import Newest, Places, add_points, feed_events
from ioc.ingest.handoff import Delivery
from ioc.ingest.records import CitizenReport, DeadLetter, DeviceEvent, StatusChange, Telemetry
from ioc.storage import feed as feed_store
from ioc.storage import reports as report_store
from ioc.storage.feed import FeedEvent
from ioc.storage.migrations import Flavour

log = logging.getLogger(__name__)

_DAY = 86_400

# From the batch's newest points (``ingest_newest``), in key order: two writers' transactions
# then take these row locks in one order, and where they meet the later one waits.
_UPSERT_LATEST = sql.SQL(
    "INSERT INTO latest_readings AS l (device_id, metric, time, value)"
    " SELECT device_id, metric, time, value FROM ingest_newest"
    ' ORDER BY device_id COLLATE "C", metric COLLATE "C"'
    " ON CONFLICT (device_id, metric) DO UPDATE"
    " SET time = excluded.time, value = excluded.value WHERE l.time < excluded.time"
)
_UPSERT_LAST_SEEN = sql.SQL(
    "INSERT INTO device_state AS s (device_id, last_seen_at)"
    " SELECT device_id, max(time) FROM ingest_newest"
    ' GROUP BY device_id ORDER BY device_id COLLATE "C"'
    " ON CONFLICT (device_id) DO UPDATE SET last_seen_at ="
    " greatest(s.last_seen_at, excluded.last_seen_at)"
)
_MARK_ROLLUPS = sql.SQL(
    "UPDATE rollup_state SET dirty_from = least(dirty_from, {}),"
    " dirty_seq = dirty_seq + 1 WHERE name = 'readings'"
)


@dataclass(slots=True)
class WriteResult:
    readings: int = 0
    stored: int = 0
    dead_letters: int = 0
    reports: int = 0  # new citizen reports (a repeat of a stored one is not counted)


class BatchWriter:
    """Owns one database connection; not shared, so a failure affects only this writer."""

    def __init__(self, conninfo: str, flavour: Flavour) -> None:
        self._conninfo = conninfo
        self._flavour = flavour
        self._conn: psycopg.AsyncConnection | None = None
        self._partition_days: set[int] = set()  # days whose partition is known to exist
        self._created_days: set[int] = set()  # created in the open transaction
        # where each device is, for the live frames; set by the service with its registry
        self.places: Places = {}

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    async def _connection(self) -> psycopg.AsyncConnection:
        if self._conn is None or self._conn.closed or self._conn.broken:
            # autocommit, with an explicit BEGIN per batch: its COMMIT is then sent in one
            # pipeline with the feed append (``_transaction``)
            conn = await psycopg.AsyncConnection.connect(
                self._conninfo, connect_timeout=5, autocommit=True
            )
            # emptied by TRUNCATE right after use, not ON COMMIT DELETE ROWS: that truncates the
            # files during COMMIT, i.e. while the feed lock is held (sampled: 8 % of the time
            # the lock was held, waiting on IO:DataFileTruncate); a TRUNCATE inside the
            # transaction gives the table a new file and drops the old one after the locks go
            for table in ("ingest_staging", "ingest_newest"):
                await conn.execute(
                    f"CREATE TEMP TABLE IF NOT EXISTS {table} (time timestamptz,"
                    " device_id text, metric text, value float8)"
                )
            self._conn = conn
        return self._conn

    async def write(self, batch: Sequence[Delivery]) -> WriteResult:
        """Write the whole batch in one transaction. Raises ``psycopg.Error`` on failure."""
        conn = await self._connection()
        result = WriteResult()
        await self._transaction(conn, [d.record for d in batch], result)
        return result

    async def _transaction(
        self, conn: psycopg.AsyncConnection, records: Sequence[object], result: WriteResult
    ) -> None:
        self._created_days.clear()
        # BEGIN … COMMIT by hand (savepoints inside still go through ``conn.transaction()``): the
        # feed append, which takes the feed's lock, and the COMMIT go to the server together, so
        # the lock is never held while this process's event loop is busy elsewhere (the rule
        # service's alert frames wait for it; docs/benchmarks.md).
        await conn.execute("BEGIN")
        try:
            events = await self._write(conn, records, result)
            await feed_store.append_and_commit(conn, events)
        except BaseException:
            if not conn.closed and not conn.broken:
                try:
                    await conn.execute("ROLLBACK")
                except psycopg.Error:
                    log.warning("rollback after a failed batch failed", exc_info=True)
            raise
        # Only a committed partition is known to exist; a rolled-back one is created again.
        self._partition_days |= self._created_days

    async def write_isolating_failures(self, batch: Sequence[Delivery]) -> WriteResult:
        """Fallback after a non-transient error: write each message alone; one that the database
        refuses (e.g. its device was deleted meanwhile) becomes a dead letter, the rest go on."""
        result = WriteResult()
        conn = await self._connection()
        for d in batch:
            try:
                await self._transaction(conn, [d.record], result)
            except psycopg.Error as exc:
                if not is_data_error(exc):
                    raise  # the database's state, not this message: the caller retries
                log.warning("database refused a message on %s: %s", d.topic, exc)
                letter = DeadLetter(
                    d.topic,
                    d.payload,
                    Reason.STORAGE_REJECTED,
                    f"database refused it: {exc.diag.message_primary or exc}",
                    datetime.now(UTC).timestamp(),
                )
                await self._transaction(conn, [letter], result)
        return result

    async def _write(
        self, conn: psycopg.AsyncConnection, records: Sequence[object], result: WriteResult
    ) -> list[FeedEvent]:
        """Everything but the feed rows, which it returns (appended by the caller, last)."""
        buf = io.StringIO()
        statuses: list[tuple[str, bool, datetime]] = []
        events: list[tuple[datetime, str, str, bytes]] = []
        letters: list[DeadLetter] = []
        reports: list[CitizenReport] = []
        newest: Newest = {}
        iso: dict[float, str] = {}
        t_min = float("inf")
        t_max = float("-inf")
        n = 0
        write = buf.write
        for rec in records:
            if type(rec) is Telemetry:
                t = rec.time
                # The time as text, made here for both paths below: a redelivered message must
                # map to the very same key. Ids and metric names are validated against the
                # registry and the catalogue, so they never contain COPY's special characters.
                when = iso.get(t)
                if when is None:
                    when = iso[t] = datetime.fromtimestamp(t, UTC).isoformat()
                prefix = f"{when}\t{rec.device_id}\t"
                for name, value in rec.metrics:
                    write(f"{prefix}{name}\t{value!r}\n")
                n += len(rec.metrics)
                add_points(newest, rec)
                t_min = min(t_min, t)
                t_max = max(t_max, t)
            elif type(rec) is StatusChange:
                statuses.append((rec.device_id, rec.online, _ts(rec.time)))
            elif type(rec) is DeviceEvent:
                events.append((_ts(rec.time), rec.device_id, rec.type, rec.data_json))
            elif type(rec) is DeadLetter:
                letters.append(rec)
            elif type(rec) is CitizenReport:
                reports.append(rec)
        if n:
            if self._flavour is Flavour.PLAIN:
                await self._ensure_partitions(conn, t_min, t_max)
            stored = await _insert_readings(conn, buf.getvalue(), n)
            # the newest points travel by COPY too: psycopg spends ~80 ms adapting four
            # 8,000-element array parameters, COPY text of the same rows ~3 ms
            newest_rows = "".join(
                f"{iso[t]}\t{device_id}\t{metric}\t{value!r}\n"
                for device_id, points in newest.items()
                for metric, (t, value) in points.items()
            )
            async with conn.cursor() as cur:
                async with cur.copy(
                    "COPY ingest_newest (time, device_id, metric, value) FROM STDIN"
                ) as copy:
                    await copy.write(newest_rows)
                # one round trip for the three (no parameters: several statements may go
                # in one simple query); under CPU contention each round trip costs
                upserts: list[sql.Composable] = [
                    _UPSERT_LATEST,
                    _UPSERT_LAST_SEEN,
                    sql.SQL("TRUNCATE ingest_newest"),
                ]
                if stored:
                    # Mark the rollups stale from the oldest new reading (see maintenance.py).
                    upserts.append(_MARK_ROLLUPS.format(sql.Literal(_ts(t_min))))
                await cur.execute(sql.SQL("; ").join(upserts))
            result.readings += n
            result.stored += stored
        if statuses:
            async with conn.cursor() as cur:
                await cur.executemany(
                    "INSERT INTO device_state AS s (device_id, online, status_changed_at)"
                    " VALUES (%s, %s, %s) ON CONFLICT (device_id) DO UPDATE"
                    " SET online = excluded.online, status_changed_at = excluded.status_changed_at"
                    " WHERE s.online IS DISTINCT FROM excluded.online",
                    statuses,
                )
        if events:
            async with conn.cursor() as cur:
                await cur.executemany(
                    "INSERT INTO device_events (time, device_id, type, data)"
                    " VALUES (%s, %s, %s, %s::jsonb) ON CONFLICT DO NOTHING",
                    [(t, d, k, j.decode()) for t, d, k, j in events],
                )
        if reports:
            # Same transaction as the readings: acknowledged after this COMMIT like them.
            result.reports += await report_store.insert_many(
                conn, [_new_report(r) for r in reports]
            )
        if letters:
            async with conn.cursor() as cur:
                await cur.executemany(
                    "INSERT INTO dead_letters AS d (topic, payload, payload_sha256, reason, detail,"
                    " first_received_at, received_at) VALUES (%s, %s, %s, %s, %s, %s, %s)"
                    " ON CONFLICT (topic, payload_sha256) DO UPDATE SET"
                    " occurrences = d.occurrences + 1, received_at = excluded.received_at,"
                    " reason = excluded.reason, detail = excluded.detail",
                    [
                        (
                            dl.topic,
                            dl.payload,
                            hashlib.sha256(dl.payload).digest(),
                            dl.reason.value,
                            dl.detail,
                            _ts(dl.received_at),
                            _ts(dl.received_at),
                        )
                        for dl in letters
                    ],
                )
            result.dead_letters += len(letters)
        return feed_events(records, self.places, newest)

    async def _ensure_partitions(
        self, conn: psycopg.AsyncConnection, t_min: float, t_max: float
    ) -> None:
        days = range(int(t_min // _DAY), int(t_max // _DAY) + 1)
        if all(d in self._partition_days for d in days):
            return
        await conn.execute(
            "SELECT ioc_ensure_readings_partitions(%s, %s)", (_ts(t_min), _ts(t_max))
        )
        self._created_days.update(days)


async def _insert_readings(conn: psycopg.AsyncConnection, rows: str, n: int) -> int:
    """Store COPY text ``rows`` (``n`` readings) once each; returns how many were new."""
    try:
        async with conn.transaction():  # a savepoint: a failed COPY leaves the batch usable
            async with conn.cursor() as cur:
                async with cur.copy(
                    "COPY readings (time, device_id, metric, value) FROM STDIN"
                ) as copy:
                    await copy.write(rows)
        return n
    except psycopg.errors.UniqueViolation:
        pass  # some are stored already: skip those
    async with conn.cursor() as cur:
        async with cur.copy(
            "COPY ingest_staging (time, device_id, metric, value) FROM STDIN"
        ) as copy:
            await copy.write(rows)
        await cur.execute(
            "INSERT INTO readings (time, device_id, metric, value)"
            " SELECT time, device_id, metric, value FROM ingest_staging ON CONFLICT DO NOTHING"
        )
        stored = cur.rowcount
        await cur.execute("TRUNCATE ingest_staging")
        return stored


def _new_report(r: CitizenReport) -> report_store.NewReport:
    return report_store.NewReport(
        dedupe_key=report_store.mqtt_dedupe_key(r.city, r.channel, r.external_id),
        source=r.channel,
        external_id=r.external_id,
        service_code=r.category,
        description=r.description,
        reported_at=_ts(r.time),
        city=r.city,
        ward=r.ward,
        lat=r.lat,
        lon=r.lon,
        media_url=r.media_url,
    )


def is_data_error(exc: psycopg.Error) -> bool:
    """True when the database refused the data itself (SQLSTATE class 22 data exception or
    23 integrity violation), as opposed to its own state (connection, read-only, permissions)."""
    state = exc.sqlstate or ""
    return state[:2] in ("22", "23")


def _ts(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)
