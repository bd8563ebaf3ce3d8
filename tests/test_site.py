"""The site file: the packaged Hậu Giang data and the loader's validation (no services needed)."""

from __future__ import annotations

import copy
import itertools
import math
from collections import Counter
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import yaml

from ioc.core.catalogue import KINDS
from ioc.core.packaged import SITE_DATA
from ioc.core.settings import Settings
from ioc.core.site import AlarmLevels, Site, SiteError, load_site

PACKAGED = SITE_DATA / "hau-giang.yaml"
CITIES = {"vi-thanh", "nga-bay"}  # contract v1 (DESIGN.md)


@pytest.fixture(scope="module")
def site() -> Site:
    return load_site(PACKAGED)


def _metres(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Distance between two (lat, lon) points, equirectangular (fine at street scale)."""
    dy = (a[0] - b[0]) * 110_574.0
    dx = (a[1] - b[1]) * 111_320.0 * math.cos(math.radians(a[0]))
    return math.hypot(dx, dy)


# ------------------------------------------------------------------------ packaged site


def test_packaged_site_is_the_default_and_loads(site: Site) -> None:
    assert Settings.model_validate({"site": None}).site_path() == PACKAGED
    assert site.timezone == "Asia/Ho_Chi_Minh"
    assert site.path == PACKAGED
    assert set(site.cities_by_id) == CITIES
    assert site.city("vi-thanh").name == "Vị Thanh" and site.city("nga-bay").name == "Ngã Bảy"
    assert "2025" in (site.note or "")  # the merger into the new Cần Thơ city is recorded
    assert "1668/NQ-UBTVQH15" in (site.note or "")
    assert site.admin_parent == "thành phố Cần Thơ"
    # the five current commune-level units (since 1 July 2025)
    assert [w.id for w in site.city("vi-thanh").wards] == [
        "phuong-vi-thanh", "phuong-vi-tan", "xa-hoa-luu"
    ]  # fmt: skip
    assert [w.id for w in site.city("nga-bay").wards] == ["phuong-nga-bay", "phuong-dai-thanh"]
    assert all(w.approximate and w.source and w.code for c in site.cities for w in c.wards)


def test_contract_example_device_matches(site: Site) -> None:
    flood = site.device("vt-flood-01")
    # filed under Phường V before the merger; Phường V is now part of Phường Vị Tân
    assert (flood.kind, flood.city, flood.ward) == ("flood", "vi-thanh", "phuong-vi-tan")
    assert (flood.lat, flood.lon) == (9.784, 105.470)
    assert {k: flood.attributes[k] for k in ("bd1", "bd2", "bd3")} == {
        "bd1": 0.55,
        "bd2": 0.65,
        "bd3": 0.75,
    }
    # `ioc demo` prints the first device's readings URL with metric=water_level_m.
    assert site.devices[0].kind == "flood"


def test_device_counts_per_kind_are_sane(site: Site) -> None:
    counts = Counter((d.city, d.kind) for d in site.devices)
    for city in CITIES:
        assert {kind for (c, kind) in counts if c == city} == set(KINDS)
        assert counts[(city, "flood")] >= 2
        assert 2 <= counts[(city, "rain")] <= 4
        assert 5 <= counts[(city, "cabinet")] <= 8
        assert counts[(city, "traffic")] >= 6
    assert 250 <= len(site.devices) <= 1000  # the API lists up to 1000 in one page
    roles = Counter((d.city, d.attributes.get("role")) for d in site.devices_of(kind="traffic"))
    for city in CITIES:
        assert roles[(city, "detector")] >= 4 and roles[(city, "camera")] >= 2
    for cabinet in site.devices_of(kind="cabinet"):
        assert 20 <= len(site.lamps_on(cabinet.id)) <= 30, cabinet.id
        assert cabinet.attributes["phases"] == 3
        assert cabinet.attributes["nominal_voltage_v"] == 220
        assert cabinet.attributes["road"]
    assert len(site.devices_by_id) == len(site.devices)


def test_flood_stations_carry_sourced_increasing_levels(site: Site) -> None:
    stations = [("vt-flood-01", "vi-thanh", 0.75), ("nb-flood-01", "phung-hiep", 1.40)]
    for device_id, station, bd3 in stations:
        device = site.device(device_id)
        a = device.attributes
        assert a["station"] == station and a["river"] and a["datum"]
        assert a["bd1"] < a["bd2"] < a["bd3"] == bd3
        levels = site.alarm_levels[station]
        assert isinstance(levels, AlarmLevels)
        assert levels.as_attributes() == {k: a[k] for k in ("bd1", "bd2", "bd3")}
        assert levels.source.strip() and isinstance(levels.effective_from, date)
        assert "05/2020/QĐ-TTg" in (levels.legal_basis or "")
        # BĐ I and II were not found for these stations: they ship marked as illustrative.
        assert levels.illustrative == {"bd1", "bd2"}
        assert levels.level_reached(bd3) == 3 and levels.level_reached(levels.bd1 - 0.01) == 0
    nb = site.city("nga-bay")
    assert site.device("nb-flood-01").city == nb.id
    assert "Cái Côn" in site.device("nb-flood-01").attributes["river"]
    assert "Xà No" in site.device("vt-flood-01").attributes["river"]
    # Every flood device, station or urban gauge, refers to a station and carries its levels.
    for device in site.devices_of(kind="flood"):
        levels = site.alarm_levels[device.attributes["station"]]
        assert {k: device.attributes[k] for k in ("bd1", "bd2", "bd3")} == levels.as_attributes()


def test_every_device_lies_inside_its_ward(site: Site) -> None:
    for device in site.devices:
        assert device.ward is not None, device.id
        ward = site.ward(device.ward)
        assert ward.city == device.city, device.id
        assert ward.contains(device.lat, device.lon), (device.id, device.ward)
        found = site.ward_of(device.lat, device.lon)
        assert found is not None and found.id == device.ward, device.id


def test_ward_outlines_do_not_overlap_and_the_centres_are_covered(site: Site) -> None:
    for city in site.cities:
        found = site.ward_of(city.lat, city.lon)
        assert found is not None and found.city == city.id
        lon0 = min(w.bbox[0] for w in city.wards)
        lat0 = min(w.bbox[1] for w in city.wards)
        lon1 = max(w.bbox[2] for w in city.wards)
        lat1 = max(w.bbox[3] for w in city.wards)
        n = 60
        for i in range(n):
            for j in range(n):
                lat = lat0 + (i + 0.5) * (lat1 - lat0) / n
                lon = lon0 + (j + 0.5) * (lon1 - lon0) / n
                inside = [w.id for w in city.wards if w.contains(lat, lon)]
                assert len(inside) <= 1, (lat, lon, inside)
    assert site.ward_of(21.0285, 105.8542) is None  # Hà Nội


def test_lamps_reference_cabinets_and_are_spaced_along_their_road(site: Site) -> None:
    lamps = site.devices_of(kind="lighting")
    assert lamps
    for lamp in lamps:
        cabinet = site.device(lamp.attributes["cabinet"])
        assert cabinet.kind == "cabinet" and cabinet.city == lamp.city, lamp.id
        assert lamp.attributes["road"] == cabinet.attributes["road"], lamp.id
        assert 0 < lamp.attributes["min_w"] < lamp.attributes["nominal_w"], lamp.id
    for cabinet in site.devices_of(kind="cabinet"):
        run = site.lamps_on(cabinet.id)
        for a, b in itertools.pairwise(run):
            # 35 m along the road, staggered 9 m either side of its axis.
            assert 30.0 <= _metres((a.lat, a.lon), (b.lat, b.lon)) <= 45.0, (a.id, b.id)
        assert _metres((cabinet.lat, cabinet.lon), (run[0].lat, run[0].lon)) < 100.0


def test_traffic_devices_describe_their_junction(site: Site) -> None:
    for device in site.devices_of(kind="traffic"):
        a = device.attributes
        assert a["junction"].startswith(device.id[:3]), device.id
        if a["role"] == "detector":
            assert a["lanes"] >= 1 and a["capacity_veh_h"] > 0 and 20 <= a["free_flow_kmh"] <= 90
    junctions = {d.attributes["junction"] for d in site.devices_of(kind="traffic")}
    assert "nb-roundabout-ql1a" in junctions and "vt-thd-x-3thang2" in junctions


def test_agencies_cover_the_domains_and_every_ward(site: Site) -> None:
    ids = set(site.agencies_by_id)
    assert {
        "ioc", "urban-works", "power", "road-authority", "ql1a-unit", "traffic-police",
        "civil-defence", "agriculture-environment", "water-supply", "sanitation",
    } <= ids  # fmt: skip
    domains = {d for a in site.agencies for d in a.domains}
    assert {"lighting", "drainage", "power-supply", "roads", "flood", "waste-collection"} <= domains
    # every current unit has its People's Committee, police and civil-defence command
    for role in ("committee", "police", "civil-defence"):
        bodies = [a for a in site.agencies if a.role == role]
        assert sorted(a.ward for a in bodies) == sorted(site.wards_by_id), role
    assert len([a for a in site.agencies if a.ward is not None]) == 15
    for agency in site.agencies:
        assert agency.name_vi and agency.name_en and agency.source, agency.id
        if agency.ward is not None:
            assert agency.city == site.ward(agency.ward).city
            assert agency.ward in site.wards_by_id  # the current unit, not a former id


def test_lookups_fail_clearly(site: Site) -> None:
    with pytest.raises(KeyError, match="nope"):
        site.device("nope")
    with pytest.raises(KeyError, match="ha-noi"):
        site.city("ha-noi")
    with pytest.raises(KeyError, match="phuong-99"):
        site.city("vi-thanh").ward("phuong-99")


# ---------------------------------------------------------------------------- bad input

SQUARE_A = [[105.0, 9.0], [105.1, 9.0], [105.1, 9.1], [105.0, 9.1], [105.0, 9.0]]
SQUARE_B = [[105.1, 9.0], [105.2, 9.0], [105.2, 9.1], [105.1, 9.1], [105.1, 9.0]]

MINIMAL: dict[str, Any] = {
    "version": 1,
    "site": {"name": "Thử", "timezone": "Asia/Ho_Chi_Minh"},
    "cap_sender": {
        "address": "ioc@example.invalid",
        "name_vi": "Trung tâm thử",
        "name_en": "Test centre",
        "source": "test",
        "to_verify": True,
    },
    "cities": [
        {
            "id": "vi-thanh",
            "name": "Vị Thanh",
            "lat": 9.05,
            "lon": 105.05,
            "wards": [
                {"id": "phuong-1", "name": "Phường I", "type": "phuong", "outline": SQUARE_A},
                {"id": "phuong-5", "name": "Phường V", "outline": SQUARE_B},
            ],
        },
        {
            "id": "nga-bay",
            "name": "Ngã Bảy",
            "lat": 9.25,
            "lon": 105.05,
            "wards": [
                {
                    "id": "lai-hieu",
                    "name": "Phường Lái Hiếu",
                    "outline": [[105.0, 9.2], [105.1, 9.2], [105.1, 9.3], [105.0, 9.2]],
                }
            ],
        },
    ],
    "agencies": [
        {"id": "pctt", "name_vi": "Ban Chỉ huy PCTT", "name_en": "PCTT", "domains": ["flood"]},
        {
            "id": "ubnd-phuong-1",
            "name_vi": "UBND Phường I",
            "name_en": "Ward I",
            "domains": ["ward-affairs"],
            "ward": "phuong-1",
        },
    ],
    "alarm_levels": {
        "st": {
            "source": "test",
            "effective_from": date(2020, 3, 20),
            "bd1": {"value": 0.55, "illustrative": True},
            "bd2": 0.65,
            "bd3": {"value": 0.75},
        }
    },
    "devices": [
        {
            "id": "vt-flood-01",
            "kind": "flood",
            "city": "vi-thanh",
            "ward": "phuong-1",
            "name": "Trạm",
            "lat": 9.05,
            "lon": 105.05,
            "attributes": {"station": "st"},
        },
        {
            # a lamp may come before its cabinet
            "id": "vt-lamp-1",
            "kind": "lighting",
            "city": "vi-thanh",
            "ward": "phuong-5",
            "name": "Đèn",
            "lat": 9.05,
            "lon": 105.15,
            "attributes": {"cabinet": "vt-cab-1", "nominal_w": 100, "min_w": 30},
        },
        {
            "id": "vt-cab-1",
            "kind": "cabinet",
            "city": "vi-thanh",
            "ward": "phuong-5",
            "name": "Tủ",
            "lat": 9.05,
            "lon": 105.16,
        },
        {
            "id": "vt-gauge-1",
            "kind": "flood",
            "city": "vi-thanh",
            "ward": None,
            "name": "Đo",
            "lat": 9.05,
            "lon": 105.06,
            "attributes": {"bd1": 1.0, "bd2": 1.1, "bd3": 1.2},
        },
        {
            "id": "vt-tfd-1",
            "kind": "traffic",
            "city": "vi-thanh",
            "ward": "phuong-1",
            "name": "Đếm xe",
            "lat": 9.05,
            "lon": 105.04,
            "attributes": {"role": "detector", "free_flow_kmh": 40, "lanes": 2},
        },
    ],
}


def _write(tmp_path: Path, data: Any, name: str = "site.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def test_minimal_site_loads_and_copies_station_levels(tmp_path: Path) -> None:
    site = load_site(_write(tmp_path, MINIMAL))
    flood = site.device("vt-flood-01")
    assert (flood.attributes["bd1"], flood.attributes["bd2"], flood.attributes["bd3"]) == (
        0.55,
        0.65,
        0.75,
    )
    assert site.alarm_levels["st"].illustrative == {"bd1"}
    assert site.lamps_on("vt-cab-1") == (site.device("vt-lamp-1"),)
    assert site.agency("ubnd-phuong-1").city == "vi-thanh"  # inferred from the ward
    assert site.ward_of(9.05, 105.15) == site.ward("phuong-5")
    assert site.ward_of(9.5, 105.5) is None


def _set(data: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``devices.1.attributes.cabinet``-style paths; the value ``...`` deletes the key."""
    *parents, last = dotted.split(".")
    node: Any = data
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    key: Any = int(last) if isinstance(node, list) else last
    if value is ...:
        del node[key]
    else:
        node[key] = value


CABINET = "devices[1].attributes.cabinet"
OUTLINE = "cities[0].wards[0].outline"
BAD_CASES = [
    # (what is changed, new value, where the error must point, words the message must have)
    ("devices.2.kind", "lamp", "devices[2].kind", "'lamp' is not one of"),
    ("devices.0.city", "ha-noi", "devices[0].city", "'ha-noi' is not one of"),
    ("devices.0.ward", "phuong-9", "devices[0].ward", "'phuong-9' is not a ward of vi-thanh"),
    ("devices.0.ward", "lai-hieu", "devices[0].ward", "not a ward of vi-thanh"),
    ("devices.2.id", "vt-flood-01", "devices[2].id", "duplicate device id 'vt-flood-01'"),
    ("devices.2.id", "bad/id", "devices[2].id", "'bad/id'"),
    ("devices.0.lat", "nine", "devices[0].lat", "expected a number"),
    ("devices.0.lat", 123.0, "devices[0].lat", "outside -90..90"),
    ("devices.0.lon", ..., "devices[0].lon", "is required"),
    ("devices.0.colour", "red", "devices[0].colour", "unknown field"),
    ("devices.1.attributes.cabinet", "vt-cab-9", CABINET, "no device 'vt-cab-9'"),
    ("devices.1.attributes.cabinet", "vt-flood-01", CABINET, "not a cabinet"),
    ("devices.1.attributes.cabinet", ..., CABINET, "a lamp needs the id of the cabinet"),
    ("devices.1.attributes.min_w", 150, "devices[1].attributes.min_w", "exceeds nominal_w"),
    ("devices.0.attributes.station", "xa-no", "devices[0].attributes.station", "'xa-no'"),
    ("devices.0.attributes.bd3", 0.8, "devices[0].attributes.bd3", "conflicts with alarm_levels"),
    ("devices.3.attributes.bd3", 1.05, "devices[3].attributes.bd3", "must be above bd2"),
    ("devices.3.attributes", {}, "devices[3].attributes", "needs `station`"),
    ("devices.4.attributes.role", "radar", "devices[4].attributes.role", "'radar' is not one of"),
    ("alarm_levels.st.bd2", 0.55, "alarm_levels.st.bd2", "must be above bd1"),
    ("alarm_levels.st.bd3", {"value": 0.6}, "alarm_levels.st.bd3", "must be above bd2"),
    ("alarm_levels.st.source", ..., "alarm_levels.st.source", "is required"),
    ("alarm_levels.st.effective_from", "soon", "alarm_levels.st.effective_from", "YYYY-MM-DD"),
    (
        "alarm_levels.st.bd1",
        {"value": 0.5, "illustrative": 1},
        "alarm_levels.st.bd1.illustrative",
        "true or false",
    ),
    ("cities.1.wards.0.id", "phuong-1", "cities[1].wards[0].id", "duplicate ward id 'phuong-1'"),
    ("cities.1.id", "vi-thanh", "cities[1].id", "duplicate city id"),
    ("cities.0.id", "Vi Thanh", "cities[0].id", "slug"),
    ("cities.0.wards.0.outline", SQUARE_A[:-1], OUTLINE, "closed ring"),
    ("cities.0.wards.0.outline", [[105.0, 9.0]] * 4, OUTLINE, "encloses no area"),
    ("cities.0.wards.0.outline.1", [9.0, 105.1], "cities[0].wards[0].outline[1]", "lon first"),
    ("agencies.1.ward", "phuong-9", "agencies[1].ward", "'phuong-9'"),
    ("agencies.0.domains", [], "agencies[0].domains", "non-empty list"),
    ("agencies.1.id", "pctt", "agencies[1].id", "duplicate agency id"),
    ("site.timezone", "Asia/Hanoi_Typo", "site.timezone", "not a known IANA time zone"),
    ("version", 2, "version", "not supported"),
    ("alarm_level", {}, "alarm_level", "unknown field"),
]


@pytest.mark.parametrize(
    ("change", "value", "where", "words"), BAD_CASES, ids=[c[0] for c in BAD_CASES]
)
def test_bad_input_names_the_entry(
    tmp_path: Path, change: str, value: Any, where: str, words: str
) -> None:
    data = copy.deepcopy(MINIMAL)
    _set(data, change, value)
    path = _write(tmp_path, data, "bad-site.yaml")
    with pytest.raises(SiteError) as caught:
        load_site(path)
    err = caught.value
    assert err.path == path and err.where == where, str(err)
    assert words in err.message, str(err)
    assert str(err).startswith(f"{path}: {where}: ")


def test_device_errors_name_the_device_id(tmp_path: Path) -> None:
    data = copy.deepcopy(MINIMAL)
    data["devices"][2]["kind"] = "lamp"
    with pytest.raises(SiteError, match=r"devices\[2\]\.kind: 'lamp' is not one of .*'vt-cab-1'"):
        load_site(_write(tmp_path, data))


def test_unreadable_and_malformed_files(tmp_path: Path) -> None:
    missing = tmp_path / "missing.yaml"
    with pytest.raises(SiteError, match=r"missing\.yaml: cannot read"):
        load_site(missing)
    broken = tmp_path / "broken.yaml"
    broken.write_text("site: {name: x\ncities: [\n", encoding="utf-8")
    with pytest.raises(SiteError, match=r"broken\.yaml: line \d+, column \d+: not valid YAML"):
        load_site(broken)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n", encoding="utf-8")
    with pytest.raises(SiteError, match="expected a mapping"):
        load_site(listy)


# ------------------------------------------------------------------ the 2025 merger


def test_unit_names_and_codes_match_the_vietnam_provinces_package(site: Site) -> None:
    """The official names, types and codes of the five current units, and that they lie in
    Cần Thơ city, as the maintained package of administrative units has them."""
    import vietnam_provinces as vp  # test extra: pinned in pyproject.toml

    units = [w for c in site.cities for w in c.wards]
    assert {w.code for w in units} == {"31321", "31333", "31338", "31340", "31411"}
    for ward in units:
        assert ward.code is not None
        official = vp.Ward.from_code(vp.WardCode(int(ward.code)))
        assert official.name == ward.name, ward.id
        assert official.division_type.value == {"phuong": "phường", "xa": "xã"}[ward.type or ""]
        province = vp.Province.from_code(official.province_code)
        assert province.name == "Thành phố Cần Thơ"
        assert _fold_name(site.admin_parent) == _fold_name(province.name)


def _fold_name(name: str | None) -> str:
    return (name or "").casefold()


def test_each_unit_absorbed_the_former_wards_of_the_brief(site: Site) -> None:
    assert {w.id: set(w.aliases) for c in site.cities for w in c.wards} == {
        "phuong-vi-thanh": {"phuong-1", "phuong-3", "phuong-7"},
        "phuong-vi-tan": {"phuong-4", "phuong-5", "vi-tan"},
        "xa-hoa-luu": {"hoa-luu", "tan-tien", "hoa-tien"},
        # the old Phường Ngã Bảy keeps its id: it is the unit's own, not an alias
        "phuong-nga-bay": {"lai-hieu", "hiep-thanh"},
        "phuong-dai-thanh": {"hiep-loi", "dai-thanh", "tan-thanh"},
    }
    assert [f.id for f in site.ward("phuong-nga-bay").former] == [
        "phuong-nga-bay", "lai-hieu", "hiep-thanh"
    ]  # fmt: skip


def test_a_former_ward_id_resolves_to_its_current_unit(site: Site) -> None:
    assert site.ward("phuong-5").id == "phuong-vi-tan"
    assert site.ward("tan-thanh").id == "phuong-dai-thanh"
    assert site.current_ward_id("hoa-tien") == "xa-hoa-luu"
    assert site.current_ward_id("phuong-vi-thanh") == "phuong-vi-thanh"
    assert site.current_ward_id("elsewhere") == "elsewhere"  # unknown ids pass through
    assert site.ward_ids("phuong-7") == ("phuong-vi-thanh", "phuong-1", "phuong-3", "phuong-7")
    assert set(site.ward_aliases) == {
        f.id for c in site.cities for w in c.wards for f in w.former if f.id != w.id
    }
    # devices filed under a former ward are listed under the unit, by either id
    assert site.devices_of(ward="phuong-5") == site.devices_of(ward="phuong-vi-tan")
    assert all(d.ward in site.wards_by_id for d in site.devices)


def test_unit_outline_is_the_union_of_its_former_wards(site: Site) -> None:
    from ioc.core.site import _ring_area

    for city in site.cities:
        for ward in city.wards:
            parts = sum(_ring_area(list(f.outline)) for f in ward.former)
            assert _ring_area(list(ward.outline)) == pytest.approx(parts, rel=1e-9), ward.id
            for former in ward.former:
                # every vertex nudged towards the former ward's centroid is inside both
                cx = sum(p[0] for p in former.outline[:-1]) / (len(former.outline) - 1)
                cy = sum(p[1] for p in former.outline[:-1]) / (len(former.outline) - 1)
                for lon, lat in former.outline[:-1]:
                    plon, plat = lon + (cx - lon) * 0.02, lat + (cy - lat) * 0.02
                    if former.contains(plat, plon):
                        assert ward.contains(plat, plon), (ward.id, former.id, plon, plat)
                        assert site.ward_of(plat, plon) == ward


def test_union_outline_cancels_shared_edges_and_refuses_what_is_not_one_ring() -> None:
    from ioc.core.site import OutlineError, union_outline

    a = ((0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0), (0.0, 0.0))
    b = ((1.0, 0.0), (2.0, 0.0), (2.0, 1.0), (1.0, 1.0), (1.0, 0.0))
    # b drawn clockwise: orientation does not matter
    ring = union_outline([a, tuple(reversed(b))])
    assert ring[0] == ring[-1] and len(ring) == 7  # the shared edge (1,0)-(1,1) is gone
    assert set(ring) == {(0.0, 0.0), (1.0, 0.0), (2.0, 0.0), (2.0, 1.0), (1.0, 1.0), (0.0, 1.0)}
    far = ((5.0, 5.0), (6.0, 5.0), (6.0, 6.0), (5.0, 5.0))
    with pytest.raises(OutlineError, match="more than one ring"):
        union_outline([a, far])
    # a border drawn with different vertices on each side does not cancel
    c = ((1.0, 0.0), (2.0, 0.0), (2.0, 1.0), (1.0, 1.0), (1.0, 0.5), (1.0, 0.0))
    with pytest.raises(OutlineError):
        union_outline([a, c])


def test_agency_aliases_resolve_to_the_current_agency(site: Site) -> None:
    assert site.agency("pctt").id == "civil-defence"
    assert site.agency("environment").id == "agriculture-environment"
    old_committees = [
        "ubnd-phuong-1", "ubnd-phuong-3", "ubnd-phuong-4", "ubnd-phuong-5", "ubnd-phuong-7",
        "ubnd-vi-tan", "ubnd-hoa-luu", "ubnd-tan-tien", "ubnd-hoa-tien", "ubnd-phuong-nga-bay",
        "ubnd-lai-hieu", "ubnd-hiep-thanh", "ubnd-hiep-loi", "ubnd-dai-thanh", "ubnd-tan-thanh",
    ]  # fmt: skip
    for old in old_committees:
        committee = site.agency(old)
        assert committee.role == "committee", old
    assert site.agency("ubnd-phuong-5").id == "ubnd-phuong-vi-tan"
    assert site.agency("ubnd-tan-thanh").name_vi == "Ủy ban nhân dân Phường Đại Thành"
    assert site.agency_ids("pctt") == ("civil-defence", "pctt")
    assert site.ward_agency("police", "phuong-5") == site.agency("police-phuong-vi-tan")
    assert site.ward_agency("civil-defence", None) is None


def test_place_text_names_the_unit_and_can_tho_city_never_ids(site: Site) -> None:
    assert site.place_name("phuong-vi-tan") == "phường Vị Tân, thành phố Cần Thơ"
    assert site.place_name("phuong-5") == "phường Vị Tân, thành phố Cần Thơ"  # former id
    assert site.place_name("hoa-tien", lang="en") == "Hỏa Lựu Commune, Cần Thơ City"
    assert site.place_name(None, "vi-thanh") == "khu vực Vị Thanh, thành phố Cần Thơ"
    assert site.place_name(None, None) == ""


def test_a_place_named_in_text_finds_its_unit_by_current_or_former_name(site: Site) -> None:
    assert site.ward_named("12 đường 3 Tháng 2, Phường V, Vị Thanh") == site.ward("phuong-vi-tan")
    assert site.ward_named("hẻm 5, phường 5") == site.ward("phuong-vi-tan")  # Arabic numeral
    assert site.ward_named("Ấp 3, xã Tân Thành") == site.ward("phuong-dai-thanh")
    assert site.ward_named("phường vị thanh") == site.ward("phuong-vi-thanh")
    assert site.ward_named("Phường VII") == site.ward("phuong-vi-thanh")  # not Phường V
    assert site.ward_named("Quận Ninh Kiều") is None


def test_a_site_file_may_file_devices_and_agencies_under_former_ids(tmp_path: Path) -> None:
    data = copy.deepcopy(MINIMAL)
    vt = data["cities"][0]
    vt["wards"] = [
        {
            "id": "phuong-vi-thanh",
            "name": "Phường Vị Thanh",
            "type": "phuong",
            "code": "31321",
            "former": [
                {"id": "phuong-1", "name": "Phường I", "outline": SQUARE_A},
                {"id": "phuong-5", "name": "Phường V", "outline": SQUARE_B},
            ],
        }
    ]
    site = load_site(_write(tmp_path, data))
    assert {d.ward for d in site.devices if d.city == "vi-thanh"} <= {"phuong-vi-thanh", None}
    assert site.agency("ubnd-phuong-1").ward == "phuong-vi-thanh"
    assert site.ward_of(9.05, 105.15) == site.ward("phuong-5") == site.ward("phuong-vi-thanh")
    # a former id used as a second unit's id is refused
    data["cities"][1]["wards"][0]["id"] = "phuong-5"
    with pytest.raises(SiteError, match="duplicate ward id 'phuong-5'"):
        load_site(_write(tmp_path, data))


def test_a_place_written_with_decomposed_diacritics_is_found(site: Site) -> None:
    import unicodedata

    text = unicodedata.normalize("NFD", "Tổ 3, Phường Hiệp Lợi")
    assert site.ward_named(text) == site.ward("phuong-dai-thanh")
