"""The dispatch worker: claims due outbox rows and delivers them, at most ``max_in_flight`` at
once, each on its channel (webhook, MQTT).

- **Wake-ups**: its own autocommit connection LISTENs on ``ioc_outbox`` (``enqueue`` notifies at
  the incident's commit); a poll every ``POLL_INTERVAL_S`` catches anything missed, and the
  worker sleeps no longer than until the next retry is due.
- **Bound**: ``max_in_flight`` (default 8) attempts at a time per process; it claims only as many
  rows as it has free slots, so the table is the queue and memory stays flat however large the
  backlog. Several processes may run a worker on one database (``FOR UPDATE SKIP LOCKED``).
- **Order**: rows of one incident to one agency channel are claimed one at a time, oldest first
  (:mod:`ioc.dispatch.outbox`).
- **Outcome**: 2xx/PUBACK → delivered; a permanent refusal → failed at once; otherwise retried
  after :func:`ioc.dispatch.retry.retry_delay`, until ``IOC_DISPATCH_MAX_ATTEMPTS`` → failed.
- **Stop**: no new claims; in-flight attempts get ``stop_grace_s`` to finish and be recorded;
  the rest are cancelled and released (due again at once, same idempotency key); then MQTT
  disconnects and the connections close.
- **Crash**: a row claimed by a dead worker is due again when its lease ends. If the receiver
  had already answered 2xx, it gets the message again with the same idempotency key and drops
  the repeat: at-least-once delivery, exactly-once processing at the receiver.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime
from types import TracebackType
from typing import Protocol

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from ioc.core.backoff import Backoff
from ioc.core.settings import Settings
from ioc.core.workers import first_line, listen, stop_task
from ioc.dispatch import instruments, outbox
from ioc.dispatch.delivery import MQTT, WEBHOOK, Attempt, Delivery, Outcome
from ioc.dispatch.mqtt_channel import MqttChannel
from ioc.dispatch.notification_routes import load_routes, routes_file
from ioc.dispatch.retry import retry_delay
from ioc.dispatch.webhook import WebhookChannel, webhook_targets

log = logging.getLogger(__name__)

_DB_ERRORS = (psycopg.Error, PoolTimeout, OSError)


class Channel(Protocol):
    async def send(self, delivery: Delivery, now: datetime) -> Attempt: ...


class DispatchWorker:
    MAX_IN_FLIGHT = 8
    POLL_INTERVAL_S = 2.0
    LEASE_MARGIN_S = 30.0  # beyond the attempt's own bound, for recording its result
    # On stop, in-flight attempts get this long to finish and be recorded; the rest are cut and
    # released (sent again later with the same key), so shutdown never waits for a slow agency.
    STOP_GRACE_S = 5.0
    SETTLE_TRIES = 5  # writing a result when the database is away; then the lease takes over

    def __init__(
        self,
        settings: Settings,
        conninfo: str,
        *,
        max_in_flight: int | None = None,
        stop_grace_s: float | None = None,
    ) -> None:
        self._settings = settings
        self._conninfo = conninfo
        self.max_in_flight = max_in_flight or self.MAX_IN_FLIGHT
        self.stop_grace_s = stop_grace_s if stop_grace_s is not None else self.STOP_GRACE_S
        # no other worker takes a claimed row before the attempt (bounded by the timeout, twice
        # for MQTT: waiting for the connection, then for the PUBACK) and its recording are over
        self.lease_s = 2 * settings.dispatch_timeout_s + self.LEASE_MARGIN_S
        self.listening = False
        self.last_error: str | None = None
        self.pending = 0
        self.failed = 0
        self._in_flight: dict[int, tuple[Delivery, asyncio.Task[None]]] = {}
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._pool: AsyncConnectionPool | None = None
        self._webhook: WebhookChannel | None = None
        self._mqtt: MqttChannel | None = None
        self._run_task: asyncio.Task[None] | None = None
        self._listen_task: asyncio.Task[None] | None = None

    # -- life cycle --------------------------------------------------------------------------

    async def __aenter__(self) -> DispatchWorker:
        webhook_targets(self._settings)  # a bad IOC_AGENCY_WEBHOOKS refuses to start, naming it
        # so does a bad notification routes file (before anything is opened)
        load_routes(routes_file(self._settings.notification_routes_file))
        self._pool = AsyncConnectionPool(
            self._conninfo,
            min_size=1,
            max_size=2,  # claims and results are short statements; the listener has its own
            open=False,
            timeout=5.0,
            kwargs={"autocommit": True, "connect_timeout": 5},
            check=AsyncConnectionPool.check_connection,
        )
        await self._pool.open(wait=False)
        self._webhook = WebhookChannel(self._settings, max_connections=self.max_in_flight)
        self._mqtt = MqttChannel(self._settings)
        self._mqtt.start()
        self._listen_task = asyncio.create_task(self._listen(), name="dispatch-listen")
        self._run_task = asyncio.create_task(self._run(), name="dispatch-run")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def stop(self) -> None:
        """Ordered: stop claiming, finish or release in-flight attempts, stop listening,
        disconnect MQTT, close HTTP and the database. Idempotent."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        self._wake.set()
        if self._run_task is not None:
            try:
                await asyncio.wait_for(self._run_task, self.stop_grace_s + 10.0)
            except TimeoutError:
                log.warning("dispatch: worker did not stop in time; cancelled")
            self._run_task = None
        await stop_task(self._listen_task)
        self._listen_task = None
        if self._mqtt is not None:
            await self._mqtt.stop()
        if self._webhook is not None:
            await self._webhook.aclose()
        if self._pool is not None:
            await self._pool.close()
        self.listening = False
        instruments.LISTENER_CONNECTED.set(0)
        instruments.IN_FLIGHT.set(0)

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    @property
    def mqtt_connected(self) -> bool:
        return self._mqtt is not None and self._mqtt.connected

    # -- the claim loop ----------------------------------------------------------------------

    async def _run(self) -> None:
        assert self._pool is not None
        backoff = Backoff()
        async with asyncio.TaskGroup() as deliveries:
            while not self._stopping.is_set():
                self._wake.clear()
                wait_s = self.POLL_INTERVAL_S
                free = self.max_in_flight - len(self._in_flight)
                if free > 0:
                    try:
                        async with self._pool.connection() as conn:
                            claimed = await outbox.claim(conn, free, self.lease_s)
                            # claimed rows are leased: deliver them even if this read fails
                            next_due_s = await self._read_backlog(conn)
                    except Exception as exc:
                        # database away (or a bug): the worker stays up and tries again
                        self.last_error = first_line(exc)
                        wait_s = backoff.next_delay()
                        log.warning(
                            "dispatch: claiming failed (%s); retrying in %.1f s",
                            self.last_error,
                            wait_s,
                            exc_info=not isinstance(exc, _DB_ERRORS),
                        )
                    else:
                        self.last_error = None
                        backoff.reset()
                        for d in claimed:
                            task = deliveries.create_task(
                                self._deliver(d), name=f"dispatch-{d.channel}-{d.id}"
                            )
                            self._in_flight[d.id] = (d, task)
                        instruments.IN_FLIGHT.set(len(self._in_flight))
                        if len(claimed) == free:
                            # there may be more due: claim again as soon as a slot frees (a
                            # finishing delivery sets the wake event)
                            wait_s = self.POLL_INTERVAL_S
                        elif next_due_s is not None:
                            wait_s = min(wait_s, max(next_due_s, 0.0))
                if not self._wake.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), wait_s)
            await self._drain()

    async def _read_backlog(self, conn: psycopg.AsyncConnection) -> float | None:
        """Backlog gauges; returns seconds until the next retry is due (None: none waiting)."""
        try:
            self.pending, self.failed, next_due_s = await outbox.backlog(conn)
        except psycopg.Error:
            return None
        instruments.BACKLOG.labels("pending").set(self.pending)
        instruments.BACKLOG.labels("failed").set(self.failed)
        return next_due_s

    async def _drain(self) -> None:
        """Let in-flight attempts finish within ``stop_grace_s``; cancel and release the rest."""
        if not self._in_flight:
            return
        tasks = [task for _, task in self._in_flight.values()]
        _, unfinished = await asyncio.wait(tasks, timeout=self.stop_grace_s)
        if not unfinished:
            return
        cut = [d for d, task in self._in_flight.values() if task in unfinished]
        for task in unfinished:
            task.cancel()
        await asyncio.gather(*unfinished, return_exceptions=True)
        log.info("dispatch: %d attempts cut short by the stop; released for redelivery", len(cut))
        assert self._pool is not None
        try:
            async with self._pool.connection(timeout=5.0) as conn:
                await outbox.release(conn, cut, "interrupted: dispatch worker stopping")
        except _DB_ERRORS as exc:
            # their leases end on their own; a later worker redelivers them then
            log.warning("dispatch: could not release %d rows (%s)", len(cut), first_line(exc))

    # -- one attempt -------------------------------------------------------------------------

    def _channel(self, name: str) -> Channel:
        channel: Channel | None = {WEBHOOK: self._webhook, MQTT: self._mqtt}.get(name)
        if channel is None:
            raise LookupError(f"no channel {name!r}")
        return channel

    async def _deliver(self, delivery: Delivery) -> None:
        try:
            started = time.monotonic()
            try:
                attempt = await self._channel(delivery.channel).send(delivery, datetime.now(UTC))
            except Exception as exc:
                # a bug in a channel must not take the worker down: logged, retried like an error
                log.exception("dispatch: delivery %d raised", delivery.id)
                attempt = Attempt(
                    Outcome.RETRY, time.monotonic() - started, error=f"internal error: {exc!r}"
                )
            attempt = self._give_up_if_exhausted(delivery, attempt)
            retry_in_s = None
            if attempt.outcome is Outcome.RETRY:
                retry_in_s = retry_delay(
                    delivery.attempts,
                    base_s=self._settings.dispatch_backoff_base_s,
                    max_s=self._settings.dispatch_backoff_max_s,
                    retry_after_s=attempt.retry_after_s,
                )
            self._observe(delivery, attempt)
            await self._settle(delivery, attempt, retry_in_s)
        except Exception:
            # never let one delivery take the task group (and every other delivery) down; the
            # row's lease brings it back
            log.exception("dispatch %d: unexpected error; retried after its lease", delivery.id)
        finally:
            self._in_flight.pop(delivery.id, None)
            instruments.IN_FLIGHT.set(len(self._in_flight))
            self._wake.set()

    def _give_up_if_exhausted(self, delivery: Delivery, attempt: Attempt) -> Attempt:
        limit = self._settings.dispatch_max_attempts
        if attempt.outcome is not Outcome.RETRY or delivery.attempts < limit:
            return attempt
        return Attempt(
            Outcome.FAILED,
            attempt.duration_s,
            status_code=attempt.status_code,
            error=f"gave up after {delivery.attempts} attempts: {attempt.error}",
        )

    def _observe(self, delivery: Delivery, attempt: Attempt) -> None:
        instruments.ATTEMPTS.labels(delivery.agency_id, delivery.channel, attempt.outcome).inc()
        instruments.ATTEMPT_SECONDS.labels(delivery.channel).observe(attempt.duration_s)
        if attempt.outcome is Outcome.DELIVERED:
            waited = (datetime.now(UTC) - delivery.created_at).total_seconds()
            instruments.DELIVERY_LATENCY.labels(delivery.channel).observe(max(waited, 0.0))
        if attempt.outcome is not Outcome.DELIVERED:
            log.log(
                logging.WARNING if attempt.outcome is Outcome.FAILED else logging.INFO,
                "dispatch %d (%s %s → %s, attempt %d): %s — %s",
                delivery.id,
                delivery.kind,
                delivery.channel,
                delivery.agency_id,
                delivery.attempts,
                attempt.outcome,
                attempt.error,
            )

    async def _settle(self, delivery: Delivery, attempt: Attempt, retry_in_s: float | None) -> None:
        assert self._pool is not None
        backoff = Backoff()
        for _ in range(self.SETTLE_TRIES):
            try:
                async with self._pool.connection() as conn:
                    if not await outbox.settle(conn, delivery, attempt, retry_in_s=retry_in_s):
                        log.warning(
                            "dispatch %d: lease lost before its result was written "
                            "(another worker took it over); result logged only",
                            delivery.id,
                        )
                return
            except _DB_ERRORS as exc:
                self.last_error = first_line(exc)
                await asyncio.sleep(backoff.next_delay())
        log.warning(
            "dispatch %d: result not recorded (%s); redelivered with the same key after its lease",
            delivery.id,
            self.last_error,
        )

    # -- wake-ups ----------------------------------------------------------------------------

    async def _listen(self) -> None:
        await listen(
            self._conninfo,
            [outbox.OUTBOX_CHANNEL],
            self._woken,
            what="dispatch (polling meanwhile)",
            on_connected=self._listening,
            on_lost=self._not_listening,
        )

    async def _woken(self, conn: psycopg.AsyncConnection) -> None:
        self._wake.set()

    async def _listening(self, conn: psycopg.AsyncConnection) -> None:
        self.listening = True
        instruments.LISTENER_CONNECTED.set(1)
        self._wake.set()  # rows written while nobody listened

    def _not_listening(self) -> None:
        self.listening = False
        instruments.LISTENER_CONNECTED.set(0)
