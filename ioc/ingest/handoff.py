"""The bounded hand-off between the MQTT pump and the batch writer (both on one event loop).

Policy when full:
- QoS 1 (everything the contract asks devices to send): the MQTT pump waits for room before it
  hands over the next message. The client's own queue then fills, its reader stops reading the
  socket, TCP pushes back on the broker, and the broker stops sending once our MQTT v5 Receive
  Maximum of un-acknowledged messages is reached — so a slow or unavailable database slows
  intake down instead of losing or buffering without bound. The capacity equals that Receive
  Maximum, so QoS 1 traffic alone fills it only with copies from a lost connection.
- QoS 0 (outside the contract; the broker does not count it against Receive Maximum): dropped
  and counted (``ioc_ingest_dropped_qos0_total``): a QoS 0 sender accepted loss when it chose it.
"""

from __future__ import annotations

import asyncio
from typing import NamedTuple

from ioc.ingest.records import Record


class Delivery(NamedTuple):
    """One MQTT message: its packet id and QoS (to acknowledge later) and what it decoded to.

    A named tuple, not a frozen dataclass: one is built per message in the MQTT pump, and a
    frozen dataclass's ``__init__`` (``object.__setattr__`` per field) was 6 % of the pump's
    time in the profile (docs/benchmarks.md)."""

    mid: int
    qos: int
    generation: int  # the MQTT connection it arrived on (see MqttSubscriber.ack)
    topic: str
    payload: bytes
    record: Record
    received_at: float = 0.0  # time.time() when the client handed it over (for the lag gauge)


class Handoff:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: list[Delivery] = []
        self._ready = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._closed = False

    def __len__(self) -> int:
        return len(self._items)

    def full(self) -> bool:
        return len(self._items) >= self.capacity

    def put(self, item: Delivery) -> bool:
        """Never blocks: the producer awaits :meth:`wait_room` when :meth:`full`. False if not
        queued (QoS 0 finding it full, or closed)."""
        if self._closed or (item.qos == 0 and len(self._items) >= self.capacity):
            return False
        self._items.append(item)
        if len(self._items) == 1:
            self._ready.set()
        if len(self._items) >= self.capacity:
            self._room.clear()
        return True

    async def wait_room(self) -> None:
        await self._room.wait()

    async def take(self, max_items: int, linger_s: float) -> list[Delivery]:
        """Wait for at least one item, give the batch ``linger_s`` to fill, return up to max."""
        while True:
            await self._ready.wait()
            if linger_s > 0 and len(self._items) < max_items and not self._closed:
                await asyncio.sleep(linger_s)
            batch = self._items[:max_items]
            del self._items[:max_items]
            if not self._items:
                self._ready.clear()
            if len(self._items) < self.capacity:
                self._room.set()
            if batch or self._closed:
                return batch

    def close(self) -> None:
        """Refuse new items and release a waiting producer; queued items stay to be drained."""
        self._closed = True
        self._room.set()
        self._ready.set()

    def drain(self) -> list[Delivery]:
        batch, self._items = self._items, []
        self._room.set()
        return batch
