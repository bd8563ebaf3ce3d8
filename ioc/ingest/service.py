"""The ingest service: MQTT subscriber → decode → bounded hand-off → batch writer → PUBACK.

Guarantees: a QoS 1 message is acknowledged only after the transaction holding it committed; a
message that cannot be decoded is committed as a dead letter (and then acknowledged, so the broker
does not redeliver it forever); a database outage makes the writer retry the same batch with
backoff while intake backs up to the broker, and nothing is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import psycopg

from ioc.core.backoff import Backoff
from ioc.core.settings import Settings
from ioc.core.topics import subscriptions
from ioc.core.workers import listen, stop_task
from ioc.ingest import instruments
from ioc.ingest.decoding import Decoder, DeviceIndex, ReportVocabulary
from ioc.ingest.errors import Reason
from ioc.ingest.handoff import Delivery, Handoff
from ioc.ingest.records import DeadLetter, Record
from ioc.ingest.subscriber import MqttSubscriber
from ioc.ingest.writer import BatchWriter, WriteResult, is_data_error
from ioc.storage import devices as device_store
from ioc.storage.devices import decommissioned_ids
from ioc.storage.migrations import Flavour

log = logging.getLogger(__name__)


class _Abandoned(Exception):
    """Shutdown while a batch could not be committed."""


@dataclass(frozen=True, slots=True)
class _InFlight:
    """A batch taken from the hand-off and its transaction (done when committed)."""

    batch: Sequence[Delivery]
    task: asyncio.Task[None]


# Called with the decoded records of each committed batch (in commit order; dead letters
# included) — the composition root hangs the rule engine here. It runs before the batch is
# acknowledged, so keep it quick. The live feed needs no listener: the writer appends the
# batch's feed rows in its own transaction.
CommitListener = Callable[[Sequence[Record]], Awaitable[None]]

# How often a batch the database rolled back for a transaction conflict (SQLSTATE class 40:
# deadlock, serialization failure) is written again at once before the backoff applies. Two
# writers whose batches hold different devices can deadlock on ``device_state`` (one's readings
# upsert in key order, the other's status change); seen once in a soak (docs/benchmarks.md).
_RETRIES_AT_ONCE = 3

_REGISTRY_REFRESH_S = 60.0
# A flood of messages from an unknown device must not turn into a registry query per batch.
_RECHECK_MIN_INTERVAL_S = 1.0


@dataclass(frozen=True, slots=True)
class IngestHealth:
    broker_connected: bool
    database_ok: bool
    queue_depth: int
    broker_error: str | None
    database_error: str | None


class IngestService:
    """Async context manager owning the MQTT subscriber and the writer and registry tasks."""

    def __init__(
        self,
        settings: Settings,
        conninfo: str,
        flavour: Flavour,
        *,
        listeners: Sequence[CommitListener] = (),
        store: bool = True,
        client_id: str | None = None,
        reports: ReportVocabulary | None = None,
    ) -> None:
        """``store=False`` makes a consumer that only hands batches to its listeners (the rules
        worker: its own MQTT session, nothing written by ingest), acknowledging after them; it
        does not subscribe to citizen reports. ``reports``: what reports are checked against
        (``ioc.routing.intake.report_vocabulary``), required when storing."""
        self._settings = settings
        if store and reports is None:
            raise TypeError(
                "IngestService(store=True) needs reports=: the wards and public categories "
                "citizens' reports are checked against (ioc.routing.intake.report_vocabulary)"
            )
        self._store = store
        self._conninfo = conninfo
        self._listeners = list(listeners)
        # One connection per writer: consecutive batches' transactions overlap (see _write_loop).
        self._writers = [BatchWriter(conninfo, flavour) for _ in range(settings.ingest_writers)]
        self._decoder = Decoder(
            topic_prefix=settings.mqtt_topic_prefix,
            devices={},
            max_payload_bytes=settings.max_payload_bytes,
            max_age_s=settings.reading_max_age_s,
            max_future_s=settings.reading_max_future_s,
            reports=reports if store else None,
            device_rate=(settings.ingest_device_rate_per_s, settings.ingest_device_burst),
        )
        filters = subscriptions(settings.mqtt_topic_prefix, reports=store)
        if settings.mqtt_shared_group:
            # MQTT v5 shared subscription: the broker spreads messages over the group's workers.
            filters = [f"$share/{settings.mqtt_shared_group}/{f}" for f in filters]
        self._subscriber = MqttSubscriber(
            settings.mqtt,
            client_id=client_id or settings.mqtt_client_id,
            topic_filters=filters,
            on_message=self._on_message,
            receive_maximum=settings.ingest_queue_capacity,
            session_expiry_s=settings.mqtt_session_expiry_s,
            keepalive_s=settings.mqtt_keepalive_s,
        )
        self._handoff: Handoff | None = None
        self._tasks: asyncio.TaskGroup | None = None
        self._registry: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._database_error: str | None = None
        self._last_recheck = 0.0
        self.committed = 0  # messages committed and acknowledged since start

    # -- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> IngestService:
        self._handoff = Handoff(self._settings.ingest_queue_capacity)
        await self.reload_devices()
        self._tasks = asyncio.TaskGroup()
        await self._tasks.__aenter__()
        # Bounded: at most one batch per writer is between take and acknowledgement.
        in_order: asyncio.Queue[_InFlight | None] = asyncio.Queue(len(self._writers))
        self._tasks.create_task(self._write_loop(in_order), name="ingest-writer")
        self._tasks.create_task(self._settle_loop(in_order), name="ingest-settle")
        # Not in the group: it listens until cancelled (ioc.core.workers.listen).
        self._registry = asyncio.create_task(self._registry_loop(), name="ingest-registry")
        self._subscriber.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Ordered shutdown: stop intake, drain what was received, flush its acks, disconnect.
        assert self._handoff is not None and self._tasks is not None
        self._handoff.close()
        self._stopping.set()
        await stop_task(self._registry)
        try:
            await self._tasks.__aexit__(exc_type, exc, tb)
        finally:
            await self._subscriber.aclose()
            for writer in self._writers:
                await writer.close()

    def add_listener(self, listener: CommitListener) -> None:
        self._listeners.append(listener)

    def health(self) -> IngestHealth:
        return IngestHealth(
            broker_connected=self._subscriber.connected.is_set(),
            database_ok=self._database_error is None,
            queue_depth=len(self._handoff) if self._handoff else 0,
            broker_error=self._subscriber.last_error,
            database_error=self._database_error,
        )

    async def wait_connected(self, timeout: float) -> None:  # noqa: ASYNC109 - a plain bound
        deadline = time.monotonic() + timeout
        while not self._subscriber.connected.is_set():
            if time.monotonic() > deadline:
                raise TimeoutError(f"not connected to the broker: {self._subscriber.last_error}")
            await asyncio.sleep(0.05)

    # -- MQTT pump ---------------------------------------------------------------------------

    def _on_message(
        self, topic: str, payload: bytes, mid: int, qos: int, generation: int
    ) -> Awaitable[None] | None:
        now = time.time()
        record = self._decoder.decode_or_dead_letter(topic, payload, now)
        handoff = self._handoff
        assert handoff is not None
        if not handoff.put(Delivery(mid, qos, generation, topic, payload, record, now)):
            # Shutting down (left un-acknowledged: the broker redelivers it next session), or
            # a QoS 0 message finding the hand-off full (see handoff.py for why it is dropped).
            if qos == 0:
                instruments.DROPPED_QOS0.inc()
        # Full: the pump waits before the next message (backpressure, see handoff.py).
        return handoff.wait_room() if handoff.full() else None

    # -- writer ------------------------------------------------------------------------------

    async def _write_loop(self, in_order: asyncio.Queue[_InFlight | None]) -> None:
        """Take batches and start each one's transaction on a free writer; hand them to the
        settle loop in arrival order.

        With two writers the next batch's COPY and ``INSERT`` run while the previous batch is
        finishing (its upserts, feed row and COMMIT): one connection's round trips and COMMIT
        wait no longer idle the database. Rows both touch (``latest_readings``,
        ``device_state``, ``rollup_state``, the feed lock) are taken in one order, so the later
        transaction waits for the earlier one there instead of deadlocking.
        """
        assert self._handoff is not None
        s = self._settings
        free: asyncio.Queue[BatchWriter] = asyncio.Queue()
        for writer in self._writers:
            free.put_nowait(writer)
        try:
            while True:
                writer = await free.get()  # the batch keeps filling while both are busy
                batch = await self._handoff.take(s.ingest_batch_max, s.ingest_linger_ms / 1000.0)
                if not batch:
                    return  # closed and drained
                instruments.QUEUE_DEPTH.set(len(self._handoff))
                batch = await self._recheck_unknown_devices(batch)
                task = asyncio.create_task(self._commit_on(writer, batch, free))
                await in_order.put(_InFlight(batch, task))
        finally:
            await in_order.put(None)

    async def _commit_on(
        self, writer: BatchWriter, batch: Sequence[Delivery], free: asyncio.Queue[BatchWriter]
    ) -> None:
        try:
            if self._store:
                await self._commit(writer, batch)
        finally:
            free.put_nowait(writer)

    async def _settle_loop(self, in_order: asyncio.Queue[_InFlight | None]) -> None:
        """In arrival order, once each batch committed: the listeners, then the PUBACKs.

        Strictly in order (MQTT v5 §4.6 asks for acknowledgements in receive order): a batch
        that committed early waits for the one before it. After a batch was abandoned (shutdown
        while the database is away) nothing later is acknowledged either; the broker redelivers
        it all to the next session and the primary key absorbs what did commit."""
        abandoned = False
        while (item := await in_order.get()) is not None:
            try:
                await item.task
            except _Abandoned:
                abandoned = True
            if abandoned:
                continue
            batch = item.batch
            records = [d.record for d in batch]
            for listener in self._listeners:
                try:
                    await listener(records)
                except Exception:
                    log.exception("commit listener %r failed; intake goes on", listener)
            for d in batch:
                self._subscriber.ack(d.mid, d.qos, d.generation)
            self.committed += len(batch)

    async def _commit(self, writer: BatchWriter, batch: Sequence[Delivery]) -> WriteResult:
        """Retry until committed: the batch's messages are not acknowledged before that.

        Raises ``_Abandoned`` when shutdown is asked for while the database is unusable: the
        batch stays un-acknowledged and the broker redelivers it to the next session.
        """
        backoff = Backoff()
        isolate = False
        rolled_back = 0
        while True:
            started = time.perf_counter()
            try:
                if isolate:
                    result = await writer.write_isolating_failures(batch)
                else:
                    result = await writer.write(batch)
            except psycopg.Error as exc:
                instruments.WRITE_FAILURES.inc()
                if _rolled_back(exc) and rolled_back < _RETRIES_AT_ONCE:
                    # A deadlock with the other writer or a serialization failure: the database
                    # rolled the batch back whole and is fine; the same batch at once (the other
                    # transaction has gone on by now), without calling the database unusable.
                    rolled_back += 1
                    log.info("batch of %d rolled back (%s); again", len(batch), exc.sqlstate)
                    continue
                await writer.close()
                if is_data_error(exc) and not isolate:
                    # The data itself is refused (a constraint, a bad value): find the culprit
                    # message by message; it alone becomes a dead letter.
                    log.warning("batch refused (%s); writing message by message", exc)
                    isolate = True
                    continue
                # Anything else (connection lost, read-only standby, permissions, a missing
                # table) is the database's state, not the data's: wait and retry the same batch.
                first_line = (str(exc).strip().splitlines() or [repr(exc)])[0]
                self._database_error = first_line
                log.warning("database unusable (%s); retrying batch of %d", first_line, len(batch))
                if self._stopping.is_set():
                    raise _Abandoned from exc
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), backoff.next_delay())
                continue
            self._database_error = None
            instruments.COMMIT_SECONDS.observe(time.perf_counter() - started)
            instruments.LAG_SECONDS.set(time.time() - batch[0].received_at)
            instruments.BATCH_MESSAGES.observe(len(batch))
            instruments.MESSAGES_RECEIVED.inc(len(batch))
            instruments.READINGS_STORED.inc(result.stored)
            instruments.READINGS_DUPLICATE.inc(result.readings - result.stored)
            if result.reports:
                instruments.REPORTS_STORED.inc(result.reports)
            for d in batch:
                if type(d.record) is DeadLetter:
                    instruments.DEAD_LETTERS.labels(d.record.reason.value).inc()
            return result

    async def _recheck_unknown_devices(self, batch: list[Delivery]) -> list[Delivery]:
        """A device registered a moment ago may not be in our index yet: look before refusing."""
        if not any(
            type(d.record) is DeadLetter and d.record.reason is Reason.UNKNOWN_DEVICE for d in batch
        ):
            return batch
        if time.monotonic() - self._last_recheck >= _RECHECK_MIN_INTERVAL_S:
            self._last_recheck = time.monotonic()
            try:
                await self.reload_devices()
            except psycopg.Error:
                pass  # the commit below waits for the database anyway
        # Decode those again against the index as it is now (cheap; rare).
        return [
            Delivery(
                d.mid,
                d.qos,
                d.generation,
                d.topic,
                d.payload,
                self._decoder.decode_or_dead_letter(d.topic, d.payload, d.record.received_at),
                d.received_at,
            )
            if type(d.record) is DeadLetter and d.record.reason is Reason.UNKNOWN_DEVICE
            else d
            for d in batch
        ]

    # -- device registry ---------------------------------------------------------------------

    async def reload_devices(self) -> None:
        async with await psycopg.AsyncConnection.connect(self._conninfo, connect_timeout=5) as conn:
            places = await device_store.device_places(conn)
            decommissioned = await decommissioned_ids(conn)
        # swapped whole, never mutated in place
        index: DeviceIndex = {d: (kind, city) for d, (kind, city, _) in places.items()}
        self._decoder.devices = index
        self._decoder.decommissioned = decommissioned
        for writer in self._writers:
            writer.places = places

    async def _registry_loop(self) -> None:
        """Reload the index on NOTIFY from the API, and at least every _REGISTRY_REFRESH_S in
        case one was missed; the first load once listening, so no change is missed."""

        async def reload(_conn: psycopg.AsyncConnection[Any]) -> None:
            await self.reload_devices()

        await listen(
            self._conninfo, [device_store.CHANNEL], reload, what="ingest device registry",
            on_connected=reload, poll_s=_REGISTRY_REFRESH_S,
        )


def _rolled_back(exc: psycopg.Error) -> bool:
    """SQLSTATE class 40 (transaction rollback: deadlock, serialization failure): the database
    undid the transaction because of another one, not because of its state or the data."""
    return (exc.sqlstate or "").startswith("40")
