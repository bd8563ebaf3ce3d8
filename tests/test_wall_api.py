"""The wall screen's endpoints: /api/v1/site, /api/v1/whoami and the page's files at /wall/."""

from __future__ import annotations

import gzip
import io
import json
import re
import struct
from collections.abc import AsyncIterator
from importlib import resources
from pathlib import Path
from urllib.parse import urlsplit

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
    for name in ("main.js", "feed.js", "map.js", "glmap.js", "alerts.js", "panels.js", "i18n.js",
                 "api.js", "dom.js"):  # fmt: skip
        r = await http.get(f"/wall/{name}")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/javascript")
        # Nothing from outside the closed network (the SVG namespace is a name, not a fetch).
        text = r.text.replace('"http://www.w3.org/2000/svg"', "")
        assert "http://" not in text and "https://" not in text, name
        assert all(line.split(" from ")[1].startswith('"./') for line in text.splitlines()
                   if line.startswith("import ")), name  # fmt: skip
    assert (await http.get("/wall/wall.css")).headers["content-type"].startswith("text/css")
    for bad in ("__init__.py", "..%2F__init__.py", "nope.js", ".hidden.js", "vendor/SOURCE.md",
                "vendor/..%2Fmain.js", "other/main.js", "vendor/x/maplibre-gl.mjs"):  # fmt: skip
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


# Hosts the vendored libraries name without the wall ever fetching them (links in MapLibre's logo
# and error messages, a placeholder base URL, XML namespace names, comments, the origin
# "resource://android" its workers' messages may come from): dashboards/wall/vendor/SOURCE.md.
# Any other host in a file the wall serves fails.
VENDOR_HOSTS = {"maplibre.org", "wiki.openstreetmap.org", "maplibre.invalid", "www.w3.org",
                "github.com", "android"}  # fmt: skip
SVG_NAMESPACE = '"http://www.w3.org/2000/svg"'  # a name in dom.js, not a fetch


async def test_no_file_the_wall_serves_names_another_host_but_the_vendored_links(
    service: tuple[Runtime, httpx.AsyncClient],
) -> None:
    """tests/test_http_docs.py scans the pages; this follows the wall's page into what it loads:
    its stylesheets and scripts, and every ES module they import, the vendored MapLibre too."""
    from tests.test_http_docs import URL

    _, http = service
    page = (await http.get("/wall/")).text
    todo = re.findall(r'(?:src|href)="([^"]+)"', page)
    seen: set[str] = set()
    foreign: list[tuple[str, str]] = []
    while todo:
        ref = todo.pop()
        if ref in seen:
            continue
        seen.add(ref)
        r = await http.get(f"/wall/{ref}")
        assert r.status_code == 200, (ref, r.status_code)
        hosts = {m.group(1) for m in URL.finditer(r.text.replace(SVG_NAMESPACE, ""))} - {""}
        allowed = VENDOR_HOSTS if ref.startswith("vendor/") else set()
        foreign += [(ref, h) for h in hosts if h not in allowed]
        folder = ref.rpartition("/")[0]
        for imported in re.findall(r'(?:^|\n)import[^"\n]*from "\./([^"]+)"', r.text):
            todo.append(f"{folder}/{imported}" if folder else imported)
        if ref == "vendor/maplibre-gl.mjs":  # it starts its workers from this file
            todo.append("vendor/maplibre-gl-worker.mjs")
    assert {"main.js", "glmap.js", "map.js", "vendor/maplibre-gl.mjs",
            "vendor/maplibre-gl-worker.mjs", "vendor/pmtiles.js",
            "vendor/maplibre-gl.css"} <= seen  # fmt: skip
    assert foreign == []
    # the package ships every vendored file (pyproject package-data) and its licence
    vendor = resources.files("dashboards").joinpath("wall", "vendor")
    shipped = {f.name for f in vendor.iterdir()}
    assert {"LICENSE-maplibre-gl.txt", "SOURCE.md"} <= shipped
    assert "maplibre-gl 6.20.0" in vendor.joinpath("SOURCE.md").read_text("utf-8")


def tiny_pmtiles(path: Path, *, colour: tuple[int, int, int] = (40, 90, 140)) -> bytes:
    """A PMTiles v3 archive of one raster tile (z0, a PNG of one colour) over Hậu Giang, written
    by hand from the spec (github.com/protomaps/PMTiles, spec/v3/spec.md); returns its tile."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (256, 256), colour).save(buf, "PNG")
    tile = buf.getvalue()

    def varint(n: int) -> bytes:
        out = bytearray()
        while n >= 0x80:
            out.append(n & 0x7F | 0x80)
            n >>= 7
        return bytes([*out, n])

    # one entry: tile id 0 (delta 0), run length 1, its length, offset 0 (written as 0 + 1)
    # (directories and metadata gzip-compressed: the header's internal compression 2)
    root = gzip.compress(varint(1) + varint(0) + varint(1) + varint(len(tile)) + varint(1))
    meta = gzip.compress(json.dumps({"name": "test", "attribution": "thử nghiệm"}).encode())
    root_off, meta_off = 127, 127 + len(root)
    data_off = meta_off + len(meta)
    header = struct.pack(
        "<7sB QQQQQQQQ QQQ BBBBBB iiii B ii",
        b"PMTiles", 3, root_off, len(root), meta_off, len(meta), data_off, 0, data_off, len(tile),
        1, 1, 1, 1, 2, 1, 2, 0, 0,  # clustered, gzip metadata, tiles uncompressed, PNG, z0–z0
        int(105.3e7), int(9.6e7), int(106.0e7), int(10.1e7), 0, int(105.6e7), int(9.8e7),
    )  # fmt: skip
    path.write_bytes(header + root + meta + tile)
    return tile


async def test_a_pmtiles_basemap_is_described_and_served_by_range(
    settings: Settings, tmp_path: Path
) -> None:
    city = tmp_path / "city.pmtiles"
    tile = tiny_pmtiles(city)
    size = city.stat().st_size
    async with running_service(settings.model_copy(update={"basemap_file": city})) as (_, http):
        body = (await http.get("/api/v1/site/basemap", headers=AUTH)).json()
        assert body["city"] is None and body["renderer"] == "maplibre"
        tiles = body["city_tiles"]
        assert tiles["tile_type"] == "png" and tiles["url"] == "/api/v1/site/basemap.pmtiles"
        assert tiles["bounds"] == [105.3, 9.6, 106.0, 10.1] and tiles["attribution"] == "thử nghiệm"
        assert urlsplit(tiles["url"]).netloc == ""  # on the IOC itself
        assert (await http.get(tiles["url"])).status_code == 401
        # the PMTiles reader asks for the header and directories first, then a tile, by range
        r = await http.get(tiles["url"], headers={**AUTH, "Range": "bytes=0-126"})
        assert r.status_code == 206 and r.content[:7] == b"PMTiles" and len(r.content) == 127
        assert r.headers["content-range"] == f"bytes 0-126/{size}"
        r = await http.get(tiles["url"], headers={**AUTH, "Range": f"bytes={size - len(tile)}-"})
        assert r.status_code == 206 and r.content == tile
        whole = await http.get(tiles["url"], headers=AUTH)
        assert whole.status_code == 200 and whole.headers["accept-ranges"] == "bytes"
    # with a GeoJSON basemap (or none) there is no archive to read
    async with running_service(settings) as (_, http):
        r = await http.get("/api/v1/site/basemap.pmtiles", headers=AUTH)
        assert r.status_code == 404 and "IOC_BASEMAP_FILE" in r.text


async def test_a_bad_basemap_file_is_refused_naming_the_file_and_what(
    settings: Settings, tmp_path: Path
) -> None:
    bad = tmp_path / "city.pmtiles"
    bad.write_bytes(b"SQLite format 3\x00" + bytes(200))  # an MBTiles file renamed
    async with running_service(settings.model_copy(update={"basemap_file": bad})) as (_, http):
        for url in ("/api/v1/site/basemap", "/api/v1/site/basemap.pmtiles"):
            r = await http.get(url, headers=AUTH)
            assert r.status_code == 500, r.text
            assert str(bad) in r.text and "not a PMTiles archive" in r.text, r.text


def _pmtiles_with(path: Path, **change: int) -> None:
    tiny_pmtiles(path)
    head = list(struct.unpack("<7sB QQQQQQQQ QQQ BBBBBB iiii B ii", path.read_bytes()[:127]))
    fields = {"version": 1, "meta_len": 5, "internal": 14, "tile_type": 16, "min_lon": 19}
    for name, value in change.items():
        head[fields[name]] = value
    packed = struct.pack("<7sB QQQQQQQQ QQQ BBBBBB iiii B ii", *head)
    path.write_bytes(packed + path.read_bytes()[127:])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"version": 2}, "PMTiles version 2, expected 3"),
        ({"meta_len": 10_000}, "its metadata ends past the file's end"),
        ({"internal": 3}, "internal compression 3"),
        ({"tile_type": 9}, "tile type 9"),
        ({"min_lon": int(-200e7)}, "not lon/lat"),
    ],
)
def test_a_pmtiles_file_that_is_wrong_is_refused_naming_what(
    tmp_path: Path, change: dict[str, int], message: str
) -> None:
    from ioc.api.basemap import BasemapError, load_basemap

    path = tmp_path / "city.pmtiles"
    _pmtiles_with(path, **change)
    with pytest.raises(BasemapError, match=re.escape(message)) as err:
        load_basemap(path)
    assert str(path) in str(err.value)
    other = tmp_path / "city.mbtiles"
    other.write_bytes(b"")
    with pytest.raises(BasemapError, match=r"expected a \.geojson or a \.pmtiles file"):
        load_basemap(other)
