"""The wall map's background: the base layer shipped with the site (main canals and rivers,
national roads and town centres of Vị Thanh and Ngã Bảy, ``site_data/baselayer.geojson``, drawn
from public knowledge — its ``source`` says how) and, when the city supplies one, its own basemap
as a GeoJSON file (``IOC_BASEMAP_FILE``: survey lines, building blocks, water areas).

Both are GeoJSON FeatureCollections in lon/lat (RFC 7946) that the wall draws on its canvas
under the devices; nothing is fetched from outside the IOC. A file that is not one fails with
the file, the feature and what is wrong.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ioc.core.packaged import SITE_DATA

# A wall PC redraws every coordinate on each pan: a city file past these sizes wants tiles
# (docs/wall.md), not a bigger JSON answer.
MAX_BYTES = 20_000_000
MAX_POSITIONS = 500_000
GEOMETRIES = {"Point", "MultiPoint", "LineString", "MultiLineString", "Polygon", "MultiPolygon"}
_DEPTH = {"Point": 0, "MultiPoint": 1, "LineString": 1, "MultiLineString": 2, "Polygon": 2,
          "MultiPolygon": 3}  # fmt: skip


class BasemapError(ValueError):
    def __init__(self, source: str, where: str, message: str) -> None:
        super().__init__(f"{source}: {where}: {message}" if where else f"{source}: {message}")


@dataclass(frozen=True)
class Basemap:
    base: dict[str, Any]  # the shipped base layer
    city: dict[str, Any] | None  # the city's file, if configured

    def as_json(self) -> dict[str, Any]:
        return {"base": self.base, "city": self.city}


def shipped_base_layer() -> dict[str, Any]:
    text = (SITE_DATA / "baselayer.geojson").read_text("utf-8")
    return parse_geojson(text, "ioc/site_data/baselayer.geojson")


def load_city_basemap(path: Path) -> dict[str, Any]:
    name = f"IOC_BASEMAP_FILE {path}"
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise BasemapError(name, "", f"cannot read it ({exc.strerror})") from None
    if size > MAX_BYTES:
        raise BasemapError(name, "", f"{size:,} bytes, more than the {MAX_BYTES:,} allowed")
    return parse_geojson(path.read_text("utf-8"), name)


def load_basemap(city_file: Path | None) -> Basemap:
    return Basemap(shipped_base_layer(), load_city_basemap(city_file) if city_file else None)


def parse_geojson(text: str, source: str) -> dict[str, Any]:
    """A FeatureCollection whose geometries are well formed, in lon/lat range; else BasemapError."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BasemapError(source, f"line {exc.lineno}", f"not JSON ({exc.msg})") from None
    if not isinstance(doc, dict) or doc.get("type") != "FeatureCollection":
        raise BasemapError(source, "", "expected a GeoJSON FeatureCollection")
    features = doc.get("features")
    if not isinstance(features, list):
        raise BasemapError(source, "features", "expected a list")
    count = 0
    for i, f in enumerate(features):
        where = f"features[{i}]"
        if not isinstance(f, dict) or f.get("type") != "Feature":
            raise BasemapError(source, where, "expected a Feature")
        props = f.get("properties")
        if props is not None and not isinstance(props, dict):
            raise BasemapError(source, f"{where}.properties", "expected an object or null")
        g = f.get("geometry")
        if not isinstance(g, dict) or g.get("type") not in GEOMETRIES:
            raise BasemapError(source, f"{where}.geometry", f"expected one of {sorted(GEOMETRIES)}")
        count += _check_positions(g["coordinates"], _DEPTH[g["type"]], source, where)
        if count > MAX_POSITIONS:
            raise BasemapError(source, where, f"more than {MAX_POSITIONS:,} positions in all")
    return doc


def _check_positions(value: Any, depth: int, source: str, where: str) -> int:
    if depth == 0:
        if (
            not isinstance(value, list)
            or len(value) < 2
            or not all(isinstance(v, int | float) for v in value[:2])
        ):
            raise BasemapError(source, f"{where}.geometry", f"expected [lon, lat], got {value!r}")
        lon, lat = value[0], value[1]
        if not (-180 <= lon <= 180 and -90 <= lat <= 90):
            raise BasemapError(
                source, f"{where}.geometry", f"[{lon}, {lat}] is not lon/lat (EPSG:4326)"
            )
        return 1
    if not isinstance(value, list) or not value:
        raise BasemapError(source, f"{where}.geometry", "empty or malformed coordinates")
    return sum(_check_positions(v, depth - 1, source, where) for v in value)
