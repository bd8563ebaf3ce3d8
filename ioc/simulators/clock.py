"""Simulated time: a clock that maps wall time to simulated time at a chosen speed.

``speed=1`` is real time, ``60`` a simulated minute per wall second, ``0`` as fast as possible
(the clock jumps to whatever time it is asked to wait for: tests and backtests never sleep).
The clock is the only place that reads the wall clock; everything below it is handed ``t``.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta


class SimClock:
    """Simulated time for one run; ``await sleep_until(t)`` paces the producer.

    ``monotonic`` and ``sleep`` are injectable so tests observe pacing without waiting.
    """

    def __init__(
        self,
        start: datetime,
        speed: float,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if start.tzinfo is None:
            raise ValueError(f"start {start.isoformat()} has no UTC offset")
        if not (speed >= 0 and math.isfinite(speed)):
            raise ValueError(f"speed must be a finite number >= 0, got {speed}")
        self.start = start
        self.speed = float(speed)
        self._monotonic = monotonic
        self._sleep = sleep
        self._wall0 = monotonic()
        self._fast_now = start  # fast mode: the latest time anyone waited for

    @property
    def fast(self) -> bool:
        """True when the clock never sleeps (``speed == 0``)."""
        return self.speed == 0

    def now(self) -> datetime:
        """The current simulated time."""
        if self.fast:
            return self._fast_now
        return self.start + timedelta(seconds=(self._monotonic() - self._wall0) * self.speed)

    def elapsed_wall_s(self) -> float:
        """Wall seconds since the clock was created (for rates in progress lines)."""
        return self._monotonic() - self._wall0

    def wall_delay_s(self, sim_t: datetime) -> float:
        """Wall seconds until ``sim_t`` is due; 0 when due already or in fast mode."""
        if self.fast:
            return 0.0
        return max(0.0, (sim_t - self.now()).total_seconds() / self.speed)

    async def sleep_until(self, sim_t: datetime) -> None:
        """Return once simulated time reaches ``sim_t`` (at once in fast mode, which jumps)."""
        if self.fast:
            if sim_t > self._fast_now:
                self._fast_now = sim_t
            return
        delay = self.wall_delay_s(sim_t)
        if delay > 0:
            await self._sleep(delay)


def recent_start(template: datetime, duration: timedelta, speed: float, now: datetime) -> datetime:
    """The latest start at ``template``'s local time of day whose whole run lies in the past.

    An IOC refuses timestamps from the future (beyond a small skew) and older than its window
    (a week by default), so a scenario written for ``2026-10-18T17:00+07:00`` is replayed at
    17:00 on a recent day instead. At ``speed`` s the run's last reading (start + duration) is
    published ``duration / speed`` wall seconds after ``now``; fast mode (0) may take no time.
    """
    budget = duration / speed if speed > 0 else timedelta(0)
    latest = now + min(timedelta(0), budget - duration)
    days = math.floor((latest - template) / timedelta(days=1))
    return template + timedelta(days=days)
