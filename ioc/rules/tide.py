"""The predicted astronomical tide as the rule engine sees it: a small interface, injected.

Rules on the residual (observed − predicted: the surge a flood adds to the tide) and on the
forecast peak need the tide prediction of a gauge. The engine does not compute it (``rules/``
is a pure engine, and harmonic prediction is ``ioc.core.tides``' business): the composition root
(``ioc.alerting.service``) hands the engine a ``TideSource``; timeline tests and backtests hand
it a ``TabulatedTide`` built from whatever curve they drive. A gauge with no prediction answers
``None`` / no high waters, and the tide rules stay silent for it (they never guess).
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterable, Mapping, Sequence
from typing import NamedTuple, Protocol


class HighWater(NamedTuple):
    time: float  # epoch seconds
    level_m: float


class TideSource(Protocol):
    def level_m(self, device_id: str, t: float) -> float | None:
        """Predicted astronomical level at ``t`` (same datum as the gauge), or None."""
        ...

    def high_waters(self, device_id: str, t0: float, t1: float) -> Sequence[HighWater]:
        """Predicted high waters with ``t0 <= time <= t1``, in time order."""
        ...


class TabulatedTide:
    """A prediction given as points per gauge (e.g. every 10 minutes for the span replayed),
    linearly interpolated; high waters are the table's local maxima. Memory is the table's.
    Outside the table's span the answer is None: an unknown tide is not a zero tide."""

    def __init__(self, tables: Mapping[str, tuple[Sequence[float], Sequence[float]]]) -> None:
        self._t: dict[str, list[float]] = {}
        self._v: dict[str, list[float]] = {}
        self._hw: dict[str, list[HighWater]] = {}
        for device_id, (times, levels) in tables.items():
            t, v = [float(x) for x in times], [float(x) for x in levels]
            if len(t) != len(v) or any(b <= a for a, b in itertools.pairwise(t)):
                raise ValueError(f"{device_id}: times must ascend, one level per time")
            self._t[device_id], self._v[device_id] = t, v
            self._hw[device_id] = list(_maxima(t, v))

    def level_m(self, device_id: str, t: float) -> float | None:
        ts = self._t.get(device_id)
        if not ts or t < ts[0] or t > ts[-1]:
            return None
        vs = self._v[device_id]
        i = bisect.bisect_right(ts, t)
        if i >= len(ts):
            return vs[-1]
        t0, t1 = ts[i - 1], ts[i]
        return vs[i - 1] + (vs[i] - vs[i - 1]) * (t - t0) / (t1 - t0)

    def high_waters(self, device_id: str, t0: float, t1: float) -> Sequence[HighWater]:
        hw = self._hw.get(device_id, [])
        lo = bisect.bisect_left(hw, (t0, float("-inf")))
        hi = bisect.bisect_right(hw, (t1, float("inf")))
        return hw[lo:hi]


def _maxima(t: Sequence[float], v: Sequence[float]) -> Iterable[HighWater]:
    """Local maxima of a sampled curve (a plateau counts once, at its first point)."""
    n = len(v)
    i = 1
    while i < n - 1:
        if v[i] > v[i - 1]:
            j = i
            while j < n - 1 and v[j + 1] == v[i]:
                j += 1
            if j < n - 1 and v[j + 1] < v[i]:
                yield HighWater(t[i], v[i])
            i = j + 1
        else:
            i += 1
