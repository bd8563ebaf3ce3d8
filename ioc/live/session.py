"""One /ws client's stream: hello, resume (ring buffer, else database), live frames, heartbeats.

Transport-agnostic: ``stream`` gets a ``send(text)`` coroutine and returns how the server wants the
connection closed. Ordering and exactly-once across the resume → live switch: the backlog is
pulled page by page at the client's pace; when the position reaches the hub's ``last_seq`` the
client subscribes in the same synchronous step (no await between the check and the subscription),
so every later frame reaches its queue, and frames at or below the position are skipped.

Positions: the ``seq`` of a heartbeat or resync frame is the client's position — every frame
matching its filters with a seq at or below it has been sent before — so reconnecting with
``since=<that seq>`` continues without gap or duplicate.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

import ioc
from ioc.live import instruments
from ioc.live.frames import FeedFilter, Frame, control
from ioc.live.hub import LiveHub, Subscriber

# WebSocket close codes (4000-4999 are the application's): they mirror HTTP statuses.
CLOSE_BAD_REQUEST = 4400
CLOSE_UNAUTHORIZED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_TOO_SLOW = 4429
CLOSE_GOING_AWAY = 1001

BACKLOG_PAGE = 500
RESYNC_GRACE_S = 10.0  # at least this long to deliver the final resync frame to a slow client

Send = Callable[[str], Awaitable[None]]


class _Sender:
    def __init__(self, send: Send) -> None:
        self._send = send

    async def frame(self, frame: Frame) -> None:
        await self._send(frame.text())
        instruments.FRAMES_SENT.labels(frame.type).inc()

    async def control(self, type: str, seq: int, **fields: object) -> None:
        await self._send(control(type, seq, **fields))
        instruments.FRAMES_SENT.labels(type).inc()


async def stream(hub: LiveHub, send: Send, flt: FeedFilter, since: int | None) -> tuple[int, str]:
    """Run one client until the server ends it; returns ``(close code, reason)``.

    Returns only on the server's initiative (too slow, shutting down); a client that goes away
    surfaces as the exception ``send`` raises, or as cancellation by the caller.
    """
    out = _Sender(send)
    heartbeat_s = hub.settings.ws_heartbeat_s
    head = hub.last_seq
    # Without ``since`` the client starts at the head: subscribe before the first await.
    sub: Subscriber | None = hub.subscribe(flt, after=head) if since is None else None
    try:
        await out.control(
            "hello",
            head,
            data={
                "version": ioc.__version__,
                "since": since,
                "heartbeat_s": heartbeat_s,
                "types": sorted(flt.types) if flt.types is not None else None,
                "city": sorted(flt.cities) if flt.cities is not None else None,
                "ward": sorted(flt.wards) if flt.wards is not None else None,
                "kind": sorted(flt.kinds) if flt.kinds is not None else None,
            },
        )
        next_beat = time.monotonic() + heartbeat_s
        if sub is None:
            assert since is not None
            sub, next_beat = await _resume(hub, out, flt, since, next_beat)
        task = asyncio.current_task()
        assert task is not None
        watchdog = asyncio.create_task(_watchdog(sub, _grace(hub), task), name="ws-watchdog")
        try:
            return await _live(hub, out, sub, next_beat)
        finally:
            watchdog.cancel()
    finally:
        if sub is not None:
            hub.unsubscribe(sub)


def _grace(hub: LiveHub) -> float:
    return max(RESYNC_GRACE_S, 2 * hub.settings.ws_heartbeat_s)


async def _watchdog(sub: Subscriber, grace_s: float, stream_task: asyncio.Task[object]) -> None:
    """A client that overflowed and still has not taken its resync frame after ``grace_s`` (its
    socket is stuck, so even the send in flight does not return) is cut off."""
    await sub.gone.wait()
    await asyncio.sleep(grace_s)
    stream_task.cancel()


async def _resume(
    hub: LiveHub, out: _Sender, flt: FeedFilter, since: int, next_beat: float
) -> tuple[Subscriber, float]:
    """Send every matching frame after ``since`` up to the hub's head, then subscribe."""
    heartbeat_s = hub.settings.ws_heartbeat_s
    pos = since
    while True:
        head = hub.last_seq
        if pos >= head:
            return hub.subscribe(flt, after=pos), next_beat  # no await since the check
        frames = hub.ring_after(pos, BACKLOG_PAGE)
        complete = False
        if frames is None:
            oldest, frames = await hub.backlog_page(pos, BACKLOG_PAGE)
            if pos + 1 < oldest:
                # Rows after ``pos`` were pruned: the client reloads its state over REST and
                # goes on live from here.
                sub = hub.subscribe(flt, after=hub.last_seq)
                hub.resyncs += 1
                instruments.RESYNCS.labels("pruned").inc()
                await out.control("resync", sub.after, reason="pruned", oldest=oldest)
                return sub, next_beat
            # A short page read after ``head`` was seen holds every row up to ``head``: rows
            # commit in seq order, so all of them were visible to it (``head`` itself may be a
            # rolled-back seq with no row).
            complete = len(frames) < BACKLOG_PAGE
        for frame in frames:
            view = flt.apply(frame)
            if view is not None:
                await out.frame(view)
            pos = frame.seq
            frame.drop_parsed()
        if complete:
            pos = max(pos, head)
        if time.monotonic() >= next_beat:  # a long, heavily filtered backlog still shows life
            await out.control("heartbeat", pos)
            next_beat = time.monotonic() + heartbeat_s


async def _live(hub: LiveHub, out: _Sender, sub: Subscriber, next_beat: float) -> tuple[int, str]:
    heartbeat_s = hub.settings.ws_heartbeat_s
    given = sub.after  # the position the client has reached (see the module docstring)
    while True:
        if sub.overflowed:
            # The hub cleared the queue and counted the resync; the watchdog bounds this send.
            await out.control("resync", given, reason="too_slow")
            return CLOSE_TOO_SLOW, "too slow: reconnect with since=<seq of the resync frame>"
        if sub.closed:
            return CLOSE_GOING_AWAY, "server shutting down"
        if not sub.queue:
            given = max(given, sub.position)
        now = time.monotonic()
        if now >= next_beat:
            await out.control("heartbeat", given)
            next_beat = now + heartbeat_s
            continue
        if sub.queue:
            frame = sub.pop()
            given = frame.seq
            await out.frame(frame)
            continue
        sub.wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(sub.wake.wait(), next_beat - now)
