"""Citizen reports (phản ánh hiện trường): a Poisson process per city and category.

Volumes, category mix, bursts and wording are data (``ioc/simulators/reports.yaml``, with sources):
about 20 reports a month a city on an ordinary day (Báo Hậu Giang, Feb 2024, for Vị Thanh), split
over the categories, shaped by the hour of the day (people report while awake) and multiplied by
``Conditions.report_boost["city/category"]``. Bursts come from the scenario's conditions: rain and
drains backing up (water offset) bring flooding reports on a flood evening, and the rain of the
last hours brings fallen trees and dark streets after a storm. ``factor`` multiplies the
ordinary volume (the demo's amplification; 1 = real volumes).

A report lands at a uniform point inside one of the city's wards (urban wards, phường, four times
as likely as rural communes, xã), with a Vietnamese text naming a road of that ward and a spot
along it, on one of the channels app / hotline / zalo. Real problems draw reports: each dark
lamp adds street-lighting reports near it, each flood station above its alarm level adds
flooding reports around it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from ioc.core import yamlfile
from ioc.core.devices import Device
from ioc.core.site import Site, Ward
from ioc.core.wording import in_sentence
from ioc.simulators.conditions import Conditions
from ioc.simulators.model import LOCAL_TZ, Problems, device_rng, epoch_s, poisson

DATA_FILE = Path(__file__).with_name("reports.yaml")


@dataclass(frozen=True, slots=True)
class Category:
    """A report category: slug id, base rate per city per day, body templates."""

    id: str
    per_day: float
    templates: tuple[str, ...]
    near: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ReportData:
    """``ioc/simulators/reports.yaml``: volume, category mix, bursts and wording."""

    per_city_per_month: float
    demo_factor: float
    categories: tuple[Category, ...]
    flooding_per_rain_mm_h: float
    flooding_per_offset_m: float
    storm_memory_h: float
    after_storm_per_100mm: Mapping[str, float]
    dark_lamp_per_h: float
    flooded_station_per_h: float
    spots: tuple[str, ...]
    since: tuple[str, ...]
    closings: tuple[str, ...]
    closing_share: float


def load_report_data(path: Path = DATA_FILE) -> ReportData:
    raw = yamlfile.read(path)
    volume, bursts, texts = raw["volume"], raw["bursts"], raw["texts"]
    per_day = float(volume["per_city_per_month"]) * 12.0 / 365.0
    shares = {str(k): float(v) for k, v in raw["categories"].items()}
    total = sum(shares.values())
    categories = tuple(
        Category(
            cid,
            per_day * share / total,
            tuple(texts["bodies"][cid]),
            tuple(texts.get("near", {}).get(cid, ())),
        )
        for cid, share in shares.items()
    )
    return ReportData(
        per_city_per_month=float(volume["per_city_per_month"]),
        demo_factor=float(volume["demo_factor"]),
        categories=categories,
        flooding_per_rain_mm_h=float(bursts["flooding_per_h_per_rain_mm_h"]),
        flooding_per_offset_m=float(bursts["flooding_per_h_per_water_offset_m"]),
        storm_memory_h=float(bursts["storm_memory_h"]),
        after_storm_per_100mm={
            str(k): float(v) for k, v in bursts["after_storm_per_h_per_100mm"].items()
        },
        dark_lamp_per_h=float(bursts["dark_lamp_per_h"]),
        flooded_station_per_h=float(bursts["flooded_station_per_h"]),
        spots=tuple(texts["spots"]),
        since=tuple(texts["since"]),
        closings=tuple(texts["closings"]),
        closing_share=float(texts["closing_share"]),
    )


DATA = load_report_data()
CATEGORIES: tuple[Category, ...] = DATA.categories
CATEGORIES_BY_ID = {c.id: c for c in CATEGORIES}
DEMO_FACTOR = DATA.demo_factor
CHANNELS = ("app", "hotline", "zalo")
_CHANNEL_WEIGHTS = (0.55, 0.25, 0.20)
_URBAN_WARD_WEIGHT = 4.0  # phường vs xã: where the people and the streets are
_NEAR_SD_M = 150.0
# Road names that already say what they are: "Quốc lộ 1A", not "đường Quốc lộ 1A".
_ROAD_WORDS = ("Quốc lộ", "Tỉnh lộ", "Đường", "Hương lộ", "Đại lộ")

# Hour-of-day shape (local), mean 1 over the day: quiet at night, busy 7–11 h and 17–21 h.
_HOURLY = (0.1, 0.05, 0.05, 0.05, 0.1, 0.4, 1.0, 1.6, 1.8, 1.7, 1.6, 1.4,
           1.1, 1.2, 1.3, 1.3, 1.4, 1.6, 1.7, 1.6, 1.4, 1.0, 0.6, 0.3)  # fmt: skip
_HOURLY_MEAN = sum(_HOURLY) / 24.0


def hourly_factor(t: datetime) -> float:
    """Report-rate multiplier for the local hour of ``t`` (averages to 1 over a day)."""
    return _HOURLY[t.astimezone(LOCAL_TZ).hour] / _HOURLY_MEAN


def road_phrase(road: str) -> str:
    """A road as written in a sentence: ``đường Trần Hưng Đạo``, ``Quốc lộ 1A``."""
    return road if road.startswith(_ROAD_WORDS) else f"đường {road}"


class ReportModel:
    """Citizen reports for every city of the site; deterministic for (site, seed, calls).

    ``factor`` multiplies the ordinary volume (not the bursts nor the reports near problems,
    which already come within minutes of their cause): 1 is the real volume
    (``ioc/simulators/reports.yaml``), ``DEMO_FACTOR`` what ``ioc demo`` uses to show reports
    within minutes.
    """

    def __init__(self, site: Site, seed: int, factor: float = 1.0, data: ReportData = DATA) -> None:
        if factor < 0:
            raise ValueError(f"report factor must be >= 0, not {factor}")
        self.site = site
        self.factor = factor
        self.data = data
        self._categories = {c.id: c for c in data.categories}
        self._rng = device_rng(seed, "citizen-reports")
        self._serial = dict.fromkeys(CHANNELS, 0)
        self._wards = {c.id: c.wards for c in site.cities}
        self._ward_weights = {
            c.id: [_URBAN_WARD_WEIGHT if w.type == "phuong" else 1.0 for w in c.wards]
            for c in site.cities
        }
        # Roads by city and by ward (a report names a road of the ward it is in when it can).
        roads: dict[str, list[str]] = {c.id: [] for c in site.cities}
        by_ward: dict[str, list[str]] = {}
        for d in site.devices:
            road = d.attributes.get("road")
            if not isinstance(road, str):
                continue
            if road not in roads[d.city]:
                roads[d.city].append(road)
            # by where the device stands, not its ward label: a label may be a former ward's id
            # (an alias since the 2025 merger) while reports land in the current units
            ward = next((w for w in self._wards[d.city] if w.contains(d.lat, d.lon)), None)
            if ward is not None and road not in by_ward.setdefault(ward.id, []):
                by_ward[ward.id].append(road)
        self._roads = roads
        self._roads_by_ward = by_ward
        # Rain of the last hours per city (mm, emptying with storm_memory_h): storms' aftermath.
        self._storm_mm: dict[str, float] = {c.id: 0.0 for c in site.cities}
        self._storm_t: float | None = None

    def rate_per_h(self, city: str, category: str, t: datetime, cond: Conditions) -> float:
        """Reports per hour of one category in one city at ``t`` (before problems): the ordinary
        volume shaped by the hour of day, plus flood-evening and after-storm bursts."""
        boost = cond.report_boost.get(f"{city}/{category}", 1.0)
        hour = hourly_factor(t)
        # the demo's factor amplifies the ordinary trickle only: bursts already come within
        # minutes of their cause, and thirty times a flood evening's would bury the wall
        rate = self._categories[category].per_day / 24.0 * hour * self.factor
        d = self.data
        if category == "ngap-nuoc":
            # water in the streets is reported at any hour while it is there
            rain = cond.rain_mm_h.get(city, 0.0)
            offset = max(0.0, cond.water_offset_m.get(city, 0.0))
            rate += d.flooding_per_rain_mm_h * rain + d.flooding_per_offset_m * offset
        per_100 = d.after_storm_per_100mm.get(category)
        if per_100:
            rate += per_100 * self._storm_mm.get(city, 0.0) / 100.0 * hour
        return rate * boost

    def reports(
        self, t0: datetime, t1: datetime, cond: Conditions, problems: Problems
    ) -> list[tuple[str, str, dict[str, object]]]:
        """Reports filed in ``[t0, t1)`` as (city, channel, payload), in time order."""
        drafts: list[tuple[float, str, str, float, float, str]] = []
        # Whole windows are cut at the hour so the hour-of-day shape holds for long windows too.
        a = epoch_s(t0)
        end = epoch_s(t1)
        while a < end:
            b = min(end, (math.floor(a / 3600.0) + 1) * 3600.0)
            self._remember_rain(a, b, cond)
            drafts += self._window(a, b, cond, problems)
            a = b
        drafts.sort(key=lambda d: d[0])
        out = []
        for ts, city_id, category, lat, lon, text in drafts:
            channel = self._rng.choices(CHANNELS, weights=_CHANNEL_WEIGHTS)[0]
            self._serial[channel] += 1
            payload: dict[str, object] = {
                # the report's time in the id: a second demo run on the same database files new
                # reports (a bare serial restarts and the IOC would drop them as duplicates),
                # while replaying one window repeats its ids, as a real channel re-sending would
                "id": f"{channel}-{int(ts)}-{self._serial[channel]:06d}",
                "ts": datetime.fromtimestamp(ts, LOCAL_TZ).isoformat(timespec="seconds"),
                "category": category,
                "lat": round(lat, 6),
                "lon": round(lon, 6),
                "description": text,
                "media_url": None,
            }
            out.append((city_id, channel, payload))
        return out

    # ----------------------------------------------------------------------------- parts

    def _remember_rain(self, a: float, b: float, cond: Conditions) -> None:
        """Empty the storm stores since the last call and add this window's scenario rain."""
        tau_s = self.data.storm_memory_h * 3600.0
        if self._storm_t is not None and a > self._storm_t:
            keep = math.exp(-(a - self._storm_t) / tau_s)
            for city in self._storm_mm:
                self._storm_mm[city] *= keep
        span_h = (b - a) / 3600.0
        for city in self._storm_mm:
            self._storm_mm[city] += max(0.0, cond.rain_mm_h.get(city, 0.0)) * span_h
        self._storm_t = b

    def _window(
        self, a: float, b: float, cond: Conditions, problems: Problems
    ) -> list[tuple[float, str, str, float, float, str]]:
        """Drafts (ts, city, category, lat, lon, text) for ``[a, b)`` inside one clock hour."""
        span_h = (b - a) / 3600.0
        mid = datetime.fromtimestamp((a + b) / 2.0, LOCAL_TZ)
        drafts = []
        for city in self.site.cities:
            for cat in self.data.categories:
                n = poisson(self._rng, self.rate_per_h(city.id, cat.id, mid, cond) * span_h)
                for _ in range(n):
                    ward = self._pick_ward(city.id)
                    lat, lon = self._point_in(ward)
                    road = self._road(city.id, ward.id)
                    text = self._describe(cat.templates, road, ward.name)
                    drafts.append((self._when(a, span_h), city.id, cat.id, lat, lon, text))
        d = self.data
        drafts += self._near(problems.dark_lamps, "chieu-sang", d.dark_lamp_per_h, a, span_h, cond)
        drafts += self._near(
            problems.flooded_stations, "ngap-nuoc", d.flooded_station_per_h, a, span_h, cond
        )
        return drafts

    def _when(self, a: float, span_h: float) -> float:
        return a + self._rng.random() * span_h * 3600.0

    def _pick_ward(self, city: str) -> Ward:
        return self._rng.choices(self._wards[city], weights=self._ward_weights[city])[0]

    def _point_in(self, ward: Ward) -> tuple[float, float]:
        """A uniform point inside the ward outline (rejection sampling in its bounding box)."""
        lon0, lat0, lon1, lat1 = ward.bbox
        for _ in range(1000):
            lat, lon = self._rng.uniform(lat0, lat1), self._rng.uniform(lon0, lon1)
            if ward.contains(lat, lon):
                return lat, lon
        return (lat0 + lat1) / 2, (lon0 + lon1) / 2  # a degenerate outline

    def _ward_of(self, d: Device) -> Ward | None:
        """The device's ward (an alias resolves as the site resolves it), else the one it is in."""
        try:
            return self.site.ward(d.ward) if d.ward else None
        except KeyError:
            return next((w for w in self._wards[d.city] if w.contains(d.lat, d.lon)), None)

    def _road(self, city: str, ward: str | None = None) -> str | None:
        roads = self._roads_by_ward.get(ward or "") or self._roads.get(city)
        return self._rng.choice(roads) if roads else None

    def _describe(self, templates: tuple[str, ...], road: str | None, ward_name: str) -> str:
        """A report text: a body naming the road (or the ward), a spot along it, how long it has
        lasted, and now and then a closing sentence, as citizens write them."""
        d, rng = self.data, self._rng
        ward = in_sentence(ward_name)
        spot = rng.choice(d.spots).format(n=rng.randint(2, 480), h=rng.randint(1, 40))
        text = rng.choice(templates).format(
            road=road_phrase(road) if road else f"khu vực {ward}",
            spot=spot,
            ward=ward,
            since=rng.choice(d.since),
        )
        if rng.random() < d.closing_share:
            text = f"{text} {rng.choice(d.closings)}"
        return text

    def _near(
        self,
        devices: tuple[Device, ...],
        category: str,
        per_h: float,
        a: float,
        span_h: float,
        cond: Conditions,
    ) -> list[tuple[float, str, str, float, float, str]]:
        """Reports of ``category`` scattered (~150 m) around each problem device."""
        out = []
        cat = self._categories[category]
        for d in sorted(devices, key=lambda x: x.id):
            boost = cond.report_boost.get(f"{d.city}/{category}", 1.0)
            n = poisson(self._rng, per_h * boost * span_h)
            for _ in range(n):
                lat = d.lat + self._rng.gauss(0.0, _NEAR_SD_M) / 111_320.0
                lon = d.lon + self._rng.gauss(0.0, _NEAR_SD_M) / (
                    111_320.0 * math.cos(math.radians(d.lat))
                )
                road = d.attributes.get("road")
                ward = self._ward_of(d)
                if not isinstance(road, str):
                    road = self._road(d.city, ward.id if ward else None)
                # Near a problem, say what the problem looks like (a dark street, not a day burner).
                place = ward.name if ward else self.site.city(d.city).name
                text = self._describe(cat.near or cat.templates, road, place)
                out.append((self._when(a, span_h), d.city, category, lat, lon, text))
        return out
