"""Salinity stations: a dry-season salt wedge that rides the tide.

salinity = fresh + (dry_peak − fresh) × season × intrusion × tide shape (+ sensor noise)

- **Season** (dry season Dec–May, ``ioc/site_data/salinity.yaml``): zero from June to November;
  from 1 December a bump ``sin²(π·x^1.25)`` of the season's fraction ``x`` elapsed, which is
  small in December, high from February to April (maximum in mid-March) and zero again on
  1 June.
- **Tide shape**: the salt comes in with the flood tide and goes out on the ebb, so salinity
  follows the predicted tide of the station's ``tide_station`` (``ioc.core.tides``, the harmonic
  prediction the flood stations use) ``tide_lag_min`` later. The tide about its seasonal mean,
  as a share of a spring high water (``SPRING_SHARE`` of the sum of the constituents'
  amplitudes), becomes ``0.1 + 0.9·h²`` with ``h`` from 0 (low) to 1 (spring high water): peaks
  twice a day, higher at spring tides, the morning one higher in the dry season (the diurnal
  inequality), in March at 05–08 h and 18–21 h local as the Hậu Giang bulletins report; at low
  water a tenth of the intrusion stays (the wedge does not leave at once). A station without a
  prediction gets the shape's mean, 0.55, all day.
- **Magnitude** per station (``dry_peak_ppt``, calibrated on the bulletins in salinity.yaml): an
  ordinary dry season brings ~3‰ to the Xà No near Vị Thanh (West-Sea salt up the Cái Lớn) and
  ~0.4‰ to the Cái Côn at Ngã Bảy (East-Sea salt up the Hậu river).
- **Scenario knob** ``salinity_factor`` (by station id or city id) multiplies the intrusion: a
  year like March 2024 (low Mekong flow) is ≈ 2.8 — > 8‰ at Vị Thanh, ~1.1‰ at Ngã Bảy.
"""

from __future__ import annotations

import math
from datetime import datetime

from ioc.core.catalogue import clip
from ioc.core.devices import Device
from ioc.core.tides import SEASONAL, GaugeTide, TidePredictor, UnknownStation
from ioc.simulators.conditions import Conditions
from ioc.simulators.model import LOCAL_TZ, device_key, epoch_s, gauss_noise
from ioc.simulators.rain import logger_battery_v

FRESH_PPT = 0.08  # river water outside the salt season (a conductivity logger's fresh reading)
RESIDUAL_AT_LOW_WATER = 0.1  # share of the intrusion still there at low water
SEASON_SHAPE = 1.25  # x**1.25 moves the bump's maximum from early to mid March
# A spring high water is about this share of the sum of the tidal constituents' amplitudes (the
# constituents are never all in phase; ioc/site_data/tides.yaml, March 2026: 0.83 at both).
SPRING_SHARE = 0.8
NO_TIDE_SHAPE = 0.55  # the tide shape's mean over a cycle, for a station without a prediction


def season_factor(t: datetime) -> float:
    """0 outside the dry season (June–November); up to 1 in mid-March."""
    local = t.astimezone(LOCAL_TZ)
    year = local.year if local.month == 12 else local.year - 1
    start = datetime(year, 12, 1, tzinfo=LOCAL_TZ)
    end = datetime(year + 1, 6, 1, tzinfo=LOCAL_TZ)
    if not start <= local < end:
        return 0.0
    x = (local - start) / (end - start)
    return math.sin(math.pi * x**SEASON_SHAPE) ** 2


class SalinityStationModel:
    """A conductivity/salinity logger at an intake."""

    def __init__(self, device: Device, seed: int, tides: TidePredictor) -> None:
        self.device = device
        self.interval_s = 600.0  # every 10 minutes, as intake salinity loggers commonly report
        a = device.attributes
        self.peak_ppt = float(a.get("dry_peak_ppt", 1.0))
        self.lag_s = 60.0 * float(a.get("tide_lag_min", 60))
        self._key = device_key(seed, device.id)
        self._tide: GaugeTide | None = None
        self._spring_m = 1.0
        station = str(a.get("tide_station") or "")
        try:
            self._tide = tides.view(station)
            self._spring_m = (
                SPRING_SHARE
                * sum(
                    c.amplitude_m
                    for c in tides.station(station).constituents
                    if c.name not in SEASONAL
                )
                or 1.0
            )
        except UnknownStation:
            self._tide = None

    def tide_shape(self, t: datetime) -> float:
        """0.1 … 1: how far the wedge is in, following the tide ``tide_lag_min`` earlier."""
        if self._tide is None:
            return NO_TIDE_SHAPE
        level, mean = self._tide.at(epoch_s(t) - self.lag_s)
        high = min(1.0, max(0.0, ((level - mean) / self._spring_m + 1.0) / 2.0))
        return RESIDUAL_AT_LOW_WATER + (1.0 - RESIDUAL_AT_LOW_WATER) * high * high

    def intrusion(self, cond: Conditions) -> float:
        f = cond.salinity_factor
        return f.get(self.device.id, f.get(self.device.city, 1.0))

    def salinity_ppt(self, t: datetime, cond: Conditions) -> float:
        """Salinity (‰) at ``t`` under ``cond``, noise-free."""
        salt = (self.peak_ppt - FRESH_PPT) * season_factor(t) * self.intrusion(cond)
        return FRESH_PPT + max(0.0, salt) * self.tide_shape(t)

    def online(self, t: datetime, cond: Conditions) -> bool:
        return self.device.id not in cond.silent_devices

    def telemetry(self, t: datetime, cond: Conditions) -> dict[str, float] | None:
        """Salinity (± 1 % cell noise), water temperature and logger battery."""
        if self.device.id in cond.silent_devices:
            return None
        tick = int(epoch_s(t) // 60)
        ppt = self.salinity_ppt(t, cond) * (1.0 + 0.01 * gauss_noise(self._key, tick, 1))
        local = t.astimezone(LOCAL_TZ)
        hour = local.hour + local.minute / 60.0
        # Canal water: ~28 °C in the cool months to ~31 °C in April–May, +1 °C mid-afternoon.
        doy = local.timetuple().tm_yday
        temp = 29.5 - 1.5 * math.cos(2 * math.pi * (doy - 15) / 365.0)
        temp += 0.8 * math.sin(math.pi * (hour - 9.0) / 12.0) if 9.0 <= hour <= 21.0 else 0.0
        temp += 0.1 * gauss_noise(self._key, tick, 4)
        return clip(
            "salinity",
            {
                "salinity_ppt": round(max(0.0, ppt), 3),
                "water_temp_c": round(temp, 2),
                "battery_v": logger_battery_v(self._key, t),
            },
        )

    def events(self, t: datetime, cond: Conditions) -> list[dict[str, object]]:
        """No spontaneous events (thresholds are the IOC's rules, not the logger's)."""
        return []
