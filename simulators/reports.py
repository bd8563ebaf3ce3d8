"""Citizen reports (phản ánh hiện trường): a Poisson process per city and category.

Each city files reports of each category at a base rate (per day, a few per category for towns of
60–80 thousand people), shaped by the hour of the day (people report while awake, most in the
morning and early evening) and multiplied by ``Conditions.report_boost["city/category"]``.
A report lands at a uniform point inside one of the city's wards (urban wards, phường, four times
as likely as rural communes, xã), with a short Vietnamese description from a template, on one of
the channels app / hotline / zalo.

Real problems draw reports: each dark lamp adds street-lighting reports near it, each flood
station above its alarm level adds flooding reports around it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

from ioc.devices import Device
from ioc.site import Site, Ward
from simulators.conditions import Conditions
from simulators.model import LOCAL_TZ, Problems, device_rng, epoch_s, poisson


@dataclass(frozen=True, slots=True)
class Category:
    """A report category: slug id, Vietnamese name, base rate per city per day, templates."""

    id: str
    name_vi: str
    per_day: float
    templates: tuple[str, ...]


CATEGORIES: tuple[Category, ...] = (
    Category(
        "chieu-sang",
        "Chiếu sáng công cộng",
        1.0,
        (
            "Đèn đường trên {road} không sáng, khu vực rất tối.",
            "Đèn chiếu sáng {road} chập chờn, lúc sáng lúc tắt.",
            "Đèn đường {road} sáng cả ban ngày, lãng phí điện.",
            "Cột đèn gần {place} bị nghiêng, bóng đèn hư.",
        ),
    ),
    Category(
        "ngap-nuoc",
        "Ngập nước",
        0.4,
        (
            "Đường {road} ngập sâu sau mưa, xe máy chết máy.",
            "Triều cường gây ngập khu dân cư {place}.",
            "Cống thoát nước {road} bị tắc, nước không rút.",
        ),
    ),
    Category(
        "giao-thong",
        "Giao thông",
        0.8,
        (
            "Kẹt xe kéo dài trên {road} giờ tan tầm.",
            "Đèn tín hiệu giao thông tại {road} không hoạt động.",
            "Có ổ gà lớn trên {road}, nguy hiểm cho xe máy.",
        ),
    ),
    Category(
        "rac-thai",
        "Rác thải, vệ sinh môi trường",
        1.5,
        (
            "Rác thải tồn đọng nhiều ngày tại {place}, bốc mùi hôi.",
            "Có người đổ rác xuống kênh gần {place}.",
            "Xe thu gom rác không đến {place} đã nhiều ngày.",
        ),
    ),
    Category(
        "trat-tu",
        "Trật tự đô thị",
        1.0,
        (
            "Lấn chiếm vỉa hè buôn bán trên {road}.",
            "Tiếng ồn karaoke kéo dài đến khuya tại {place}.",
            "Đậu xe trái phép gây cản trở giao thông trên {road}.",
        ),
    ),
    Category(
        "ha-tang",
        "Hạ tầng đô thị",
        0.8,
        (
            "Nắp cống bị vỡ trên {road}, nguy hiểm cho người đi đường.",
            "Vỉa hè {road} bị sụt lún.",
            "Cây xanh gãy đổ tại {place} chưa được thu dọn.",
        ),
    ),
    Category(
        "khac",
        "Khác",
        0.5,
        (
            "Đề nghị kiểm tra sự việc tại {place}.",
            "Phản ánh về thủ tục hành chính tại {place}.",
        ),
    ),
)
CATEGORIES_BY_ID = {c.id: c for c in CATEGORIES}
CHANNELS = ("app", "hotline", "zalo")
_CHANNEL_WEIGHTS = (0.55, 0.25, 0.20)
_URBAN_WARD_WEIGHT = 4.0  # phường vs xã: where the people and the streets are
# Extra reports per hour near a dark lamp and near a station above BĐ I.
DARK_LAMP_PER_H = 0.1
FLOODED_STATION_PER_H = 0.5
_NEAR_SD_M = 150.0

# Hour-of-day shape (local), mean 1 over the day: quiet at night, busy 7–11 h and 17–21 h.
_HOURLY = (0.1, 0.05, 0.05, 0.05, 0.1, 0.4, 1.0, 1.6, 1.8, 1.7, 1.6, 1.4,
           1.1, 1.2, 1.3, 1.3, 1.4, 1.6, 1.7, 1.6, 1.4, 1.0, 0.6, 0.3)  # fmt: skip
_HOURLY_MEAN = sum(_HOURLY) / 24.0


def hourly_factor(t: datetime) -> float:
    """Report-rate multiplier for the local hour of ``t`` (averages to 1 over a day)."""
    return _HOURLY[t.astimezone(LOCAL_TZ).hour] / _HOURLY_MEAN


class ReportModel:
    """Citizen reports for every city of the site; deterministic for (site, seed, calls)."""

    def __init__(self, site: Site, seed: int) -> None:
        self.site = site
        self._rng = device_rng(seed, "citizen-reports")
        self._serial = dict.fromkeys(CHANNELS, 0)
        self._wards = {c.id: c.wards for c in site.cities}
        self._ward_weights = {
            c.id: [_URBAN_WARD_WEIGHT if w.type == "phuong" else 1.0 for w in c.wards]
            for c in site.cities
        }
        roads: dict[str, list[str]] = {c.id: [] for c in site.cities}
        for d in site.devices:
            road = d.attributes.get("road")
            if isinstance(road, str) and road not in roads[d.city]:
                roads[d.city].append(road)
        self._roads = roads

    def rate_per_h(self, city: str, category: str, t: datetime, cond: Conditions) -> float:
        """Background reports per hour of one category in one city at ``t`` (before problems)."""
        boost = cond.report_boost.get(f"{city}/{category}", 1.0)
        return CATEGORIES_BY_ID[category].per_day / 24.0 * hourly_factor(t) * boost

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

    def _window(
        self, a: float, b: float, cond: Conditions, problems: Problems
    ) -> list[tuple[float, str, str, float, float, str]]:
        """Drafts (ts, city, category, lat, lon, text) for ``[a, b)`` inside one clock hour."""
        span_h = (b - a) / 3600.0
        mid = datetime.fromtimestamp((a + b) / 2.0, LOCAL_TZ)
        drafts = []
        for city in self.site.cities:
            for cat in CATEGORIES:
                n = poisson(self._rng, self.rate_per_h(city.id, cat.id, mid, cond) * span_h)
                for _ in range(n):
                    ward = self._pick_ward(city.id)
                    lat, lon = self._point_in(ward)
                    text = self._describe(cat, self._road(city.id), ward.name)
                    drafts.append((self._when(a, span_h), city.id, cat.id, lat, lon, text))
        drafts += self._near(problems.dark_lamps, "chieu-sang", DARK_LAMP_PER_H, a, span_h, cond)
        drafts += self._near(
            problems.flooded_stations, "ngap-nuoc", FLOODED_STATION_PER_H, a, span_h, cond
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

    def _road(self, city: str) -> str | None:
        roads = self._roads.get(city)
        return self._rng.choice(roads) if roads else None

    def _describe(
        self, category: Category, road: str | None, place: str, templates: int | None = None
    ) -> str:
        template = self._rng.choice(category.templates[:templates])
        return template.format(road=f"đường {road}" if road else "khu vực", place=place)

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
        cat = CATEGORIES_BY_ID[category]
        for d in sorted(devices, key=lambda x: x.id):
            boost = cond.report_boost.get(f"{d.city}/{category}", 1.0)
            n = poisson(self._rng, per_h * boost * span_h)
            for _ in range(n):
                lat = d.lat + self._rng.gauss(0.0, _NEAR_SD_M) / 111_320.0
                lon = d.lon + self._rng.gauss(0.0, _NEAR_SD_M) / (
                    111_320.0 * math.cos(math.radians(d.lat))
                )
                road = d.attributes.get("road")
                ward = self.site.wards_by_id.get(d.ward or "")
                place = ward.name if ward else d.name
                # Near a problem, say what the problem looks like (a dark street, not a day burner).
                text = self._describe(cat, road if isinstance(road, str) else None, place, 2)
                out.append((self._when(a, span_h), d.city, category, lat, lon, text))
        return out
