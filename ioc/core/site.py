"""Site data: cities, wards, agencies, flood alarm levels and field devices, from one YAML file.

The packaged site (``ioc/site_data/hau-giang.yaml``) describes Vị Thanh and Ngã Bảy; ``IOC_SITE``
points at another file. Names, agencies and thresholds are data, never code: this module only
reads, validates and indexes them. The file format is documented in ``docs/site-data.md``.

Every problem is reported as a :class:`SiteError` naming the file and the offending entry, e.g.
``hau-giang.yaml: devices[12].kind: 'lamp' is not one of ['cabinet', ...] (device 'vt-x-1')``.

Geometry is plain (lon, lat) degrees: ward outlines are closed rings ``[[lon, lat], ...]`` as in
GeoJSON, and :meth:`Site.ward_of` is a ray-casting point-in-polygon test, which is exact enough for
ward-sized polygons a few kilometres across.

Wards are the current commune-level units (since 1 July 2025). A unit may list the ``former``
wards and communes it absorbed, each with its own outline; the unit's outline is then their union
(:func:`union_outline`), and every former id is an alias: :meth:`Site.ward` resolves it, devices
filed under it load under the current unit, and API filters accept it. Agencies likewise keep their
former ids as ``aliases`` (:meth:`Site.agency`).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, NoReturn
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ioc.core import yamlfile
from ioc.core.devices import Device, DeviceError
from ioc.core.yamlfile import DataFileError

FORMAT_VERSION: Final = 1
LEVELS: Final = ("bd1", "bd2", "bd3")  # báo động I < II < III (QĐ 05/2020/QĐ-TTg)
TRAFFIC_ROLES: Final = frozenset({"detector", "camera"})
# The bodies every commune-level unit has; routing addresses them as ward-{role}.
WARD_ROLES: Final = frozenset({"committee", "police", "civil-defence"})
SLUG: Final = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")

Ring = tuple[tuple[float, float], ...]


class OutlineError(ValueError):
    """Outlines whose union is not one simple ring (disjoint parts, a hole, or borders that do
    not share their vertices exactly)."""


def union_outline(rings: list[Ring] | tuple[Ring, ...]) -> Ring:
    """The outline of the union of adjacent polygons that share vertices exactly along their
    common borders: every edge two rings share is walked once each way, so it cancels, and the
    remaining edges chain into the outer ring. Pure, and exact for such hand-drawn partitions;
    raises :class:`OutlineError` when the rest is not one ring (disjoint parts, a hole, a border
    drawn with different vertices on each side: the area check in the tests catches those)."""
    edges: dict[tuple[float, float], list[tuple[float, float]]] = {}
    directed: set[tuple[tuple[float, float], tuple[float, float]]] = set()
    for ring in rings:
        points = list(ring[:-1]) if ring[0] == ring[-1] else list(ring)
        if _signed_area(points) < 0:  # walk every ring counter-clockwise
            points.reverse()
        for a, b in zip(points, points[1:] + points[:1], strict=True):
            if (b, a) in directed:
                directed.discard((b, a))  # a shared border: inside the union
            else:
                directed.add((a, b))
    for a, b in directed:
        edges.setdefault(a, []).append(b)
    if any(len(nexts) > 1 for nexts in edges.values()):
        raise OutlineError("the outlines touch at a single point; the union is not a simple ring")
    if not edges:
        raise OutlineError("no outline to join")
    start = min(edges)
    out = [start]
    point = start
    for _ in range(len(directed)):
        point = edges[point][0]
        out.append(point)
        if point == start:
            break
    if len(out) - 1 != len(directed):
        raise OutlineError(
            f"the union is {len(directed) - len(out) + 1} edge(s) more than one ring "
            "(disjoint parts, a hole, or a border whose vertices differ on each side)"
        )
    return tuple(out)


def _signed_area(points: list[tuple[float, float]]) -> float:
    n = len(points)
    return (
        sum(
            points[i][0] * points[(i + 1) % n][1] - points[(i + 1) % n][0] * points[i][1]
            for i in range(n)
        )
        / 2
    )


class SiteError(DataFileError):
    """A site file that cannot be used; ``where`` names the entry (``devices[12].kind``)."""


# --------------------------------------------------------------------------------- records


@dataclass(frozen=True, slots=True)
class FormerWard:
    """A ward or commune abolished by a merger, kept so that its id and name still resolve and
    positions recorded against its outline can be checked."""

    id: str
    name: str
    type: str | None
    outline: Ring

    def contains(self, lat: float, lon: float) -> bool:
        return _in_ring(self.outline, lon, lat)


@dataclass(frozen=True, slots=True)
class Ward:
    """A current commune-level unit (phường or xã) with its outline as a closed (lon, lat) ring,
    its official code, and the former units it absorbed (whose ids are its aliases)."""

    id: str
    city: str
    name: str
    type: str | None
    outline: Ring
    approximate: bool
    code: str | None = None
    source: str | None = None
    former: tuple[FormerWard, ...] = ()
    bbox: tuple[float, float, float, float] = field(init=False, repr=False, compare=False)

    @property
    def aliases(self) -> tuple[str, ...]:
        """Former ids that resolve to this unit (its own id excluded when a former unit had it)."""
        return tuple(f.id for f in self.former if f.id != self.id)

    @property
    def ids(self) -> tuple[str, ...]:
        """Its id and its aliases: what stored rows may carry for this unit."""
        return (self.id, *self.aliases)

    def __post_init__(self) -> None:
        lons = [p[0] for p in self.outline]
        lats = [p[1] for p in self.outline]
        object.__setattr__(self, "bbox", (min(lons), min(lats), max(lons), max(lats)))

    def contains(self, lat: float, lon: float) -> bool:
        """Whether the point is inside the outline (a point on an edge may go either way)."""
        lon0, lat0, lon1, lat1 = self.bbox
        if not (lon0 <= lon <= lon1 and lat0 <= lat <= lat1):
            return False
        return _in_ring(self.outline, lon, lat)


@dataclass(frozen=True, slots=True)
class CapSender:
    """Who signs the public warnings: CAP 1.2 ``<sender>`` (``address``), ``<senderName>``
    (``name_vi``/``name_en``), ``<web>`` and ``<contact>`` (ioc/cap/message.py). Site data, not
    code: the province named in the old constants was abolished on 1 July 2025, and the official
    name and address are the operator's to set (``to_verify`` until they have)."""

    address: str
    name_vi: str
    name_en: str
    source: str
    to_verify: bool
    web: str | None = None
    contact: str | None = None
    note: str | None = None


# CAP 1.2 §3.3.2: an identifier or sender holds no spaces, commas, '<' or '&'
_CAP_TOKEN_FORBIDDEN: Final = re.compile(r"[\s,<&]")


@dataclass(frozen=True, slots=True)
class City:
    id: str
    name: str
    lat: float
    lon: float
    wards: tuple[Ward, ...]
    note: str | None = None

    def ward(self, ward_id: str) -> Ward:
        for w in self.wards:
            if w.id == ward_id:
                return w
        raise KeyError(f"{ward_id!r} is not a ward of {self.id}")


@dataclass(frozen=True, slots=True)
class Agency:
    """An organisation that receives dispatched work for the ``domains`` it answers for."""

    id: str
    name_vi: str
    name_en: str
    domains: tuple[str, ...]
    contact: Mapping[str, str | None] = field(default_factory=lambda: MappingProxyType({}))
    city: str | None = None
    ward: str | None = None
    note: str | None = None
    role: str | None = None  # committee, police or civil-defence: one of a ward's own bodies
    aliases: tuple[str, ...] = ()  # former ids (stored incidents, agency:{id} tokens)
    source: str | None = None

    @property
    def ids(self) -> tuple[str, ...]:
        return (self.id, *self.aliases)


@dataclass(frozen=True, slots=True)
class AlarmLevels:
    """Flood alarm levels BĐ I < II < III of one hydrological station, metres, with provenance.

    ``illustrative`` names the levels that are placeholders rather than sourced values.
    """

    station: str
    bd1: float
    bd2: float
    bd3: float
    source: str
    effective_from: date
    illustrative: frozenset[str] = frozenset()
    name: str | None = None
    river: str | None = None
    datum: str | None = None
    legal_basis: str | None = None
    note: str | None = None

    def as_attributes(self) -> dict[str, float]:
        """The levels as device attributes: ``{"bd1": …, "bd2": …, "bd3": …}``."""
        return {"bd1": self.bd1, "bd2": self.bd2, "bd3": self.bd3}

    def level_reached(self, water_level_m: float) -> int:
        """0 below BĐ I, else the highest alarm level (1, 2 or 3) the water level reaches."""
        return sum(1 for threshold in (self.bd1, self.bd2, self.bd3) if water_level_m >= threshold)


@dataclass(frozen=True, slots=True)
class Site:
    name: str
    timezone: str
    cities: tuple[City, ...]
    agencies: tuple[Agency, ...]
    alarm_levels: Mapping[str, AlarmLevels]
    devices: tuple[Device, ...]
    note: str | None = None
    path: Path | None = None
    admin_parent: str | None = None  # "thành phố Cần Thơ": the province-level unit, for place text
    admin_parent_en: str | None = None  # "Cần Thơ City"
    # The tide data file beside the site file (harmonic constituents per station;
    # ioc/core/tides.py).
    tides_file: Path | None = None
    # who signs the public CAP warnings (the file's `cap_sender`, required there)
    cap_sender: CapSender | None = None
    cities_by_id: Mapping[str, City] = field(init=False, repr=False, compare=False)
    wards_by_id: Mapping[str, Ward] = field(init=False, repr=False, compare=False)
    # former ward ids → current unit, former agency ids → current agency
    ward_aliases: Mapping[str, Ward] = field(init=False, repr=False, compare=False)
    agencies_by_id: Mapping[str, Agency] = field(init=False, repr=False, compare=False)
    agency_aliases: Mapping[str, Agency] = field(init=False, repr=False, compare=False)
    devices_by_id: Mapping[str, Device] = field(init=False, repr=False, compare=False)
    _lamps_by_cabinet: Mapping[str, tuple[Device, ...]] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        setattr_ = object.__setattr__
        setattr_(self, "cities_by_id", MappingProxyType({c.id: c for c in self.cities}))
        setattr_(
            self, "wards_by_id", MappingProxyType({w.id: w for c in self.cities for w in c.wards})
        )
        setattr_(
            self,
            "ward_aliases",
            MappingProxyType(
                {f.id: w for c in self.cities for w in c.wards for f in w.former if f.id != w.id}
            ),
        )
        setattr_(self, "agencies_by_id", MappingProxyType({a.id: a for a in self.agencies}))
        setattr_(
            self,
            "agency_aliases",
            MappingProxyType({alias: a for a in self.agencies for alias in a.aliases}),
        )
        setattr_(self, "devices_by_id", MappingProxyType({d.id: d for d in self.devices}))
        # Indexed once: simulators ask for every cabinet's lamps, and a scan per cabinet is
        # quadratic at 10,000 devices.
        by_cabinet: dict[str, list[Device]] = {}
        for d in self.devices:
            if d.kind == "lighting" and isinstance(d.attributes.get("cabinet"), str):
                by_cabinet.setdefault(d.attributes["cabinet"], []).append(d)
        setattr_(
            self,
            "_lamps_by_cabinet",
            MappingProxyType({k: tuple(v) for k, v in by_cabinet.items()}),
        )

    def device(self, device_id: str) -> Device:
        """The device with this id; ``KeyError`` when the site has none."""
        try:
            return self.devices_by_id[device_id]
        except KeyError:
            raise KeyError(f"no device {device_id!r} in the site") from None

    def check_device(self, raw: Mapping[str, Any]) -> Device:
        """A device record from the API, an import file or a PATCH, checked exactly as the site
        file's own devices are (one validation path): field types, id, kind, position, city,
        ward (a former ward id is stored as the unit that absorbed it), a flood gauge's BĐ
        levels (copied from its ``station``), lamp and traffic attributes. Raises
        :class:`DeviceError` naming the field (``ward``, ``attributes.bd2``). References to
        other devices (a lamp's cabinet) are the caller's to check, against the registry."""
        try:
            return _Loader(self.path or Path("site")).device(
                dict(raw), "device", self.cities_by_id, self.alarm_levels
            )
        except SiteError as exc:
            field = exc.where.removeprefix("device").removeprefix(".") or "device"
            raise DeviceError(field, exc.message) from None

    def city(self, city_id: str) -> City:
        try:
            return self.cities_by_id[city_id]
        except KeyError:
            raise KeyError(f"{city_id!r} is not one of {sorted(self.cities_by_id)}") from None

    def ward(self, ward_id: str) -> Ward:
        """The current unit with this id or former id; ``KeyError`` when neither."""
        found = self.wards_by_id.get(ward_id) or self.ward_aliases.get(ward_id)
        if found is None:
            raise KeyError(f"no ward {ward_id!r} in the site")
        return found

    def find_ward(self, ward_id: str | None) -> Ward | None:
        """Like :meth:`ward`, None for an unknown or missing id."""
        if not ward_id:
            return None
        return self.wards_by_id.get(ward_id) or self.ward_aliases.get(ward_id)

    def current_ward_id(self, ward_id: str | None) -> str | None:
        """The current unit's id for a current or former id; an unknown id is returned as is
        (stored rows may name wards of another site file)."""
        found = self.find_ward(ward_id)
        return found.id if found is not None else ward_id

    def ward_ids(self, ward_id: str) -> tuple[str, ...]:
        """Every id rows may be stored under for the unit ``ward_id`` names (current id first,
        then its former ids): what a ``ward=`` filter matches. Unknown: just ``(ward_id,)``."""
        found = self.find_ward(ward_id)
        return found.ids if found is not None else (ward_id,)

    def ward_named(self, text: str) -> Ward | None:
        """The unit a free-text place names ("Phường Vị Tân", "phường 5", "xã Tân Tiến, Vị
        Thanh"), by current or former names as whole words; the longest name found wins (so
        "Phường VII" is not "Phường V"), compared case-insensitively in Unicode NFC (phones
        send decomposed diacritics). None when the text names no unit."""
        hay = _fold(text)
        best: tuple[int, Ward] | None = None
        for city in self.cities:
            for ward in city.wards:
                forms = [ward.name, *(n for f in ward.former for n in _name_forms(f.name))]
                for form in forms:
                    key = _fold(form)
                    found = re.search(rf"(?<!\w){re.escape(key)}(?!\w)", hay)
                    if found and (best is None or len(key) > best[0]):
                        best = (len(key), ward)
        return best[1] if best else None

    def place_name(self, ward_id: str | None, city_id: str | None = None, lang: str = "vi") -> str:
        """Human-facing place text, names never ids: "phường Vị Tân, thành phố Cần Thơ" (``vi``)
        or "Vị Tân Ward, Cần Thơ City" (``en``); a former ward id names the unit that absorbed
        it. Without a ward, the pilot area: "khu vực Vị Thanh, thành phố Cần Thơ" (the city ids
        name areas since the 2025 merger, not cities). The province-level unit is the site's
        ``admin_parent``. Empty when nothing is known."""
        ward = self.find_ward(ward_id)
        en = lang.lower().startswith("en")
        parts: list[str] = []
        if ward is not None:
            parts.append(_unit_name_en(ward) if en else _lower_first(ward.name))
        elif city_id is not None and city_id in self.cities_by_id:
            area = self.cities_by_id[city_id].name
            parts.append(f"{area} area" if en else f"khu vực {area}")
        parent = self.admin_parent_en if en else self.admin_parent
        if parts and parent:
            parts.append(parent)
        return ", ".join(parts)

    def agency(self, agency_id: str) -> Agency:
        """The agency with this id or former id; ``KeyError`` when neither."""
        found = self.agencies_by_id.get(agency_id) or self.agency_aliases.get(agency_id)
        if found is None:
            raise KeyError(f"no agency {agency_id!r} in the site")
        return found

    def find_agency(self, agency_id: str | None) -> Agency | None:
        if not agency_id:
            return None
        return self.agencies_by_id.get(agency_id) or self.agency_aliases.get(agency_id)

    def current_agency_id(self, agency_id: str | None) -> str | None:
        """The current id for a current or former agency id; unknown ids as they are."""
        found = self.find_agency(agency_id)
        return found.id if found is not None else agency_id

    def agency_ids(self, agency_id: str) -> tuple[str, ...]:
        """Every id incidents may be stored under for this agency (current first)."""
        found = self.find_agency(agency_id)
        return found.ids if found is not None else (agency_id,)

    def ward_agency(self, role: str, ward_id: str | None) -> Agency | None:
        """The ward's own body with this ``role`` (committee, police, civil-defence), if any."""
        ward = self.find_ward(ward_id)
        if ward is None:
            return None
        return next((a for a in self.agencies if a.role == role and a.ward == ward.id), None)

    def ward_of(self, lat: float, lon: float) -> Ward | None:
        """The ward whose outline contains the point (the first in file order), or None."""
        for city in self.cities:
            for ward in city.wards:
                if ward.contains(lat, lon):
                    return ward
        return None

    def devices_of(
        self, kind: str | None = None, city: str | None = None, ward: str | None = None
    ) -> tuple[Device, ...]:
        """The devices matching every filter given, in file order."""
        return tuple(
            d
            for d in self.devices
            if (kind is None or d.kind == kind)
            and (city is None or d.city == city)
            and (ward is None or d.ward == self.current_ward_id(ward))
        )

    def lamps_on(self, cabinet_id: str) -> tuple[Device, ...]:
        """The street lamps fed by a cabinet (``attributes.cabinet``), in file order."""
        return self._lamps_by_cabinet.get(cabinet_id, ())


def _fold(text: str) -> str:
    return " ".join(unicodedata.normalize("NFC", text).casefold().split())


def _lower_first(name: str) -> str:
    """ "Phường Vị Tân" → "phường Vị Tân" (the unit type is a common noun inside a sentence)."""
    head, _, rest = name.partition(" ")
    return f"{head.lower()} {rest}" if rest and head in _UNIT_TYPES else name


_UNIT_TYPES: Final = frozenset({"Phường", "Xã", "Thị", "Đặc"})
_TYPE_EN: Final = {"phuong": "Ward", "xa": "Commune"}


def _unit_name_en(ward: Ward) -> str:
    """ "Phường Vị Tân" → "Vị Tân Ward" (the English form of the official names)."""
    head, _, rest = ward.name.partition(" ")
    kind = _TYPE_EN.get(ward.type or "")
    return f"{rest} {kind}" if kind and rest and head in _UNIT_TYPES else ward.name


# Roman numerals of the former numbered wards, so "Phường 5" and "P.5" find "Phường V".
_ROMAN: Final = {"I": "1", "II": "2", "III": "3", "IV": "4", "V": "5", "VI": "6", "VII": "7"}


def _name_forms(name: str) -> tuple[str, ...]:
    """The ways a former unit's name is written: "Phường V", "Phường 5"."""
    head, _, rest = name.partition(" ")
    if rest in _ROMAN:
        return (name, f"{head} {_ROMAN[rest]}")
    return (name,)


def _in_ring(ring: Ring, lon: float, lat: float) -> bool:
    inside = False
    j = len(ring) - 1
    for i in range(len(ring)):
        xi, yi = ring[i]
        xj, yj = ring[j]
        if (yi > lat) != (yj > lat) and lon < xi + (lat - yi) * (xj - xi) / (yj - yi):
            inside = not inside
        j = i
    return inside


# --------------------------------------------------------------------------------- loading


def load_site(path: Path | str) -> Site:
    """Read and validate a site file; raise :class:`SiteError` naming the first bad entry."""
    path = Path(path)
    return _Loader(path).site(yamlfile.read(path, SiteError))


def _at(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _describe(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


class _Loader:
    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, where: str, message: str) -> NoReturn:
        raise SiteError(self.path, where, message)

    # ---------------------------------------------------------------- typed field readers

    def mapping(
        self, value: Any, where: str, required: tuple[str, ...], optional: tuple[str, ...] = ()
    ) -> dict[str, Any]:
        if not isinstance(value, dict):
            self.fail(where, f"expected a mapping, got {_describe(value)}")
        allowed = (*required, *optional)
        for key in value:
            if not isinstance(key, str):
                self.fail(where, f"keys must be strings, got {_describe(key)}")
            if key not in allowed:
                self.fail(_at(where, key), f"unknown field (expected one of {list(allowed)})")
        for key in required:
            if key not in value:
                self.fail(_at(where, key), "is required")
        return value

    def text(self, d: dict[str, Any], key: str, where: str) -> str:
        value = d.get(key)
        if not isinstance(value, str) or not value.strip():
            self.fail(f"{where}.{key}", f"expected a non-empty string, got {_describe(value)}")
        return value.strip()

    def opt_text(self, d: dict[str, Any], key: str, where: str) -> str | None:
        return None if d.get(key) is None else self.text(d, key, where)

    def slug(self, d: dict[str, Any], key: str, where: str) -> str:
        value = d.get(key)
        if not isinstance(value, str) or not SLUG.match(value):
            self.fail(
                f"{where}.{key}",
                f"{value!r} must be a lower-case ASCII slug (letters, digits, single '-')",
            )
        return value

    def number(self, value: Any, where: str) -> float:
        is_number = isinstance(value, int | float) and not isinstance(value, bool)
        if not is_number or not math.isfinite(value):
            self.fail(where, f"expected a number, got {_describe(value)}")
        return float(value)

    def boolean(self, d: dict[str, Any], key: str, where: str, default: bool) -> bool:
        value = d.get(key, default)
        if not isinstance(value, bool):
            self.fail(f"{where}.{key}", f"expected true or false, got {_describe(value)}")
        return value

    def day(self, d: dict[str, Any], key: str, where: str) -> date:
        value = d.get(key)
        if isinstance(value, datetime):
            return value.date()
        if isinstance(value, date):
            return value
        if isinstance(value, str):
            try:
                return date.fromisoformat(value)
            except ValueError:
                pass
        self.fail(f"{where}.{key}", f"expected a date YYYY-MM-DD, got {_describe(value)}")

    def seq(self, d: dict[str, Any], key: str, where: str, *, empty_ok: bool = False) -> list[Any]:
        value = d.get(key)
        if value is None and empty_ok:
            return []
        if not isinstance(value, list) or (not value and not empty_ok):
            self.fail(_at(where, key), f"expected a non-empty list, got {_describe(value)}")
        return value

    # --------------------------------------------------------------------------- sections

    def site(self, raw: Any) -> Site:
        top = self.mapping(
            raw,
            "",
            ("site", "cities", "devices"),
            ("version", "agencies", "alarm_levels", "tides", "cap_sender"),
        )
        version = top.get("version", FORMAT_VERSION)
        if version != FORMAT_VERSION or isinstance(version, bool):
            self.fail("version", f"{version!r} is not supported (this IOC reads {FORMAT_VERSION})")
        head = self.mapping(
            top["site"], "site", ("name", "timezone"), ("note", "admin_parent", "admin_parent_en")
        )
        name = self.text(head, "name", "site")
        timezone = self.text(head, "timezone", "site")
        try:
            ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            self.fail("site.timezone", f"{timezone!r} is not a known IANA time zone")
        cities = self.cities(top)
        wards = {w.id: w for c in cities for w in c.wards}
        # former ids resolve to the unit that absorbed them (agencies and devices may use them)
        wards |= {f.id: w for c in cities for w in c.wards for f in w.former}
        agencies = self.agencies(top, {c.id for c in cities}, wards)
        levels = self.alarm_levels(top)
        devices = self.devices(top, cities, levels)
        tides = top.get("tides")
        if tides is not None and (not isinstance(tides, str) or not tides.strip()):
            self.fail("tides", f"expected the name of a tides data file, got {_describe(tides)}")
        return Site(
            name=name,
            timezone=timezone,
            note=self.opt_text(head, "note", "site"),
            cities=cities,
            agencies=agencies,
            alarm_levels=MappingProxyType(levels),
            devices=devices,
            path=self.path,
            admin_parent=self.opt_text(head, "admin_parent", "site"),
            admin_parent_en=self.opt_text(head, "admin_parent_en", "site"),
            tides_file=self.path.parent / tides.strip() if tides else None,
            cap_sender=self.cap_sender(top),
        )

    def cap_sender(self, top: dict[str, Any]) -> CapSender:
        if top.get("cap_sender") is None:
            self.fail(
                "cap_sender",
                "is required: who signs the public CAP warnings (address, name_vi, name_en, "
                'source, to_verify; see docs/cap.md, "Sender")',
            )
        d = self.mapping(
            top["cap_sender"],
            "cap_sender",
            ("address", "name_vi", "name_en", "source", "to_verify"),
            ("web", "contact", "note"),
        )
        address = self.text(d, "address", "cap_sender")
        if _CAP_TOKEN_FORBIDDEN.search(address):
            self.fail(
                "cap_sender.address",
                f"{address!r}: a CAP sender holds no spaces, commas, '<' or '&'",
            )
        web = self.opt_text(d, "web", "cap_sender")
        if web is not None and not web.startswith(("https://", "http://")):
            self.fail("cap_sender.web", f"{web!r} is not an http(s) URL")
        if not isinstance(d["to_verify"], bool):
            self.fail(
                "cap_sender.to_verify", f"expected true or false, got {_describe(d['to_verify'])}"
            )
        return CapSender(
            address=address,
            name_vi=self.text(d, "name_vi", "cap_sender"),
            name_en=self.text(d, "name_en", "cap_sender"),
            source=self.text(d, "source", "cap_sender"),
            to_verify=d["to_verify"],
            web=web,
            contact=self.opt_text(d, "contact", "cap_sender"),
            note=self.opt_text(d, "note", "cap_sender"),
        )

    def cities(self, top: dict[str, Any]) -> tuple[City, ...]:
        cities: list[City] = []
        seen_wards: dict[str, str] = {}
        for i, item in enumerate(self.seq(top, "cities", "")):
            where = f"cities[{i}]"
            d = self.mapping(item, where, ("id", "name", "lat", "lon", "wards"), ("note",))
            city_id = self.slug(d, "id", where)
            if any(c.id == city_id for c in cities):
                self.fail(f"{where}.id", f"duplicate city id {city_id!r}")
            lat = self.number(d["lat"], f"{where}.lat")
            lon = self.number(d["lon"], f"{where}.lon")
            self.check_position(lon, lat, where)
            wards: list[Ward] = []
            for j, w in enumerate(self.seq(d, "wards", where)):
                ward = self.ward(w, f"{where}.wards[{j}]", city_id)
                for k, ident in enumerate((ward.id, *ward.aliases)):
                    at = f"{where}.wards[{j}]" + (f".former[{k - 1}]" if k else "")
                    if ident in seen_wards:
                        self.fail(
                            f"{at}.id",
                            f"duplicate ward id {ident!r} (first at {seen_wards[ident]})",
                        )
                    seen_wards[ident] = at
                wards.append(ward)
            cities.append(
                City(
                    city_id,
                    self.text(d, "name", where),
                    lat,
                    lon,
                    tuple(wards),
                    self.opt_text(d, "note", where),
                )
            )
        return tuple(cities)

    def check_position(self, lon: float, lat: float, where: str) -> None:
        if not -90.0 <= lat <= 90.0:
            self.fail(f"{where}.lat", f"{lat} is outside -90..90")
        if not -180.0 <= lon <= 180.0:
            self.fail(f"{where}.lon", f"{lon} is outside -180..180")

    def ward(self, item: Any, where: str, city_id: str) -> Ward:
        d = self.mapping(
            item,
            where,
            ("id", "name"),
            ("type", "approximate", "outline", "code", "source", "former"),
        )
        ward_id = self.slug(d, "id", where)
        ward_type = None if d.get("type") is None else self.slug(d, "type", where)
        former: list[FormerWard] = []
        for k, f in enumerate(self.seq(d, "former", where, empty_ok=True)):
            fw = f"{where}.former[{k}]"
            fd = self.mapping(f, fw, ("id", "name", "outline"), ("type",))
            fid = self.slug(fd, "id", fw)
            if any(x.id == fid for x in former):
                self.fail(f"{fw}.id", f"duplicate former ward id {fid!r}")
            former.append(
                FormerWard(
                    id=fid,
                    name=self.text(fd, "name", fw),
                    type=None if fd.get("type") is None else self.slug(fd, "type", fw),
                    outline=self.outline(fd, fw),
                )
            )
        if "outline" in d:
            outline = self.outline(d, where)
        elif former:
            try:
                outline = union_outline([f.outline for f in former])
            except OutlineError as exc:
                self.fail(f"{where}.former", f"cannot join the former outlines: {exc}")
        else:
            self.fail(f"{where}.outline", "is required (or `former` units to join)")
        code = d.get("code")
        if code is not None and (not isinstance(code, str) or not code.isdigit()):
            self.fail(
                f"{where}.code", f"expected the official code as digits in quotes, got {code!r}"
            )
        return Ward(
            id=ward_id,
            city=city_id,
            name=self.text(d, "name", where),
            type=ward_type,
            outline=outline,
            approximate=self.boolean(d, "approximate", where, False),
            code=code,
            source=self.opt_text(d, "source", where),
            former=tuple(former),
        )

    def outline(self, d: dict[str, Any], where: str) -> Ring:
        points: list[tuple[float, float]] = []
        for k, p in enumerate(self.seq(d, "outline", where)):
            pw = f"{where}.outline[{k}]"
            if not isinstance(p, list) or len(p) != 2:
                self.fail(pw, f"expected [lon, lat], got {_describe(p)}")
            lon, lat = self.number(p[0], pw), self.number(p[1], pw)
            if not (-180.0 <= lon <= 180.0 and -90.0 <= lat <= 90.0):
                self.fail(pw, f"[{lon}, {lat}] is not [lon, lat] in degrees (lon first)")
            points.append((lon, lat))
        if len(points) < 4 or points[0] != points[-1]:
            self.fail(
                f"{where}.outline",
                "must be a closed ring of at least 4 positions (the last repeats the first)",
            )
        if len(set(points)) < 3 or _ring_area(points) == 0.0:
            self.fail(f"{where}.outline", "encloses no area")
        return tuple(points)

    def agencies(
        self, top: dict[str, Any], city_ids: set[str], wards: dict[str, Ward]
    ) -> tuple[Agency, ...]:
        agencies: list[Agency] = []
        for i, item in enumerate(self.seq(top, "agencies", "", empty_ok=True)):
            where = f"agencies[{i}]"
            d = self.mapping(
                item,
                where,
                ("id", "name_vi", "name_en", "domains"),
                ("contact", "city", "ward", "note", "role", "aliases", "source"),
            )
            agency_id = self.slug(d, "id", where)
            if any(agency_id in a.ids for a in agencies):
                self.fail(f"{where}.id", f"duplicate agency id {agency_id!r}")
            aliases = self.seq(d, "aliases", where, empty_ok=True)
            for k, alias in enumerate(aliases):
                if not isinstance(alias, str) or not SLUG.match(alias):
                    self.fail(f"{where}.aliases[{k}]", f"{alias!r} must be a lower-case ASCII slug")
                if alias == agency_id or any(alias in a.ids for a in agencies):
                    self.fail(f"{where}.aliases[{k}]", f"{alias!r} is already an agency id")
            role = None if d.get("role") is None else self.slug(d, "role", where)
            if role is not None and role not in WARD_ROLES:
                self.fail(f"{where}.role", f"{role!r} is not one of {sorted(WARD_ROLES)}")
            domains = self.seq(d, "domains", where)
            for k, dom in enumerate(domains):
                if not isinstance(dom, str) or not SLUG.match(dom):
                    self.fail(f"{where}.domains[{k}]", f"{dom!r} must be a lower-case ASCII slug")
            contact = d.get("contact") or {}
            if not isinstance(contact, dict) or not all(
                isinstance(k, str) and (v is None or isinstance(v, str)) for k, v in contact.items()
            ):
                self.fail(f"{where}.contact", "expected a mapping of names to strings or null")
            city = None if d.get("city") is None else self.slug(d, "city", where)
            if city is not None and city not in city_ids:
                self.fail(f"{where}.city", f"{city!r} is not one of {sorted(city_ids)}")
            ward = None if d.get("ward") is None else self.slug(d, "ward", where)
            if ward is not None:
                if ward not in wards:
                    self.fail(f"{where}.ward", f"{ward!r} is not a ward of the site")
                if city is not None and wards[ward].city != city:
                    self.fail(f"{where}.ward", f"{ward!r} is not a ward of {city}")
                city = wards[ward].city
                ward = wards[ward].id  # a former ward's body belongs to the unit now
            if role is not None and ward is None:
                self.fail(f"{where}.ward", f"an agency with role {role!r} needs its ward")
            agencies.append(
                Agency(
                    id=agency_id,
                    name_vi=self.text(d, "name_vi", where),
                    name_en=self.text(d, "name_en", where),
                    domains=tuple(domains),
                    contact=MappingProxyType(dict(contact)),
                    city=city,
                    ward=ward,
                    note=self.opt_text(d, "note", where),
                    role=role,
                    aliases=tuple(aliases),
                    source=self.opt_text(d, "source", where),
                )
            )
        return tuple(agencies)

    def alarm_levels(self, top: dict[str, Any]) -> dict[str, AlarmLevels]:
        section = top.get("alarm_levels") or {}
        if not isinstance(section, dict):
            self.fail("alarm_levels", f"expected a mapping by station id, got {_describe(section)}")
        out: dict[str, AlarmLevels] = {}
        for station, item in section.items():
            where = f"alarm_levels.{station}"
            if not isinstance(station, str) or not SLUG.match(station):
                self.fail(where, f"station id {station!r} must be a lower-case ASCII slug")
            d = self.mapping(
                item,
                where,
                ("bd1", "bd2", "bd3", "source", "effective_from"),
                ("name", "river", "datum", "legal_basis", "note"),
            )
            values: dict[str, float] = {}
            illustrative: set[str] = set()
            for level in LEVELS:
                lw = f"{where}.{level}"
                v = d[level]
                if isinstance(v, dict):
                    lv = self.mapping(v, lw, ("value",), ("illustrative",))
                    values[level] = self.number(lv["value"], f"{lw}.value")
                    if self.boolean(lv, "illustrative", lw, False):
                        illustrative.add(level)
                else:
                    values[level] = self.number(v, lw)
            for lower, upper in itertools.pairwise(LEVELS):
                if not values[upper] > values[lower]:
                    self.fail(
                        f"{where}.{upper}",
                        f"{values[upper]} m must be above {lower} ({values[lower]} m): "
                        "levels must increase, BĐ I < BĐ II < BĐ III",
                    )
            out[station] = AlarmLevels(
                station=station,
                bd1=values["bd1"],
                bd2=values["bd2"],
                bd3=values["bd3"],
                source=self.text(d, "source", where),
                effective_from=self.day(d, "effective_from", where),
                illustrative=frozenset(illustrative),
                name=self.opt_text(d, "name", where),
                river=self.opt_text(d, "river", where),
                datum=self.opt_text(d, "datum", where),
                legal_basis=self.opt_text(d, "legal_basis", where),
                note=self.opt_text(d, "note", where),
            )
        return out

    def devices(
        self, top: dict[str, Any], cities: tuple[City, ...], levels: dict[str, AlarmLevels]
    ) -> tuple[Device, ...]:
        by_city = {c.id: c for c in cities}
        devices: list[Device] = []
        first_at: dict[str, int] = {}
        for i, item in enumerate(self.seq(top, "devices", "", empty_ok=True)):
            where = f"devices[{i}]"
            device = self.device(item, where, by_city, levels)
            if device.id in first_at:
                self.fail(
                    f"{where}.id",
                    f"duplicate device id {device.id!r} (first at devices[{first_at[device.id]}])",
                )
            first_at[device.id] = i
            devices.append(device)
        # Lamps may come before their cabinet in the file: check references once all are read.
        by_id = {dev.id: dev for dev in devices}
        for i, dev in enumerate(devices):
            if dev.kind != "lighting":
                continue
            cabinet_id = dev.attributes["cabinet"]
            cabinet = by_id.get(cabinet_id)
            where, ident = f"devices[{i}].attributes.cabinet", f" (device {dev.id!r})"
            if cabinet is None:
                self.fail(where, f"no device {cabinet_id!r} in the site{ident}")
            if cabinet.kind != "cabinet":
                self.fail(where, f"{cabinet_id!r} is a {cabinet.kind}, not a cabinet{ident}")
            if cabinet.city != dev.city:
                self.fail(where, f"{cabinet_id!r} is in {cabinet.city}, not {dev.city}{ident}")
        return tuple(devices)

    def device(
        self,
        item: Any,
        where: str,
        by_city: Mapping[str, City],
        levels: Mapping[str, AlarmLevels],
    ) -> Device:
        """One device record checked on its own (references to other devices are checked by
        the caller): the site file's path, and :meth:`Site.check_device`'s for the API."""
        d = self.mapping(
            item, where, ("id", "kind", "city", "name", "lat", "lon"), ("ward", "attributes")
        )
        for key in ("id", "kind", "city"):
            if not isinstance(d[key], str):
                self.fail(f"{where}.{key}", f"expected a string, got {_describe(d[key])}")
        ident = f" (device {d['id']!r})"
        name = d["name"]
        if not isinstance(name, str) or not name.strip():
            self.fail(f"{where}.name", f"expected a non-empty string{ident}")
        ward = d.get("ward")
        if ward is not None and not isinstance(ward, str):
            self.fail(f"{where}.ward", f"expected a ward id or null, got {ward!r}{ident}")
        attributes = d.get("attributes") or {}
        if not isinstance(attributes, dict) or not all(isinstance(k, str) for k in attributes):
            self.fail(f"{where}.attributes", f"expected a mapping with string keys{ident}")
        attributes = dict(attributes)
        if d["kind"] == "flood":
            self.flood_levels(attributes, levels, where, ident)
        try:
            device = Device(
                id=d["id"],
                kind=d["kind"],
                city=d["city"],
                ward=ward,
                name=name.strip(),
                lat=self.number(d["lat"], f"{where}.lat"),
                lon=self.number(d["lon"], f"{where}.lon"),
                attributes=attributes,
            )
        except DeviceError as exc:
            self.fail(f"{where}.{exc.field}", f"{exc.message}{ident}")
        city = by_city.get(device.city)
        if city is None:
            known = sorted(by_city)
            self.fail(f"{where}.city", f"{device.city!r} is not one of {known}{ident}")
        if device.ward is not None:
            unit = next((w for w in city.wards if device.ward in w.ids), None)
            if unit is None:
                self.fail(
                    f"{where}.ward",
                    f"{device.ward!r} is not a ward of {city.id} "
                    f"(one of {[w.id for w in city.wards]} or a former ward){ident}",
                )
            if unit.id != device.ward:  # filed under a former ward: normalised
                device = dataclasses.replace(device, ward=unit.id)
        self.kind_attributes(device, where, ident)
        return device

    def flood_levels(
        self,
        attributes: dict[str, Any],
        levels: Mapping[str, AlarmLevels],
        where: str,
        ident: str,
    ) -> None:
        """Copy the station's BĐ levels into the device's attributes, or check the device's own."""
        aw = f"{where}.attributes"
        station = attributes.get("station")
        if station is not None:
            if station not in levels:
                known = sorted(levels)
                self.fail(f"{aw}.station", f"{station!r} is not one of alarm_levels {known}{ident}")
            for level, value in levels[station].as_attributes().items():
                if level in attributes and attributes[level] != value:
                    self.fail(
                        f"{aw}.{level}",
                        f"{attributes[level]!r} conflicts with alarm_levels.{station}.{level} = "
                        f"{value} (change the station's level, or drop the device's copy){ident}",
                    )
                attributes[level] = value
            return
        missing = [level for level in LEVELS if level not in attributes]
        if missing:
            self.fail(
                aw,
                f"a flood device needs `station` (one of {sorted(levels)}) or its own "
                f"bd1, bd2, bd3; missing {missing}{ident}",
            )
        values = [self.number(attributes[level], f"{aw}.{level}") for level in LEVELS]
        for k in (1, 2):
            if not values[k] > values[k - 1]:
                self.fail(
                    f"{aw}.{LEVELS[k]}",
                    f"{values[k]} m must be above {LEVELS[k - 1]} ({values[k - 1]} m): "
                    f"levels must increase, BĐ I < BĐ II < BĐ III{ident}",
                )

    def kind_attributes(self, device: Device, where: str, ident: str) -> None:
        attrs = device.attributes
        aw = f"{where}.attributes"
        if device.kind == "lighting":
            cabinet = attrs.get("cabinet")
            if not isinstance(cabinet, str) or not cabinet:
                self.fail(f"{aw}.cabinet", f"a lamp needs the id of the cabinet feeding it{ident}")
            for key in ("nominal_w", "min_w"):
                if key in attrs and self.number(attrs[key], f"{aw}.{key}") <= 0:
                    self.fail(f"{aw}.{key}", f"must be positive{ident}")
            if "nominal_w" in attrs and "min_w" in attrs and attrs["min_w"] > attrs["nominal_w"]:
                self.fail(f"{aw}.min_w", f"{attrs['min_w']} exceeds nominal_w{ident}")
        elif device.kind == "traffic":
            role = attrs.get("role")
            if role is not None and role not in TRAFFIC_ROLES:
                self.fail(f"{aw}.role", f"{role!r} is not one of {sorted(TRAFFIC_ROLES)}{ident}")
            for key in ("free_flow_kmh", "lanes", "capacity_veh_h"):
                if key in attrs and self.number(attrs[key], f"{aw}.{key}") <= 0:
                    self.fail(f"{aw}.{key}", f"must be positive{ident}")


def _ring_area(points: list[tuple[float, float]]) -> float:
    return abs(sum(x1 * y2 - x2 * y1 for (x1, y1), (x2, y2) in itertools.pairwise(points))) / 2
