"""What the wall screen needs besides the feed: the site map (/api/v1/site), who is signed in
(/api/v1/whoami), and the page itself (/wall/, shipped as package data in ``dashboards``).

The map is drawn from the site file's ward outlines, so the page needs no tile service (the IOC
network is closed); BĐ I/II/III levels come with it so the water-level charts can draw their lines.
"""

from __future__ import annotations

from importlib import resources
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import FileResponse, RedirectResponse, Response

from ioc.api.auth import Caller, authenticate, require_viewer
from ioc.api.basemap import Basemap, BasemapError, load_basemap
from ioc.api.context import runtime_of
from ioc.core.names import junction_names

router = APIRouter(tags=["site"])

# The page's files: a fixed allow-list by suffix, so nothing else in the package can be fetched.
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",  # the vendored MapLibre (vendor/SOURCE.md)
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}


@router.get("/api/v1/whoami")
async def whoami(caller: Annotated[Caller, Depends(authenticate)]) -> dict[str, Any]:
    """The caller's role: the wall screen shows action buttons only to those who may act."""
    return {
        "name": caller.name,
        "role": caller.role,
        "agency": caller.agency,
        "can_act": caller.role in ("admin", "operator"),
    }


@router.get("/api/v1/site", dependencies=[Depends(require_viewer)])
async def site(request: Request) -> dict[str, Any]:
    """Cities and the current commune-level units with their outlines (GeoJSON
    FeatureCollection, lon/lat), official codes and aliases (the former wards each absorbed),
    flood stations' alarm levels, junction names, agencies and incident categories."""
    runtime = runtime_of(request)
    s = runtime.site
    wards = [
        {
            "type": "Feature",
            "id": w.id,
            "properties": {
                "city": c.id,
                "name": w.name,
                "type": w.type,
                "code": w.code,
                "approximate": w.approximate,
                "aliases": list(w.aliases),
                "former": [{"id": f.id, "name": f.name, "type": f.type} for f in w.former],
                "place": s.place_name(w.id),
            },
            "geometry": {"type": "Polygon", "coordinates": [[list(p) for p in w.outline]]},
        }
        for c in s.cities
        for w in c.wards
    ]
    return {
        "name": s.name,
        "timezone": s.timezone,
        "admin_parent": s.admin_parent,
        "cities": [{"id": c.id, "name": c.name, "lat": c.lat, "lon": c.lon} for c in s.cities],
        "wards": {"type": "FeatureCollection", "features": wards},
        # former ward id → current unit id, so a client can resolve ids stored before July 2025
        "ward_aliases": {alias: w.id for alias, w in s.ward_aliases.items()},
        "stations": [
            {
                "station": key,
                "name": lv.name,
                "river": lv.river,
                "bd1": lv.bd1,
                "bd2": lv.bd2,
                "bd3": lv.bd3,
                "illustrative": sorted(lv.illustrative),
            }
            for key, lv in s.alarm_levels.items()
        ],
        # junctions by name: traffic devices carry only the junction's id
        "junctions": [{"id": k, "name": v} for k, v in sorted(junction_names(s).items())],
        "agencies": [
            {
                "id": a.id,
                "name_vi": a.name_vi,
                "name_en": a.name_en,
                "domains": list(a.domains),
                "ward": a.ward,
                "role": a.role,
                "aliases": list(a.aliases),
            }
            for a in s.agencies
        ],
        "categories": [
            {
                "code": c.code,
                "name_vi": c.name_vi,
                "name_en": c.name_en,
                "alert_domains": list(c.alert_domains),
            }
            for c in runtime.routing.categories
        ],
    }


# One entry: the basemap of the configured file as it was when last read (by its mtime), so a
# city that replaces the file is seen on the next page load without a restart.
_basemap: dict[tuple[str, float], Basemap] = {}


def _current_basemap(request: Request) -> Basemap:
    path = runtime_of(request).settings.basemap_file
    try:
        key = (str(path), path.stat().st_mtime if path else 0.0)
    except OSError as exc:
        detail = f"IOC_BASEMAP_FILE {path}: cannot read it ({exc.strerror})"
        raise HTTPException(500, detail) from None
    if key not in _basemap:
        try:
            loaded = load_basemap(path)
        except BasemapError as exc:
            raise HTTPException(500, str(exc)) from None
        _basemap.clear()
        _basemap[key] = loaded
    return _basemap[key]


@router.get("/api/v1/site/basemap", dependencies=[Depends(require_viewer)])
async def basemap(request: Request) -> dict[str, Any]:
    """The wall map's background as GeoJSON (lon/lat): ``base``, the shipped base layer (main
    canals and rivers, national roads, town centres; its ``source`` says how it was drawn), and
    the city's own file from IOC_BASEMAP_FILE: ``city`` when it is GeoJSON, ``city_tiles`` when
    it is PMTiles (its tile type, zooms, bounds, vector layers and the URL of the file, read by
    range requests); both null when unset. ``renderer``: the wall's map (IOC_WALL_MAP)."""
    out = _current_basemap(request).as_json()
    out["renderer"] = runtime_of(request).settings.wall_map
    return out


@router.get("/api/v1/site/basemap.pmtiles", dependencies=[Depends(require_viewer)])
async def basemap_tiles(request: Request) -> FileResponse:
    """The city's PMTiles basemap file itself, answering HTTP Range requests (206) as the
    PMTiles reader needs: the wall fetches its header, directories and the tiles on screen."""
    loaded = _current_basemap(request)
    if loaded.tiles_path is None:
        raise HTTPException(404, "IOC_BASEMAP_FILE is not a .pmtiles file")
    return FileResponse(
        loaded.tiles_path, media_type="application/vnd.pmtiles",
        headers={"Cache-Control": "no-cache"},
    )  # fmt: skip


@router.get("/wall", include_in_schema=False)
async def wall_root() -> RedirectResponse:
    return RedirectResponse("/wall/", status_code=307)


@router.get("/wall/{name:path}", include_in_schema=False)
async def wall_file(name: str = "") -> Response:
    """The page and its modules; public like / (the token is entered on the page)."""
    name = name or "index.html"
    suffix = "." + name.rsplit(".", 1)[-1] if "." in name else ""
    # The page's flat directory and its vendor/ (MapLibre, pmtiles): no "..", no other sub-paths,
    # known suffixes.
    folder, _, leaf = name.rpartition("/")
    if folder not in ("", "vendor") or leaf.startswith(".") or suffix not in _TYPES:
        raise HTTPException(404, f"no such file: {name}")
    item = resources.files("dashboards").joinpath("wall", *name.split("/"))
    if not item.is_file():
        raise HTTPException(404, f"no such file: {name}")
    # no-cache: a new release is picked up on reload, revalidated, not stale for a shift.
    return Response(
        item.read_bytes(), media_type=_TYPES[suffix], headers={"Cache-Control": "no-cache"}
    )
