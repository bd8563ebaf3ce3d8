"""Flood stations: water level = predicted tide + rain-driven rise + scenario offset + noise.

The astronomical tide (mean level, seasonal Sa/Ssa, M2, S2, N2, K1, O1) is ioc.core.tides's
prediction from the harmonic constituents of ioc/site_data/tides.yaml, fitted to the published
peaks of the stations (docs/tides.md): a mixed, mainly semi-diurnal East Sea tide at Phụng Hiệp,
a mixed tide with a strong diurnal West Sea part at Vị Thanh, the high-water season Sep–Jan with
the year's highest spring tides in Oct–Dec, which reach BĐ III at Vị Thanh on a few dozen days a
year without any storm. An urban canal gauge sees its station's tide later and damped (its
``gauges`` entry in the tide data: lag, amplitude factor, datum offset).

Scenarios act through ``tide_factor`` (multiplies the tidal part about the seasonal mean),
``water_offset_m`` (a surge or backed-up drains, by device id or city) and rain: rain raises the
level through two linear reservoirs (3 h and 24 h), i.e. a lagged, smoothed rise of ≈ 0.15 m for
100 mm at a hydrological station, more at urban canal gauges.

A flood device with no tide data (no ``station`` with constituents and no ``gauges`` entry) keeps
a flat mean level below its BĐ I: it still answers rain and scenario offsets.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from functools import lru_cache

from ioc.core.catalogue import clip
from ioc.core.devices import Device
from ioc.core.site import Site
from ioc.core.tides import PACKAGED_TIDES, GaugeTide, TidePredictor, UnknownStation
from ioc.simulators.conditions import NORMAL, Conditions
from ioc.simulators.model import device_key, epoch_s, gauss_noise
from ioc.simulators.rain import CityRain, logger_battery_v

_STEP_S = 300.0
_T1_S, _T2_S = 3 * 3600.0, 24 * 3600.0  # fast runoff store, slow canal store


@lru_cache(maxsize=1)
def packaged_tides() -> TidePredictor:
    """The tide data of the packaged site (used when no predictor is handed in)."""
    return TidePredictor.load(PACKAGED_TIDES)


class FloodStationModel:
    """A water-level station (hydrological station or urban canal gauge)."""

    def __init__(
        self, device: Device, seed: int, field: CityRain, tides: TidePredictor | None = None
    ) -> None:
        self.device = device
        self.interval_s = 300.0
        self.field = field
        a = device.attributes
        self.bd1, self.bd2, self.bd3 = float(a["bd1"]), float(a["bd2"]), float(a["bd3"])
        self._key = device_key(seed, device.id)
        self.tide: GaugeTide | None
        try:
            self.tide = (tides if tides is not None else packaged_tides()).for_device(device)
        except UnknownStation:
            self.tide = None
        self.flat_mean_m = self.bd1 - (self.bd3 - self.bd1)
        # Runoff from the streets raises a side canal more than the river at a station.
        self.rain_m_per_mm = 0.003 if a.get("role") == "urban-gauge" else 0.002
        self._fast = 0.0  # mm of runoff in the fast store
        self._slow = 0.0  # mm in the slow store; the level rises with it
        self._last_t: float | None = None

    def tide_m(self, t: datetime | float) -> float:
        """Astronomical tide (m about the seasonal mean) at this device at ``t``, tide_factor 1."""
        if self.tide is None:
            return 0.0
        level, mean = self.tide.at(t if isinstance(t, float) else epoch_s(t))
        return level - mean

    def mean_level_m(self, t: datetime | float) -> float:
        """Seasonal mean level (Z0 + Sa + Ssa as this device sees it) at ``t``."""
        if self.tide is None:
            return self.flat_mean_m
        return self.tide.at(t if isinstance(t, float) else epoch_s(t))[1]

    def rain_rise_m(self) -> float:
        """Current rise (m) from rain in the catchment, lagged and smoothed."""
        return self.rain_m_per_mm * self._slow

    def _route(self, t0: float, t1: float, cond: Conditions) -> None:
        steps = max(1, math.ceil((t1 - t0) / _STEP_S))
        h = (t1 - t0) / steps
        for i in range(steps):
            rain = self.field.amount(t0 + i * h, t0 + (i + 1) * h, cond)
            out_fast = self._fast * (1.0 - math.exp(-h / _T1_S))
            self._fast += rain - out_fast
            self._slow += out_fast - self._slow * (1.0 - math.exp(-h / _T2_S))

    def _advance(self, t: datetime, cond: Conditions) -> float:
        ts = epoch_s(t)
        if self._last_t is None:
            # Spin up on the last three days' showers (the scenario starts now, not before).
            self._route(ts - 3 * 86_400.0, ts, NORMAL)
            self._last_t = ts
        elif ts > self._last_t:
            self._route(self._last_t, ts, cond)
            self._last_t = ts
        return ts

    def level_m(self, t: datetime, cond: Conditions) -> float:
        """Water level (m above datum) at ``t`` under ``cond``, noise-free."""
        ts = self._advance(t, cond)
        offset = cond.water_offset_m.get(self.device.id, cond.water_offset_m.get(self.device.city))
        # No tide data: a flat mean, so the tide about it is 0.
        level, mean = (
            self.tide.at(ts) if self.tide is not None else (self.flat_mean_m, self.flat_mean_m)
        )
        return mean + cond.tide_factor * (level - mean) + self.rain_rise_m() + (offset or 0.0)

    def online(self, t: datetime, cond: Conditions) -> bool:
        """Online unless the scenario silences it."""
        self._advance(t, cond)
        return self.device.id not in cond.silent_devices

    def telemetry(self, t: datetime, cond: Conditions) -> dict[str, float] | None:
        """Water level (± 6 mm of wind chop and sensor noise) and logger battery."""
        level = self.level_m(t, cond)
        if self.device.id in cond.silent_devices:
            return None
        level += 0.004 * gauss_noise(self._key, int(epoch_s(t) // 60), 1)
        return clip(
            "flood", {"water_level_m": round(level, 3), "battery_v": logger_battery_v(self._key, t)}
        )

    def events(self, t: datetime, cond: Conditions) -> list[dict[str, object]]:
        """No spontaneous events (alarm levels are the IOC's rules, not the station's)."""
        self._advance(t, cond)
        return []


def highest_tide_start(
    site: Site, start: datetime, duration: timedelta, back_days: int = 5
) -> tuple[datetime, float]:
    """Of ``start`` and the ``back_days`` days before it (same time of day), the start whose run
    holds the highest predicted tide at a hydrological station relative to its BĐ III, and that
    margin (m; positive: the tide alone crosses BĐ III).

    ``ioc demo`` replays its scenario on a recent day (the IOC refuses readings older than its
    window); the tide is the real prediction of that day, so the spring-tide story needs the day
    of the week with the highest tide — a spring tide when one fell in the window.
    """
    tides = TidePredictor.from_site(site)
    stations = [
        d for d in site.devices
        if d.kind == "flood" and d.attributes.get("role") == "station"
        and d.attributes.get("station") in tides.stations
    ]  # fmt: skip
    if not stations:
        return start, float("-inf")
    best: tuple[datetime, float] | None = None
    for k in range(back_days + 1):
        s = start - timedelta(days=k)
        n = max(2, int(duration / timedelta(minutes=10)) + 1)
        times = [s + i * duration / (n - 1) for i in range(n)]
        margin = max(
            float(tides.for_device(d).level_m(times).max()) - float(d.attributes["bd3"])
            for d in stations
        )
        if best is None or margin > best[1]:
            best = (s, margin)
    assert best is not None
    return best
