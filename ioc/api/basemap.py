"""The wall map's background: the base layer shipped with the site (main canals and rivers,
national roads and town centres of Vị Thanh and Ngã Bảy, ``site_data/baselayer.geojson``, drawn
from public knowledge — its ``source`` says how) and, when the city supplies one, its own basemap
as a GeoJSON file (``IOC_BASEMAP_FILE``: survey lines, building blocks, water areas).

Both are GeoJSON FeatureCollections in lon/lat (RFC 7946) that the wall draws on its canvas
under the devices; nothing is fetched from outside the IOC. A file that is not one fails with
the file, the feature and what is wrong.
"""

from __future__ import annotations

import gzip
import json
import struct
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


# PMTiles v3 (github.com/protomaps/PMTiles, spec/v3/spec.md): a 127-byte little-endian header.
PMTILES_HEADER = struct.Struct("<7sB QQQQQQQQ QQQ BBBBBB iiii B ii")
PMTILES_TILE_TYPES = {1: "mvt", 2: "png", 3: "jpeg", 4: "webp", 5: "avif"}
PMTILES_URL = "/api/v1/site/basemap.pmtiles"


@dataclass(frozen=True)
class Basemap:
    base: dict[str, Any]  # the shipped base layer
    city: dict[str, Any] | None  # the city's GeoJSON file, if configured
    city_tiles: dict[str, Any] | None = None  # the city's PMTiles file: what the wall needs
    tiles_path: Path | None = None  # that file, served with range requests

    def as_json(self) -> dict[str, Any]:
        return {"base": self.base, "city": self.city, "city_tiles": self.city_tiles}


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
    base = shipped_base_layer()
    if city_file is None:
        return Basemap(base, None)
    suffix = city_file.suffix.lower()
    if suffix == ".pmtiles":
        return Basemap(base, None, read_pmtiles(city_file), city_file)
    if suffix not in (".geojson", ".json"):
        raise BasemapError(
            f"IOC_BASEMAP_FILE {city_file}", "", "expected a .geojson or a .pmtiles file"
        )
    return Basemap(base, load_city_basemap(city_file))


def read_pmtiles(path: Path) -> dict[str, Any]:
    """What the wall needs of a PMTiles v3 archive (tile type, zooms, bounds, vector layers),
    after checking its header and metadata; else BasemapError. The tiles are not read: the
    browser asks for them by range (any size: only the parts on screen travel)."""
    name = f"IOC_BASEMAP_FILE {path}"
    try:
        with path.open("rb") as f:
            size = path.stat().st_size
            head = f.read(PMTILES_HEADER.size)
            if len(head) < PMTILES_HEADER.size or head[:7] != b"PMTiles":
                raise BasemapError(name, "header", "not a PMTiles archive (no PMTiles magic)")
            h = PMTILES_HEADER.unpack(head)
            if h[1] != 3:
                raise BasemapError(name, "header", f"PMTiles version {h[1]}, expected 3")
            parts = ("root directory", "metadata", "leaf directories", "tile data")
            for i, what in enumerate(parts):
                if h[2 + 2 * i] + h[3 + 2 * i] > size:
                    raise BasemapError(name, "header", f"its {what} ends past the file's end")
            f.seek(h[4])
            raw = f.read(h[5])
    except OSError as exc:
        raise BasemapError(name, "", f"cannot read it ({exc.strerror})") from None
    internal, tile_type, minzoom, maxzoom = h[14], h[16], h[17], h[18]
    if tile_type not in PMTILES_TILE_TYPES:
        raise BasemapError(name, "header", f"tile type {tile_type}, expected one of "
                           f"{', '.join(PMTILES_TILE_TYPES.values())}")  # fmt: skip
    if internal not in (1, 2):
        raise BasemapError(name, "header", f"internal compression {internal}: the wall's "
                           "reader takes none (1) or gzip (2)")  # fmt: skip
    if not 0 <= minzoom <= maxzoom <= 30:
        raise BasemapError(name, "header", f"zooms {minzoom}–{maxzoom} out of order or range")
    bounds = [v / 1e7 for v in h[19:23]]
    if not (-180 <= bounds[0] <= bounds[2] <= 180 and -90 <= bounds[1] <= bounds[3] <= 90):
        raise BasemapError(name, "header", f"bounds {bounds} are not lon/lat (EPSG:4326)")
    try:
        meta = json.loads(gzip.decompress(raw) if internal == 2 else raw) if raw else {}
    except (OSError, ValueError) as exc:
        raise BasemapError(name, "metadata", f"not JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise BasemapError(name, "metadata", "expected a JSON object")
    layers: list[str] = []
    if tile_type == 1:
        vector = meta.get("vector_layers")
        if not isinstance(vector, list) or not vector:
            raise BasemapError(name, "metadata.vector_layers", "expected the list of the "
                               "tiles' layers (the wall draws each of them)")  # fmt: skip
        for i, layer in enumerate(vector):
            if not isinstance(layer, dict) or not isinstance(layer.get("id"), str):
                raise BasemapError(name, f"metadata.vector_layers[{i}]", "expected {id: name}")
            layers.append(layer["id"])
    return {"url": PMTILES_URL, "tile_type": PMTILES_TILE_TYPES[tile_type], "layers": layers,
            "minzoom": minzoom, "maxzoom": maxzoom, "bounds": bounds,
            "attribution": meta.get("attribution") if isinstance(meta.get("attribution"), str)
            else None}  # fmt: skip


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
