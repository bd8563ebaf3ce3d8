"""The predicted tide the rule engine reads (``ioc.rules.tide.TideSource``), from
``ioc.core.tides``.

The composition root builds it (``RulesService``, ``ioc rules backtest``); the engine only sees
the two methods of the protocol. A device the tide data does not cover (no gauge entry, no
``station`` attribute of a known station) answers None and no high waters: its tide rules stay
silent. Each rule of a reading asks for the same instant, so the last answer per device is kept.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path

from ioc.core.devices import Device
from ioc.core.settings import Settings
from ioc.core.site import load_site
from ioc.core.tides import GaugeTide, TideError, TidePredictor, UnknownStation
from ioc.rules.tide import HighWater

# GaugeTide.extremes answers at most this span at once (ioc.core.tides.MAX_RANGE_DAYS is 31)
_MAX_SPAN_S = 30 * 86400.0


def site_predictor(settings: Settings) -> TidePredictor:
    """The tide model of the configured site (its ``tides`` data file; empty without one)."""
    return _predictor(settings.site_path())


@lru_cache(maxsize=4)
def _predictor(site_path: Path) -> TidePredictor:
    return TidePredictor.from_site(load_site(site_path))


class PredictedTide:
    def __init__(self, predictor: TidePredictor, device: Callable[[str], Device | None]) -> None:
        self._predictor = predictor
        self._device = device
        self._views: dict[str, GaugeTide | None] = {}
        self._last: dict[str, tuple[float, float]] = {}

    def _view(self, device_id: str) -> GaugeTide | None:
        if device_id not in self._views:
            d = self._device(device_id)
            view: GaugeTide | None = None
            if d is not None and d.kind == "flood":
                try:
                    view = self._predictor.for_device(d)
                except UnknownStation:
                    view = None
            if len(self._views) >= 10_000:  # bounded: devices come and go
                self._views.clear()
            self._views[device_id] = view
        return self._views[device_id]

    def warm(self, device_ids: Sequence[str], t: float) -> int:
        """Predict the tide of every covered device at ``t`` now, so the first reading does not
        pay for it: the first prediction loads UTide and its constants (~2 s measured), which on
        the event loop stalled ingest, rules and the API alike (bench_live's first probes).
        Call it in a worker thread before the first batch; returns how many devices it covered."""
        return sum(1 for d in device_ids if self.level_m(d, t) is not None)

    def forget(self) -> None:
        """Devices changed: look their views up again."""
        self._views.clear()
        self._last.clear()

    def level_m(self, device_id: str, t: float) -> float | None:
        last = self._last.get(device_id)
        if last is not None and last[0] == t:
            return last[1]
        view = self._view(device_id)
        if view is None:
            return None
        level = float(view.at(t)[0])  # one instant, no array work
        self._last[device_id] = (t, level)
        return level

    def high_waters(self, device_id: str, t0: float, t1: float) -> Sequence[HighWater]:
        view = self._view(device_id)
        if view is None or t1 < t0:
            return []
        t1 = min(t1, t0 + _MAX_SPAN_S)
        try:
            found = view.high_waters(
                datetime.fromtimestamp(t0, UTC), datetime.fromtimestamp(t1, UTC)
            )
        except TideError:
            return []
        return [HighWater(at.timestamp(), level) for at, level in found]
