"""The live hub: one per API process, tailing ``feed_events`` and fanning frames out to clients.

Everything comes from PostgreSQL: the hub LISTENs on ``ioc_feed`` (and polls every
``POLL_INTERVAL_S`` in case a notification was missed), reads ``seq > last`` in pages, and hands
each frame to every subscriber. Because ``ioc.storage.feed.append`` commits rows in seq order,
``last`` is a complete position: after a reconnect the hub re-reads from it and loses nothing.
Several API processes each run a hub over the same table and serve the same frames.

The most recent ``IOC_FEED_BUFFER`` frames stay in a ring buffer so a client resuming with a
recent ``since`` is served from memory; older resumes read the table (``backlog_page``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from itertools import islice
from types import TracebackType

import psycopg
from psycopg_pool import AsyncConnectionPool

from ioc.core.settings import Settings
from ioc.core.workers import listen, stop_task
from ioc.live import instruments
from ioc.live.frames import READINGS, FeedFilter, Frame, merge_readings
from ioc.storage import feed as feed_store

log = logging.getLogger(__name__)


class Subscriber:
    """A live client's bounded queue of frames, fed synchronously by the hub.

    Full-queue policy: readings frames are coalesced (all queued readings frames and the new one
    become one frame at the tail, newest value per device and metric); when an alert, device or
    other frame cannot be queued even after that, the client is too far behind: its queue is
    cleared and ``overflowed`` is set — the session then sends ``resync`` and closes.
    """

    __slots__ = (
        "_readings",
        "after",
        "capacity",
        "closed",
        "coalesced",
        "filter",
        "gone",
        "overflowed",
        "position",
        "queue",
        "wake",
    )

    def __init__(self, flt: FeedFilter, capacity: int, after: int) -> None:
        self.filter = flt
        self.capacity = capacity
        self.after = after  # frames at or below this seq were delivered already: skipped
        self.position = after  # every frame at or below this seq was queued or filtered out
        self.queue: deque[Frame] = deque()
        self._readings = 0  # readings frames in the queue
        self.wake = asyncio.Event()
        self.overflowed = False
        self.gone = asyncio.Event()  # set on overflow: the session has a grace period to end
        self.closed = False
        self.coalesced = 0

    def push(self, seq: int, view: Frame | None) -> None:
        if self.overflowed or self.closed or seq <= self.after:
            return
        self.position = seq
        if view is None:
            return
        self.wake.set()
        if len(self.queue) < self.capacity:
            self._append(view)
            return
        if view.type == READINGS:
            if self._readings:
                self._coalesce_into(view)
                return
        elif self._readings >= 2:
            self._compact()
            self._append(view)
            return
        self.overflowed = True
        self.gone.set()
        self.queue.clear()
        self._readings = 0

    def pop(self) -> Frame:
        frame = self.queue.popleft()
        if frame.type == READINGS:
            self._readings -= 1
        return frame

    def close(self) -> None:
        self.closed = True
        self.wake.set()

    def _append(self, frame: Frame) -> None:
        self.queue.append(frame)
        if frame.type == READINGS:
            self._readings += 1

    def _coalesce_into(self, view: Frame) -> None:
        """Queued readings frames and ``view`` → one frame at the tail (seq of ``view``)."""
        merged = [f for f in self.queue if f.type == READINGS]
        self.queue = deque(f for f in self.queue if f.type != READINGS)
        self._readings = 0
        self._append(merge_readings([*merged, view]))
        self.coalesced += len(merged)
        instruments.READINGS_COALESCED.inc(len(merged))

    def _compact(self) -> None:
        """Queued readings frames → one, where the newest of them stands (seq order holds)."""
        merged = [f for f in self.queue if f.type == READINGS]
        one = merge_readings(merged)
        kept: deque[Frame] = deque()
        for f in self.queue:
            if f.type != READINGS:
                kept.append(f)
            elif f is merged[-1]:
                kept.append(one)
        self.queue = kept
        self._readings = 1
        self.coalesced += len(merged) - 1
        instruments.READINGS_COALESCED.inc(len(merged) - 1)


class LiveHub:
    POLL_INTERVAL_S = 2.0  # safety poll when no notification comes
    PAGE = 500  # feed rows per read

    def __init__(self, settings: Settings, conninfo: str, pool: AsyncConnectionPool) -> None:
        self.settings = settings
        self._conninfo = conninfo
        self._pool = pool
        # Bounded by count and by bytes: with a busy ingest one readings frame can be hundreds
        # of kilobytes, and 10,000 of them held a gigabyte (measured: benchmarks/soak.py).
        self.ring: deque[Frame] = deque()
        self.ring_bytes = 0
        self._ring_max = settings.feed_buffer
        self._ring_max_bytes = settings.feed_buffer_bytes
        self.ring_floor = 0  # the ring holds every frame with ring_floor < seq <= last_seq
        self.last_seq = 0
        self.connected = False
        self.resyncs = 0  # clients sent a resync frame (too slow, or pruned resume point)
        self.backlog_reads = 0  # resume pages read from the database
        self._subscribers: set[Subscriber] = set()
        self._task: asyncio.Task[None] | None = None

    # -- life cycle --------------------------------------------------------------------------

    async def start(self) -> None:
        async with self._pool.connection() as conn:
            self.last_seq = await feed_store.head_seq(conn)
        self.ring_floor = self.last_seq
        instruments.FEED_SEQ.set(self.last_seq)
        self._task = asyncio.create_task(self._run(), name="live-hub")

    async def stop(self) -> None:
        await stop_task(self._task)
        self._task = None
        for sub in list(self._subscribers):
            sub.close()
        self._subscribers.clear()
        self.connected = False
        instruments.LISTENER_CONNECTED.set(0)

    async def __aenter__(self) -> LiveHub:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def stopped(self) -> bool:
        return self._task is None

    # -- subscribers -------------------------------------------------------------------------

    def subscribe(self, flt: FeedFilter, after: int) -> Subscriber:
        """Live frames with seq > ``after`` from now on. Synchronous on purpose: a caller that
        checked ``last_seq`` and subscribes without awaiting in between misses nothing."""
        sub = Subscriber(flt, self.settings.ws_client_queue, after)
        if self.stopped:
            sub.close()
        else:
            self._subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        self._subscribers.discard(sub)

    @property
    def subscribers(self) -> frozenset[Subscriber]:
        return frozenset(self._subscribers)

    def ring_after(self, seq: int, limit: int) -> list[Frame] | None:
        """Up to ``limit`` buffered frames with seq > ``seq``; None if the ring no longer reaches
        back that far (the caller reads the database instead)."""
        if seq < self.ring_floor:
            return None
        ring = self.ring
        lo, hi = 0, len(ring)
        while lo < hi:
            mid = (lo + hi) // 2
            if ring[mid].seq <= seq:
                lo = mid + 1
            else:
                hi = mid
        return list(islice(ring, lo, lo + limit))

    async def backlog_page(self, seq: int, limit: int) -> tuple[int, list[Frame]]:
        """``(oldest retained seq, frames after seq)`` from the database, one snapshot."""
        async with self._pool.connection() as conn:
            oldest, rows = await feed_store.backlog_page(conn, seq, limit)
        self.backlog_reads += 1
        instruments.BACKLOG_ROWS.inc(len(rows))
        return oldest, [Frame.from_row(r) for r in rows]

    # -- tailing the table -------------------------------------------------------------------

    async def _run(self) -> None:
        await listen(
            self._conninfo,
            [feed_store.FEED_CHANNEL],
            self._catch_up,
            what="live feed",  # it re-reads after its last seq on reconnecting
            on_connected=self._connected,
            on_lost=self._lost,
            poll_s=self.POLL_INTERVAL_S,
        )

    async def _connected(self, conn: psycopg.AsyncConnection) -> None:
        # Listening before reading: a row committed from here on is either in the read below or
        # announced by a notification we will receive.
        await self._catch_up(conn)
        self.connected = True
        instruments.LISTENER_CONNECTED.set(1)

    def _lost(self) -> None:
        self.connected = False
        instruments.LISTENER_CONNECTED.set(0)

    async def _catch_up(self, conn: psycopg.AsyncConnection) -> None:
        while True:
            rows = await feed_store.events_after(conn, self.last_seq, self.PAGE)
            for row in rows:
                self._publish(Frame.from_row(row))
            if rows:
                instruments.FEED_SEQ.set(self.last_seq)
                lag = time.time() - rows[-1].time.timestamp()
                instruments.FEED_LAG.set(max(0.0, lag))
            if len(rows) < self.PAGE:
                return
            await asyncio.sleep(0)  # let the senders run between pages

    def _publish(self, frame: Frame) -> None:
        """Ring buffer, then every subscriber; no await, so subscribing is atomic against it."""
        ring = self.ring
        ring.append(frame)
        self.ring_bytes += frame.size
        while ring and (len(ring) > self._ring_max or self.ring_bytes > self._ring_max_bytes):
            old = ring.popleft()
            self.ring_bytes -= old.size
            self.ring_floor = old.seq
        self.last_seq = frame.seq
        views: dict[FeedFilter, Frame | None] = {}
        for sub in list(self._subscribers):
            flt = sub.filter
            if flt in views:
                view = views[flt]
            else:
                view = views[flt] = flt.apply(frame)
            sub.push(frame.seq, view)
            if sub.overflowed:
                self._subscribers.discard(sub)
                self.resyncs += 1
                instruments.RESYNCS.labels("too_slow").inc()
        frame.drop_parsed()
