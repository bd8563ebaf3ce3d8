"""Durable batch writes: one transaction per batch, readings through COPY.

Everything the batch needs in Python (COPY text, the newest points, the live-feed rows) is built
before ``BEGIN``, so the transaction never waits for this process's event loop to compute; it is
then four round trips: ``BEGIN``, the readings ``COPY`` (two: its start, its data) and one
pipeline holding the rest — the upserts, the rare record kinds, the feed rows and ``COMMIT``.

Readings are copied straight into ``readings``; when a key is already stored (a redelivered QoS 1
message after a crash before its PUBACK, a device retrying) that COPY fails, the transaction is
rolled back and the batch is written again through a temporary staging table and ``INSERT … ON
CONFLICT DO NOTHING``: stored once either way, and the common case pays for one COPY.
``latest_readings`` and ``device_state`` are upserted from the batch's newest point per device
and metric, folded here (a batch of 5,000 messages from 2,000 devices holds 20,000 readings but
8,000 newest points), in key order, so two writers' transactions take those row locks in one
order. The batch's live-feed rows (``ioc/ingest/feed.py``) are appended in the same transaction,
so what commits is announced and nothing else. The caller acknowledges the batch's messages only
after ``write`` returns, i.e. after COMMIT.
"""

from __future__ import annotations

import hashlib
import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import psycopg

from ioc.ingest.errors import Reason
from ioc.ingest.feed import Newest, Places, add_points, feed_events
from ioc.ingest.handoff import Delivery
from ioc.ingest.records import CitizenReport, DeadLetter, DeviceEvent, StatusChange, Telemetry
from ioc.storage import feed as feed_store
from ioc.storage import reports as report_store
from ioc.storage.feed import FeedEvent, Statement
from ioc.storage.migrations import Flavour

log = logging.getLogger(__name__)

_DAY = 86_400

# The batch's newest points arrive as four array literals (built by joining text: psycopg
# adapting four 8,000-element lists cost ~80 ms, the joins ~3 ms) and upsert both tables in one
# statement, so it travels in the commit pipeline. Both writers run this same statement, rows
# in key order, so two transactions take these row locks in one order and the later one waits.
_UPSERT_NEWEST = """
WITH newest AS MATERIALIZED (
    SELECT * FROM unnest(%s::text[], %s::text[], %s::timestamptz[], %s::float8[])
        AS n(device_id, metric, time, value)),
seen AS (
    INSERT INTO device_state AS s (device_id, last_seen_at)
    SELECT device_id, max(time) FROM newest GROUP BY device_id ORDER BY device_id COLLATE "C"
    ON CONFLICT (device_id) DO UPDATE
    SET last_seen_at = greatest(s.last_seen_at, excluded.last_seen_at))
INSERT INTO latest_readings AS l (device_id, metric, time, value)
SELECT device_id, metric, time, value FROM newest
ORDER BY device_id COLLATE "C", metric COLLATE "C"
ON CONFLICT (device_id, metric) DO UPDATE
SET time = excluded.time, value = excluded.value WHERE l.time < excluded.time"""
# Mark the rollups stale from the oldest new reading (see maintenance.py).
_MARK_ROLLUPS = (
    "UPDATE rollup_state SET dirty_from = least(dirty_from, %s),"
    " dirty_seq = dirty_seq + 1 WHERE name = 'readings'"
)
_UPSERT_STATUS = (
    "INSERT INTO device_state AS s (device_id, online, status_changed_at)"
    " VALUES (%s, %s, %s) ON CONFLICT (device_id) DO UPDATE"
    " SET online = excluded.online, status_changed_at = excluded.status_changed_at"
    " WHERE s.online IS DISTINCT FROM excluded.online"
)
_INSERT_EVENT = (
    "INSERT INTO device_events (time, device_id, type, data)"
    " VALUES (%s, %s, %s, %s::jsonb) ON CONFLICT DO NOTHING"
)
_INSERT_LETTER = (
    "INSERT INTO dead_letters AS d (topic, payload, payload_sha256, reason, detail,"
    " first_received_at, received_at) VALUES (%s, %s, %s, %s, %s, %s, %s)"
    " ON CONFLICT (topic, payload_sha256) DO UPDATE SET"
    " occurrences = d.occurrences + 1, received_at = excluded.received_at,"
    " reason = excluded.reason, detail = excluded.detail"
)


@dataclass(slots=True)
class WriteResult:
    readings: int = 0
    stored: int = 0
    dead_letters: int = 0
    reports: int = 0  # new citizen reports (a repeat of a stored one is not counted)


@dataclass(slots=True)
class _Batch:
    """A batch made ready for its transaction: all of the Python work, none of the waiting."""

    rows: str = ""  # readings as COPY text
    n: int = 0  # readings
    t_min: float = float("inf")
    t_max: float = float("-inf")
    newest: list[str] = field(default_factory=list)  # the four array literals
    statuses: list[tuple[str, bool, datetime]] = field(default_factory=list)
    events: list[tuple[datetime, str, str, str]] = field(default_factory=list)
    letters: list[DeadLetter] = field(default_factory=list)
    reports: list[report_store.NewReport] = field(default_factory=list)
    feed: list[FeedEvent] = field(default_factory=list)

    def tail(self, *, stored: int) -> list[Statement]:
        """The statements after the readings: they go in the commit pipeline."""
        out: list[Statement] = []
        if self.n:
            out.append((_UPSERT_NEWEST, self.newest))
            if stored:
                out.append((_MARK_ROLLUPS, (_ts(self.t_min),)))
        out += [(_UPSERT_STATUS, s) for s in self.statuses]
        out += [(_INSERT_EVENT, e) for e in self.events]
        out += [(_INSERT_LETTER, _letter_params(dl)) for dl in self.letters]
        return out


def prepare(records: Sequence[object], places: Places) -> _Batch:
    """The batch's COPY text, newest points, other rows and feed rows (no database)."""
    batch = _Batch()
    buf = io.StringIO()
    write = buf.write
    newest: Newest = {}
    iso: dict[float, str] = {}
    t_min = batch.t_min
    t_max = batch.t_max
    n = 0
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
            if t < t_min:
                t_min = t
            if t > t_max:
                t_max = t
        elif type(rec) is StatusChange:
            batch.statuses.append((rec.device_id, rec.online, _ts(rec.time)))
        elif type(rec) is DeviceEvent:
            batch.events.append((_ts(rec.time), rec.device_id, rec.type, rec.data_json.decode()))
        elif type(rec) is DeadLetter:
            batch.letters.append(rec)
        elif type(rec) is CitizenReport:
            batch.reports.append(_new_report(rec))
    if n:
        batch.rows, batch.n, batch.t_min, batch.t_max = buf.getvalue(), n, t_min, t_max
        # array literals; the ids are quoted (an unquoted element spelled NULL is a null),
        # and neither ids (DEVICE_ID) nor metric names hold a quote, comma or backslash
        ids, metrics, times, values = [], [], [], []
        for device_id, points in newest.items():
            quoted = f'"{device_id}"'
            for metric, (t, value) in points.items():
                ids.append(quoted)
                metrics.append(metric)
                times.append(iso[t])
                values.append(repr(value))
        batch.newest = ["{" + ",".join(column) + "}" for column in (ids, metrics, times, values)]
    batch.feed = feed_events(records, places, newest)
    return batch


class BatchWriter:
    """Owns one database connection; not shared, so a failure affects only this writer."""

    def __init__(self, conninfo: str, flavour: Flavour) -> None:
        self._conninfo = conninfo
        self._flavour = flavour
        self._conn: psycopg.AsyncConnection | None = None
        self._partition_days: set[int] = set()  # days whose partition is known to exist
        # where each device is, for the live frames; set by the service with its registry
        self.places: Places = {}

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    async def _connection(self) -> psycopg.AsyncConnection:
        if self._conn is None or self._conn.closed or self._conn.broken:
            # autocommit, with an explicit BEGIN per batch: its COMMIT is then sent in one
            # pipeline with the batch's last statements (``_transaction``)
            conn = await psycopg.AsyncConnection.connect(
                self._conninfo, connect_timeout=5, autocommit=True
            )
            # emptied by TRUNCATE right after use, not ON COMMIT DELETE ROWS: that truncates the
            # file during COMMIT, i.e. while the feed lock is held (sampled: 8 % of the time
            # the lock was held, waiting on IO:DataFileTruncate); a TRUNCATE inside the
            # transaction gives the table a new file and drops the old one after the locks go
            await conn.execute(
                "CREATE TEMP TABLE IF NOT EXISTS ingest_staging (time timestamptz,"
                " device_id text, metric text, value float8)"
            )
            self._conn = conn
        return self._conn

    async def write(self, batch: Sequence[Delivery]) -> WriteResult:
        """Write the whole batch in one transaction. Raises ``psycopg.Error`` on failure."""
        conn = await self._connection()
        result = WriteResult()
        await self._transaction(conn, prepare([d.record for d in batch], self.places), result)
        return result

    async def _transaction(
        self, conn: psycopg.AsyncConnection, batch: _Batch, result: WriteResult
    ) -> None:
        """Commit ``batch``; on a reading already stored, once more through the staging table."""
        try:
            stored, reports = await self._attempt(conn, batch, dedupe=False)
        except psycopg.errors.UniqueViolation:  # some readings are stored already
            stored, reports = await self._attempt(conn, batch, dedupe=True)
        result.readings += batch.n
        result.stored += stored
        result.dead_letters += len(batch.letters)
        result.reports += reports

    async def _attempt(
        self, conn: psycopg.AsyncConnection, batch: _Batch, *, dedupe: bool
    ) -> tuple[int, int]:
        """One transaction; returns how many readings and citizen reports were new. Rolls back
        on failure."""
        if batch.n and self._flavour is Flavour.PLAIN:
            await self._ensure_partitions(conn, batch.t_min, batch.t_max)
        await conn.execute("BEGIN")
        try:
            stored = reports = 0
            if batch.n:
                if dedupe:
                    stored = await _insert_new_readings(conn, batch.rows)
                else:
                    await _copy_readings(conn, batch.rows)
                    stored = batch.n
            if batch.reports:
                # Same transaction as the readings: acknowledged after this COMMIT like them.
                reports = await report_store.insert_many(conn, batch.reports)
            # the last statements, the feed rows and COMMIT: one round trip; the feed lock is
            # held only at its end (``append_and_commit``)
            await feed_store.append_and_commit(conn, batch.feed, first=batch.tail(stored=stored))
        except BaseException:
            if not conn.closed and not conn.broken:
                try:
                    await conn.execute("ROLLBACK")
                except psycopg.Error:
                    log.warning("rollback after a failed batch failed", exc_info=True)
            raise
        return stored, reports

    async def write_isolating_failures(self, batch: Sequence[Delivery]) -> WriteResult:
        """Fallback after a non-transient error: write each message alone; one that the database
        refuses (e.g. its device was deleted meanwhile) becomes a dead letter, the rest go on."""
        result = WriteResult()
        conn = await self._connection()
        for d in batch:
            try:
                await self._transaction(conn, prepare([d.record], self.places), result)
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
                await self._transaction(conn, prepare([letter], self.places), result)
        return result

    async def _ensure_partitions(
        self, conn: psycopg.AsyncConnection, t_min: float, t_max: float
    ) -> None:
        """The day partitions the batch needs, created in a transaction of their own before the
        batch's (an empty partition left by a batch that then failed is harmless): the creators'
        advisory lock is then held for this statement only — inside the batch's transaction it
        made the other writer's first batch wait for this one's whole transaction."""
        days = range(int(t_min // _DAY), int(t_max // _DAY) + 1)
        if all(d in self._partition_days for d in days):
            return
        await conn.execute(
            "SELECT ioc_ensure_readings_partitions(%s, %s)", (_ts(t_min), _ts(t_max))
        )
        self._partition_days.update(days)


async def _copy_readings(conn: psycopg.AsyncConnection, rows: str) -> None:
    """COPY text ``rows`` straight into ``readings``; ``UniqueViolation`` if one is stored."""
    async with conn.cursor() as cur:
        async with cur.copy("COPY readings (time, device_id, metric, value) FROM STDIN") as copy:
            await copy.write(rows)


async def _insert_new_readings(conn: psycopg.AsyncConnection, rows: str) -> int:
    """Store COPY text ``rows`` skipping the keys already stored; returns how many were new."""
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


def _letter_params(dl: DeadLetter) -> tuple[object, ...]:
    return (
        dl.topic,
        dl.payload,
        hashlib.sha256(dl.payload).digest(),
        dl.reason.value,
        dl.detail,
        _ts(dl.received_at),
        _ts(dl.received_at),
    )


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
