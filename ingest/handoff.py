"""The bounded hand-off between the MQTT network thread and the asyncio batch writer.

Policy when full:
- QoS 1 (everything the contract asks devices to send): the producer (paho's network thread)
  blocks. It stops reading the socket, TCP pushes back on the broker, and the broker stops
  sending once our MQTT v5 Receive Maximum of un-acknowledged messages is reached — so a slow or
  unavailable database slows intake down instead of losing or buffering without bound. The
  capacity equals that Receive Maximum, so QoS 1 traffic alone never fills it.
- QoS 0 (outside the contract; the broker does not count it against Receive Maximum): dropped
  and counted (``ioc_ingest_dropped_qos0_total``). Blocking for it would stall paho's thread
  long enough to miss keep-alives, and a QoS 0 sender accepted loss when it chose QoS 0.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass

from ingest.records import Record


@dataclass(frozen=True, slots=True)
class Delivery:
    """One MQTT message: its packet id and QoS (to acknowledge later) and what it decoded to."""

    mid: int
    qos: int
    generation: int  # the MQTT connection it arrived on (see MqttSubscriber.ack)
    topic: str
    payload: bytes
    record: Record
    received_at: float = 0.0  # time.time() when paho handed it over (for the lag gauge)


class Handoff:
    def __init__(self, capacity: int, loop: asyncio.AbstractEventLoop) -> None:
        self.capacity = capacity
        self._loop = loop
        self._items: list[Delivery] = []
        self._cond = threading.Condition()
        self._ready = asyncio.Event()
        self._closed = False

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: Delivery) -> bool:
        """Called from the network thread. QoS 1 blocks while full; QoS 0 is refused when full.
        False if not queued (full QoS 0, or closed)."""
        with self._cond:
            if item.qos == 0 and len(self._items) >= self.capacity:
                return False
            while len(self._items) >= self.capacity and not self._closed:
                self._cond.wait()
            if self._closed:
                return False
            self._items.append(item)
            wake = len(self._items) == 1
        if wake:
            # One cross-thread wake-up per batch, not per message: the writer only needs to know
            # that the list went from empty to non-empty.
            self._loop.call_soon_threadsafe(self._ready.set)
        return True

    async def take(self, max_items: int, linger_s: float) -> list[Delivery]:
        """Wait for at least one item, give the batch ``linger_s`` to fill, return up to max."""
        while True:
            await self._ready.wait()
            if linger_s > 0 and len(self._items) < max_items:
                await asyncio.sleep(linger_s)
            with self._cond:
                batch = self._items[:max_items]
                del self._items[:max_items]
                if not self._items:
                    self._ready.clear()
                self._cond.notify_all()
            if batch or self._closed:
                return batch

    def close(self) -> None:
        """Refuse new items and release a blocked producer; queued items stay to be drained."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._loop.call_soon_threadsafe(self._ready.set)

    def drain(self) -> list[Delivery]:
        with self._cond:
            batch, self._items = self._items, []
            self._cond.notify_all()
            return batch
