"""The API's documentation offline (Swagger UI from the package, no other host named by any page
the service serves), the bearer scheme in OpenAPI, and the HTTP request metrics."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from html.parser import HTMLParser
from importlib import resources
from urllib.parse import urljoin, urlsplit

import fastapi.routing
import httpx
import pytest
from starlette.routing import BaseRoute, Mount

from ioc.api.auth import BEARER
from ioc.api.docs import ASSETS
from ioc.app.runtime import Runtime
from ioc.core.settings import Settings
from tests.conftest import TOKEN, eventually, running_service

AUTH = {"Authorization": f"Bearer {TOKEN}"}
SCHEME = BEARER.scheme_name  # bearerAuth
URL = re.compile(r"(?:https?:)?//([A-Za-z0-9.\-\[\]:]+)", re.IGNORECASE)
# XML namespace names in inline SVG (xmlns="http://www.w3.org/2000/svg") are identifiers that no
# browser fetches.
NAMESPACE = re.compile(r"""xmlns(?::\w+)?\s*=\s*["']http://www\.w3\.org/[^"']*["']""")


@pytest.fixture
async def service(settings: Settings) -> AsyncIterator[tuple[Runtime, httpx.AsyncClient]]:
    async with running_service(settings) as pair:
        yield pair


class _Refs(HTMLParser):
    """What a page makes the browser load: script src, link href, img src, iframe src."""

    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        wanted = {"script": "src", "link": "href", "img": "src", "iframe": "src"}.get(tag)
        for name, value in attrs:
            if name == wanted and value:
                self.refs.append(value)


def _get_routes(runtime: Runtime) -> list[tuple[str, BaseRoute]]:
    """(path, route) of every route of the app, those of included routers too."""
    from ioc.api import create_app

    app = create_app(runtime)
    # FastAPI ≥ 0.16x keeps included routers as branches (iter_route_contexts walks them);
    # older versions copy their routes into app.routes
    walk = getattr(fastapi.routing, "iter_route_contexts", None)
    if walk is None:
        return [(getattr(r, "path", ""), r) for r in app.routes]
    return [(rc.path or "", rc.original_route) for rc in walk(app.routes)]


def _html_pages(runtime: Runtime) -> list[str]:
    """Every GET path of the app that can answer a page: routes without parameters, the wall's
    files route at each of its HTML files."""
    paths: list[str] = []
    for path, route in _get_routes(runtime):
        if isinstance(route, Mount):
            continue  # assets (Swagger UI's scripts): checked as what the pages load
        if "GET" not in (getattr(route, "methods", None) or ()):
            continue
        if path == "/wall/{name:path}":
            wall = resources.files("dashboards").joinpath("wall")
            paths += ["/wall/"] + [f"/wall/{f.name}" for f in wall.iterdir()
                                   if f.name.endswith(".html")]  # fmt: skip
        elif "{" not in path:
            paths.append(path)
    return paths


async def test_no_page_the_service_serves_names_another_host(
    service: tuple[Runtime, httpx.AsyncClient],
) -> None:
    runtime, http = service
    own = urlsplit(str(http.base_url)).netloc
    pages = _html_pages(runtime)
    assert {"/docs", "/docs/oauth2-redirect", "/", "/wall/"} <= set(pages)
    scanned: list[str] = []
    foreign: list[tuple[str, str]] = []
    for path in pages:
        r = await http.get(path, headers=AUTH, follow_redirects=True)
        if r.status_code != 200 or not r.headers["content-type"].startswith("text/html"):
            continue
        scanned.append(path)
        text = NAMESPACE.sub("", r.text)
        foreign += [(path, m.group(0)) for m in URL.finditer(text) if m.group(1) != own]
        parser = _Refs()
        parser.feed(r.text)
        for ref in parser.refs:
            url = urljoin(str(r.url), ref)
            assert urlsplit(url).netloc == own, (path, ref)
            loaded = await http.get(url)
            assert loaded.status_code == 200, (path, ref, loaded.status_code)
    assert foreign == []
    assert {"/docs", "/docs/oauth2-redirect", "/", "/wall/"} <= set(scanned)
    # FastAPI's defaults (CDN) are gone, ReDoc too (it would load from a CDN as well)
    assert (await http.get("/redoc")).status_code == 404


async def test_swagger_ui_is_served_from_the_package_without_the_public_validator(
    service: tuple[Runtime, httpx.AsyncClient],
) -> None:
    _, http = service
    page = (await http.get("/docs")).text
    assert '"validatorUrl": null' in page  # Swagger UI would send the document to its validator
    js = await http.get("/docs/assets/swagger-ui-bundle.js")
    assert js.status_code == 200 and "javascript" in js.headers["content-type"]
    assert js.content == (ASSETS / "swagger-ui-bundle.js").read_bytes()
    assert "SwaggerUIBundle" in js.text
    css = await http.get("/docs/assets/swagger-ui.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    # the licence of what we redistribute travels with it
    assert "Apache License" in (ASSETS / "LICENSE").read_text(encoding="utf-8")
    assert (await http.get("/docs/assets/../../auth.py")).status_code == 404


async def test_openapi_declares_the_bearer_scheme_on_exactly_the_operations_that_need_it(
    service: tuple[Runtime, httpx.AsyncClient],
) -> None:
    _, http = service
    spec = (await http.get("/openapi.json")).json()
    assert spec["components"]["securitySchemes"][SCHEME] == {
        "type": "http",
        "scheme": "bearer",
        "description": spec["components"]["securitySchemes"][SCHEME]["description"],
    }
    secured, open_ = [], []
    for path, item in spec["paths"].items():
        for method, op in item.items():
            concrete = re.sub(r"\{[^}]+\}", "1", path)
            (secured if op.get("security") == [{SCHEME: []}] else open_).append(
                (method.upper(), concrete, path)
            )
    assert len(secured) > 40
    # what the document calls secured refuses a request without a token, as "Authorize" expects
    for method, concrete, path in secured:
        r = await http.request(method, concrete)
        assert r.status_code == 401, (method, path, r.status_code)
    # what it leaves open is open by design: liveness, the public CAP feed, Open311 (api_key)
    public = [
        p for _, _, p in open_ if p == "/healthz" or p.startswith(("/api/v1/cap/", "/open311/"))
    ]
    assert open_ and public == [p for _, _, p in open_], open_
    # the token Swagger UI sends after "Authorize" is the one the API takes
    r = await http.get("/api/v1/devices", headers=AUTH)
    assert r.status_code == 200


async def test_request_metrics_by_route_template_and_status_and_build_info(
    service: tuple[Runtime, httpx.AsyncClient],
) -> None:
    _, http = service

    async def samples() -> dict[str, float]:
        # the registry is the process's: other tests' requests count too, so compare deltas
        text = (await http.get("/metrics", headers=AUTH)).text
        return {
            line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("ioc_")
        }

    before = await samples()
    for device in ("vt-flood-01", "vt-flood-02", "no-such-device"):
        await http.get(f"/api/v1/devices/{device}", headers=AUTH)
    await http.get("/no/such/page")
    await http.get("/api/v1/devices")  # no token: 401
    after = await samples()

    def delta(sample: str) -> float:
        assert sample in after, f"no sample {sample}"
        return after[sample] - before.get(sample, 0.0)

    route = 'route="/api/v1/devices/{device_id}"'
    assert delta(f'ioc_http_requests_total{{method="GET",{route},status="200"}}') == 2
    assert delta(f'ioc_http_requests_total{{method="GET",{route},status="404"}}') == 1
    assert delta('ioc_http_requests_total{method="GET",route="/api/v1/devices",status="401"}') == 1
    assert delta('ioc_http_requests_total{method="GET",route="(unrouted)",status="404"}') == 1
    assert delta(f'ioc_http_request_duration_seconds_count{{method="GET",{route}}}') == 3
    assert not any("vt-flood-01" in s for s in after if s.startswith("ioc_http_"))
    build = [s for s, v in after.items() if s.startswith("ioc_build_info{") and v == 1]
    assert len(build) == 1, build
    assert re.search(r'commit="([0-9a-f]{40}|unknown)"', build[0]), build


async def test_feed_lag_is_the_age_of_the_newest_row_the_hub_read(
    service: tuple[Runtime, httpx.AsyncClient],
) -> None:
    """ioc_live_feed_lag_seconds (alert IocFeedLagging): a row committed two minutes before the
    hub reads it shows as two minutes of lag."""
    runtime, http = service
    async with runtime.pool.connection() as conn:
        await conn.execute(
            "INSERT INTO feed_events (time, type, payload)"
            " VALUES (now() - interval '120 seconds', 'kpi', '{}'::jsonb)"
        )
        await conn.execute("SELECT pg_notify('ioc_feed', '')")

    async def lag() -> float | None:
        text = (await http.get("/metrics", headers=AUTH)).text
        sample = re.search(r"^ioc_live_feed_lag_seconds (\S+)$", text, re.MULTILINE)
        assert sample is not None
        value = float(sample[1])
        return value if value >= 100 else None

    value = await eventually(lag, timeout=30)
    assert 100 <= value < 600
