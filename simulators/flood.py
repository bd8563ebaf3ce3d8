"""Flood stations: water level = mean + tide + season + rain-driven rise + scenario offset.

The delta's canals carry a semi-diurnal tide. Two constituents are enough to make it behave:
M2 (principal lunar, 12 h 25.2 min) and S2 (principal solar, 12 h); their beat is the
spring/neap cycle of 14.77 days. They are in phase — spring tide — about two days after each new
and full moon (the "age of the tide" of the Mekong estuaries), anchored to the new moon of
2026-01-18 19:52 UTC, with spring high waters near 06:00 and 18:00 local time.

Levels come from the station's alarm levels when the site gives no tidal constants: the M2
amplitude is 30 % of BĐ III and S2 is 35 % of M2, a seasonal swell (flood season peaking late
October) of ±8 % of BĐ III, and a mean level placed so that a flood-season spring tide peaks
40 % of the way from BĐ I to BĐ II. So an ordinary day stays below BĐ I and spring tides reach
BĐ I, as the 2023–2025 bulletins describe; rain, ``tide_factor`` and ``water_offset_m`` take it
higher. The attributes ``mean_level_m``, ``tide_m2_m`` and ``tide_s2_m`` override the defaults.

Rain raises the level through two linear reservoirs (3 h and 24 h), i.e. a lagged, smoothed
rise of ≈ 0.15 m for 100 mm at a hydrological station, more at urban canal gauges, which also
lag the station's tide by 10–40 minutes.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

from ioc.devices import Device
from simulators.conditions import NORMAL, Conditions
from simulators.model import device_key, device_rng, epoch_s, gauss_noise, within_catalogue
from simulators.rain import CityRain, logger_battery_v

M2_PERIOD_S = 12.4206012 * 3600.0
S2_PERIOD_S = 12.0 * 3600.0
# Spring tide: new moon 2026-01-18 19:52 UTC + ~2 days, at an S2 high water (23:00 UTC = 06:00
# local). Both constituents peak here; they do again every 14.77 days.
SPRING_ANCHOR_S = datetime(2026, 1, 20, 23, 0, tzinfo=UTC).timestamp()
_YEAR_S = 365.2422 * 86_400.0
_SEASON_PEAK_S = datetime(2026, 10, 25, tzinfo=UTC).timestamp()
_STEP_S = 300.0
_T1_S, _T2_S = 3 * 3600.0, 24 * 3600.0  # fast runoff store, slow canal store


class FloodStationModel:
    """A water-level station (hydrological station or urban canal gauge)."""

    def __init__(self, device: Device, seed: int, field: CityRain) -> None:
        self.device = device
        self.interval_s = 300.0
        self.field = field
        a = device.attributes
        self.bd1, self.bd2, self.bd3 = float(a["bd1"]), float(a["bd2"]), float(a["bd3"])
        self.m2_m = float(a.get("tide_m2_m", 0.30 * self.bd3))
        self.s2_m = float(a.get("tide_s2_m", 0.35 * self.m2_m))
        self.season_m = 0.08 * self.bd3
        spring_peak = self.bd1 + 0.4 * (self.bd2 - self.bd1)
        default_mean = spring_peak - self.season_m - self.m2_m - self.s2_m
        self.mean_m = float(a.get("mean_level_m", default_mean))
        self._key = device_key(seed, device.id)
        rng = device_rng(seed, device.id)
        if a.get("role") == "urban-gauge":
            # A gauge up a side canal: the tide arrives later and a little damped; the bed and
            # datum differ slightly; runoff from the streets raises it more.
            self.lag_s = rng.uniform(600.0, 2400.0)
            self.amp_factor = rng.uniform(0.85, 1.0)
            self.mean_m += rng.uniform(-0.05, 0.02)
            self.rain_m_per_mm = 0.003
        else:
            self.lag_s, self.amp_factor, self.rain_m_per_mm = 0.0, 1.0, 0.002
        self._fast = 0.0  # mm of runoff in the fast store
        self._slow = 0.0  # mm in the slow store; the level rises with it
        self._last_t: float | None = None

    def tide_m(self, t: datetime | float) -> float:
        """Astronomical tide (m about the mean) at this station at ``t``, tide_factor 1."""
        ts = (t if isinstance(t, float) else epoch_s(t)) - self.lag_s - SPRING_ANCHOR_S
        return self.amp_factor * (
            self.m2_m * math.cos(2 * math.pi * ts / M2_PERIOD_S)
            + self.s2_m * math.cos(2 * math.pi * ts / S2_PERIOD_S)
        )

    def seasonal_m(self, ts: float) -> float:
        """Seasonal swell of the mean level: highest with the Mekong flood in late October."""
        return self.season_m * math.cos(2 * math.pi * (ts - _SEASON_PEAK_S) / _YEAR_S)

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
        return (
            self.mean_m
            + self.seasonal_m(ts)
            + cond.tide_factor * self.tide_m(ts)
            + self.rain_rise_m()
            + (offset or 0.0)
        )

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
        return within_catalogue(
            "flood", {"water_level_m": round(level, 3), "battery_v": logger_battery_v(self._key, t)}
        )

    def events(self, t: datetime, cond: Conditions) -> list[dict[str, object]]:
        """No spontaneous events (alarm levels are the IOC's rules, not the station's)."""
        self._advance(t, cond)
        return []
