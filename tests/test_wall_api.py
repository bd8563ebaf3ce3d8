"""The wall screen's endpoints: /api/v1/site, /api/v1/whoami and the page's files at /wall/."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from ioc.app.runtime import Runtime
from ioc.core.settings import Settings
from ioc.storage import Flavour
from tests.conftest import TOKEN, running_service

AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
async def service(settings: Settings) -> AsyncIterator[tuple[Runtime, httpx.AsyncClient]]:
    async with running_service(settings) as pair:
        yield pair


async def test_site_has_ward_outlines_stations_and_categories(
    service: tuple[Runtime, httpx.AsyncClient],
) -> None:
    runtime, http = service
    assert (await http.get("/api/v1/site")).status_code == 401
    body = (await http.get("/api/v1/site", headers=AUTH)).json()
    assert {c["id"] for c in body["cities"]} == {"vi-thanh", "nga-bay"}
    wards = body["wards"]["features"]
    assert len(wards) == sum(len(c.wards) for c in runtime.site.cities)
    ring = wards[0]["geometry"]["coordinates"][0]
    assert all(len(p) == 2 and 105 < p[0] < 106 and 9 < p[1] < 10.5 for p in ring)  # lon, lat
    for st in body["stations"]:
        assert st["bd1"] < st["bd2"] < st["bd3"]
    assert "ngap-nuoc" in {c["code"] for c in body["categories"]}
    assert body["agencies"]


async def test_whoami_tells_who_may_act(service: tuple[Runtime, httpx.AsyncClient]) -> None:
    from ioc.storage import tokens

    runtime, http = service
    async with runtime.pool.connection() as conn:
        _, viewer = await tokens.create(conn, name="wall", role="viewer")
        _, operator = await tokens.create(conn, name="desk", role="operator")
        _, agency = await tokens.create(conn, name="pctt", role="agency:pctt")

    async def me(token: str) -> httpx.Response:
        return await http.get("/api/v1/whoami", headers={"Authorization": f"Bearer {token}"})

    assert (await me(TOKEN)).json() == {
        "name": "admin", "role": "admin", "agency": None, "can_act": True
    }  # fmt: skip
    assert (await me(operator)).json()["can_act"] is True
    assert (await me(viewer)).json()["can_act"] is False
    assert (await me(agency)).json() == {
        "name": "pctt", "role": "agency:pctt", "agency": "pctt", "can_act": False
    }  # fmt: skip
    assert (await me("nope")).status_code == 401
    # An agency token sees its incidents, not the site plan.
    site = await http.get("/api/v1/site", headers={"Authorization": f"Bearer {agency}"})
    assert site.status_code == 403


async def test_the_page_is_served_from_the_package(
    service: tuple[Runtime, httpx.AsyncClient],
) -> None:
    _, http = service
    r = await http.get("/wall")
    assert r.status_code == 307 and r.headers["location"] == "/wall/"
    page = await http.get("/wall/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'src="main.js"' in page.text
    for name in ("main.js", "feed.js", "map.js", "alerts.js", "panels.js", "i18n.js", "api.js",
                 "dom.js"):  # fmt: skip
        r = await http.get(f"/wall/{name}")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/javascript")
        # Nothing from outside the closed network (the SVG namespace is a name, not a fetch).
        text = r.text.replace('"http://www.w3.org/2000/svg"', "")
        assert "http://" not in text and "https://" not in text, name
        assert all(line.split(" from ")[1].startswith('"./') for line in text.splitlines()
                   if line.startswith("import ")), name  # fmt: skip
    assert (await http.get("/wall/wall.css")).headers["content-type"].startswith("text/css")
    for bad in ("__init__.py", "..%2F__init__.py", "nope.js", ".hidden.js"):
        assert (await http.get(f"/wall/{bad}")).status_code == 404, bad
    assert (await http.get("/")).headers["location"] == "/wall/"  # the one live client


def test_the_lighting_night_is_the_latest_one_begun_at_18h_local() -> None:
    from datetime import datetime
    from zoneinfo import ZoneInfo

    from ioc.api.lighting import night_window

    hcm = ZoneInfo("Asia/Ho_Chi_Minh")
    at = lambda d, h, m=0: datetime(2026, 11, d, h, m, tzinfo=hcm)  # noqa: E731
    assert night_window(at(28, 20, 30)) == (at(28, 18), at(28, 20, 30))
    assert night_window(at(28, 3)) == (at(27, 18), at(28, 3))
    assert night_window(at(28, 12)) == (at(27, 18), at(28, 6))  # daytime: last night, whole


async def test_cabinet_energy_tonight_against_a_week_ago(
    service: tuple[Runtime, httpx.AsyncClient], database_url: str, flavour: Flavour
) -> None:
    from datetime import UTC, datetime, timedelta

    import psycopg

    from ioc.api.lighting import night_window

    _, http = service
    a, b = night_window(datetime.now(UTC))
    week = timedelta(days=7)
    rows = []
    for k, start, kwh0 in ((0, a, 1000.0), (1, a - week, 900.0)):
        span = (b - a) if b - a > timedelta(minutes=2) else timedelta(minutes=2)
        for i in range(3):  # counter readings at the window's start, middle and end
            t = start + span * i / 2 - timedelta(seconds=1 if i == 2 else 0)
            rows.append((t, kwh0 + 10.0 * (1 + k) * i))
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        if flavour is Flavour.PLAIN:
            await conn.execute(
                "SELECT ioc_ensure_readings_partitions(%s, %s)", (a - week - week, b + week)
            )
        for t, v in rows:
            await conn.execute(
                "INSERT INTO readings (time, device_id, metric, value)"
                " VALUES (%s, 'vt-cab-01', 'energy_kwh', %s)",
                (t, v),
            )
    got = (await http.get("/api/v1/lighting/energy", headers=AUTH)).json()
    (cab,) = [c for c in got["cabinets"] if c["cabinet"] == "vt-cab-01"]
    if b - a > timedelta(minutes=2):  # right after 18:00 the window is too short to test
        assert cab["tonight_kwh"] == pytest.approx(20.0)
        assert cab["last_week_kwh"] == pytest.approx(40.0)
    assert got["from"].endswith("+07:00") and got["tonight_kwh"] is not None
    assert (await http.get("/api/v1/lighting/energy")).status_code == 401


async def test_site_lists_the_five_current_units_with_their_aliases(
    service: tuple[Runtime, httpx.AsyncClient],
) -> None:
    """Since 1 July 2025: five units of Cần Thơ city, each with its official code, its former
    wards as aliases and its outline (the union of theirs) as the map draws it."""
    _, http = service
    body = (await http.get("/api/v1/site", headers=AUTH)).json()
    units = {f["id"]: f for f in body["wards"]["features"]}
    assert {k: (u["properties"]["name"], u["properties"]["code"]) for k, u in units.items()} == {
        "phuong-vi-thanh": ("Phường Vị Thanh", "31321"),
        "phuong-vi-tan": ("Phường Vị Tân", "31333"),
        "xa-hoa-luu": ("Xã Hỏa Lựu", "31338"),
        "phuong-nga-bay": ("Phường Ngã Bảy", "31340"),
        "phuong-dai-thanh": ("Phường Đại Thành", "31411"),
    }
    vi_tan = units["phuong-vi-tan"]["properties"]
    assert vi_tan["aliases"] == ["phuong-4", "phuong-5", "vi-tan"]
    assert [f["name"] for f in vi_tan["former"]] == ["Phường IV", "Phường V", "Xã Vị Tân"]
    assert vi_tan["place"] == "phường Vị Tân, thành phố Cần Thơ"
    assert units["phuong-vi-tan"]["geometry"]["type"] == "Polygon"
    assert body["ward_aliases"]["tan-thanh"] == "phuong-dai-thanh"
    assert len(body["ward_aliases"]) == 14  # 15 former units; Ngã Bảy ward kept its id
    agencies = {a["id"]: a for a in body["agencies"]}
    assert agencies["civil-defence"]["aliases"] == ["pctt"]
    assert agencies["police-phuong-vi-tan"]["role"] == "police"


async def test_basemap_is_the_shipped_base_layer_and_the_citys_file(
    settings: Settings, tmp_path: Path
) -> None:
    city = tmp_path / "city.geojson"
    ring = [[105.47, 9.78], [105.48, 9.78], [105.48, 9.79], [105.47, 9.78]]
    water = {"type": "Feature", "properties": {"kind": "water", "name": "Hồ Búng Xáng"},
             "geometry": {"type": "Polygon", "coordinates": [ring]}}  # fmt: skip
    city.write_text(json.dumps({"type": "FeatureCollection", "features": [water]}), "utf-8")
    async with running_service(settings.model_copy(update={"basemap_file": city})) as (_, http):
        assert (await http.get("/api/v1/site/basemap")).status_code == 401
        body = (await http.get("/api/v1/site/basemap", headers=AUTH)).json()
        names = {f["properties"]["name"] for f in body["base"]["features"]}
        assert {"Kênh xáng Xà No", "Sông Cái Côn", "Quốc lộ 1A", "Quốc lộ 61C"} <= names
        assert {"Vị Thanh", "Ngã Bảy"} <= names and "public knowledge" in body["base"]["source"]
        assert body["city"]["features"] == [water]
        # a broken file answers with the file, the feature and what is wrong
        bad = {"type": "Feature", "geometry": {"type": "Point", "coordinates": [600, 9]}}
        city.write_text(json.dumps({"type": "FeatureCollection", "features": [bad]}), "utf-8")
        r = await http.get("/api/v1/site/basemap", headers=AUTH)
        assert r.status_code == 500 and "features[0]" in r.text and "lon/lat" in r.text, r.text


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("[1, 2", "not JSON"),
        ('{"type": "Feature"}', "FeatureCollection"),
        ('{"type": "FeatureCollection", "features": [{"type": "Feature", "geometry": '
         '{"type": "Circle", "coordinates": []}}]}', "features[0].geometry"),
        ('{"type": "FeatureCollection", "features": [{"type": "Feature", "geometry": '
         '{"type": "LineString", "coordinates": [[105.4]]}}]}', "[lon, lat]"),
    ],
)  # fmt: skip
def test_a_basemap_that_is_not_geojson_is_refused_naming_what(text: str, where: str) -> None:
    from ioc.api.basemap import BasemapError, parse_geojson

    with pytest.raises(BasemapError, match=re.escape(where)):
        parse_geojson(text, "city.geojson")
