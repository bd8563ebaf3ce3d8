"""Rain: a convective-shower field per city, and tipping-bucket gauges that sample it.

The Mekong delta's rainy season runs May–November; rain then comes mostly as afternoon and
evening convective showers (onset around 13–20 h, 20 minutes to a few hours, peaks of tens of
mm/h). The dry season (December–April) has few, light showers. :class:`CityRain` draws each
day's showers from the month's climatology (deterministic for city, seed and date); each gauge
sees them scaled and shifted a little (convective cells are a few km across), plus the scenario's
``Conditions.rain_mm_h`` for its city. Flood stations of the city read the same field.

Gauges are tipping buckets (0.2 mm resolution by default): they report the rain of the interval,
its mean rate and the rolling 24-hour total, which is the sum of the interval amounts.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from ioc.core.catalogue import clip
from ioc.core.devices import Device
from ioc.simulators.conditions import NORMAL, Conditions
from ioc.simulators.model import (
    LOCAL_TZ,
    device_key,
    device_rng,
    epoch_s,
    noise,
)

# Probability that a day has showers, by month (Jan..Dec): Cần Thơ / Vị Thanh climatology has
# ~1–3 rain days a month in Jan–Mar and ~18–22 in Jun–Oct.
RAIN_DAY_P = (0.05, 0.03, 0.06, 0.2, 0.5, 0.62, 0.62, 0.66, 0.7, 0.66, 0.45, 0.15)
RAINY_MONTHS = frozenset(range(5, 12))  # May..November
_SUBSTEP_S = 60.0


@dataclass(frozen=True, slots=True)
class Shower:
    """One convective shower over a city: a half-sine of intensity from ``start`` (epoch s)."""

    ident: int
    start_s: float
    duration_s: float
    peak_mm_h: float

    def rate(self, ts: float) -> float:
        """Intensity (mm/h) at epoch second ``ts``."""
        x = (ts - self.start_s) / self.duration_s
        return self.peak_mm_h * math.sin(math.pi * x) if 0.0 < x < 1.0 else 0.0

    @property
    def total_mm(self) -> float:
        """Rain the shower drops at the centre of the cell."""
        return self.peak_mm_h * self.duration_s / 3600.0 * 2.0 / math.pi


class CityRain:
    """The showers over one city, day by day (deterministic for city and seed)."""

    def __init__(self, city_id: str, seed: int) -> None:
        self.city_id = city_id
        self._seed = seed
        self._days: dict[int, tuple[Shower, ...]] = {}

    def showers(self, day: date) -> tuple[Shower, ...]:
        """The showers starting on the local calendar day ``day``."""
        n = day.toordinal()
        if n not in self._days:
            if len(self._days) > 400:
                self._days.clear()
            self._days[n] = self._draw(day)
        return self._days[n]

    def _draw(self, day: date) -> tuple[Shower, ...]:
        rng = device_rng(self._seed, "rain:" + self.city_id, salt=day.toordinal())
        if rng.random() >= RAIN_DAY_P[day.month - 1]:
            return ()
        wet = day.month in RAINY_MONTHS
        midnight = datetime(day.year, day.month, day.day, tzinfo=LOCAL_TZ).timestamp()
        out = []
        for i in range(1 if rng.random() < 0.7 else 2):
            if rng.random() < 0.12:  # the odd night or morning shower
                onset_h = rng.uniform(0.0, 24.0)
            else:  # convection builds through the afternoon
                onset_h = min(22.5, max(11.0, rng.gauss(16.0, 2.0)))
            duration_min = min(240.0, max(15.0, rng.lognormvariate(math.log(50.0), 0.5)))
            median_peak = 17.0 if wet else 8.0
            peak = min(120.0, rng.lognormvariate(math.log(median_peak), 0.6))
            out.append(
                Shower(
                    day.toordinal() * 4 + i, midnight + onset_h * 3600.0, duration_min * 60, peak
                )
            )
        return tuple(out)

    def rate(self, t: datetime | float, cond: Conditions, gauge_key: int | None = None) -> float:
        """Intensity (mm/h) at ``t``: the city average, or as seen by one gauge (``gauge_key``)."""
        ts = t if isinstance(t, float) else epoch_s(t)
        day = datetime.fromtimestamp(ts, LOCAL_TZ).date()
        total = cond.rain_mm_h.get(self.city_id, 0.0)
        for d in (day - timedelta(days=1), day):  # a late shower may run past midnight
            for s in self.showers(d):
                if gauge_key is None:
                    total += s.rate(ts)
                else:
                    # A cell hits each gauge a little harder or softer, earlier or later.
                    scale = 0.9 + 0.6 * noise(gauge_key, s.ident, 11)
                    shift = 600.0 * noise(gauge_key, s.ident, 12)
                    total += scale * s.rate(ts - shift)
        return max(0.0, total)

    def amount(self, t0: float, t1: float, cond: Conditions, gauge_key: int | None = None) -> float:
        """Rain (mm) between epoch seconds ``t0`` and ``t1`` (midpoint rule, 1-minute steps)."""
        if t1 <= t0:
            return 0.0
        steps = max(1, math.ceil((t1 - t0) / _SUBSTEP_S))
        h = (t1 - t0) / steps
        return sum(self.rate(t0 + (i + 0.5) * h, cond, gauge_key) for i in range(steps)) * h / 3600


def logger_battery_v(key: int, t: datetime) -> float:
    """A solar-charged 12 V data-logger battery: ≈ 13.4 V charging at midday, ≈ 12.6 V at night."""
    ts = epoch_s(t)
    local_h = (ts / 3600.0 + 7.0) % 24.0
    sun = max(0.0, math.sin(math.pi * (local_h - 6.0) / 12.0))
    v = 12.65 + 0.75 * sun + 0.1 * noise(key, 0, 40) + 0.02 * noise(key, int(ts // 60), 41)
    return round(min(13.6, max(12.2, v)), 2)


class RainGaugeModel:
    """A tipping-bucket rain gauge in the city's shower field."""

    def __init__(self, device: Device, seed: int, field: CityRain) -> None:
        self.device = device
        self.interval_s = 300.0
        self.field = field
        self.resolution_mm = float(device.attributes.get("resolution_mm", 0.2))
        self._key = device_key(seed, device.id)
        self._last_t: float | None = None
        self._carry = 0.0  # rain in the bucket that has not tipped yet
        self._tips: deque[tuple[float, float]] = deque()  # (epoch s, mm) per step, last 24 h
        self._unreported = 0.0
        self._last_report: float | None = None

    def _advance(self, t: datetime, cond: Conditions) -> float:
        ts = epoch_s(t)
        if self._last_t is None:
            # Start as if the gauge had been logging for a day, so rain_24h_mm is right at once
            # (the scenario's conditions start now, not before).
            start = ts - 86_400.0
            for k in range(288):
                a, b = start + k * 300.0, start + (k + 1) * 300.0
                self._tip(b, self.field.amount(a, b, NORMAL, self._key))
            self._last_t = ts
            self._last_report = ts - self.interval_s
            self._unreported = sum(mm for at, mm in self._tips if at > self._last_report)
        elif ts > self._last_t:
            self._tip(ts, self.field.amount(self._last_t, ts, cond, self._key))
            self._last_t = ts
        while self._tips and self._tips[0][0] <= ts - 86_400.0:
            self._tips.popleft()
        return ts

    def _tip(self, ts: float, mm: float) -> None:
        self._carry += mm
        tipped = math.floor(self._carry / self.resolution_mm + 1e-9) * self.resolution_mm
        self._carry -= tipped
        if tipped > 0:
            self._tips.append((ts, tipped))
            self._unreported += tipped

    def online(self, t: datetime, cond: Conditions) -> bool:
        """Online unless the scenario silences it."""
        self._advance(t, cond)
        return self.device.id not in cond.silent_devices

    def telemetry(self, t: datetime, cond: Conditions) -> dict[str, float] | None:
        """Rain since the previous reading, its mean rate, the 24-hour total and the battery."""
        ts = self._advance(t, cond)
        if self.device.id in cond.silent_devices:
            return None  # the logger keeps counting; the next reading carries the rain
        assert self._last_report is not None
        elapsed = max(1.0, ts - self._last_report)
        rain_mm = round(self._unreported, 1)
        self._unreported, self._last_report = 0.0, ts
        return clip(
            "rain",
            {
                "rain_mm": rain_mm,
                "rain_rate_mm_h": round(rain_mm * 3600.0 / elapsed, 1),
                "rain_24h_mm": round(sum(mm for _, mm in self._tips), 1),
                "battery_v": logger_battery_v(self._key, t),
            },
        )

    def events(self, t: datetime, cond: Conditions) -> list[dict[str, object]]:
        """No spontaneous events (sensor faults are injected by the runner)."""
        self._advance(t, cond)
        return []
