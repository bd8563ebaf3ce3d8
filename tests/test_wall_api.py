"""The wall screen's endpoints: /api/v1/site, /api/v1/whoami and the page's files at /wall/."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from ioc.app import Runtime
from ioc.settings import Settings
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
    assert (await http.get("/")).status_code == 200  # the first page stays
