"""The wall screen (/wall/) end to end in headless Chromium against a running service.

Debian's chromium, driven by Python playwright (``playwright install`` cannot download a browser
on the closed IOC network). Alerts are produced the real way: telemetry published over MQTT trips
a rule. Timeouts below are hang guards, never speed assertions. Screenshots go to test-artifacts/.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from ioc.app.runtime import Runtime
from ioc.core.settings import Settings
from tests.conftest import TOKEN, MqttPublisher, eventually, running_service
from tests.proxy import TcpProxy
from tests.test_alerting import FLOOD_RULES, GAUGE, publish_levels, rules_dir
from tests.wall_browser import ARTIFACTS, browser, chromium_endpoint, needs_chromium

pytestmark = needs_chromium
__all__ = ["browser", "chromium_endpoint"]  # fixtures, imported for pytest
AUTH = {"Authorization": f"Bearer {TOKEN}"}
WAIT_MS = 30_000  # hang guard for a condition the page should reach


@pytest.fixture
def wall_settings(settings: Settings, tmp_path: Path) -> Settings:
    return settings.model_copy(
        update={
            "rules_dir": rules_dir(tmp_path, FLOOD_RULES.replace("FOR", "0s")),
            "rules_tick_s": 3600.0,
        }
    )


@pytest.fixture
async def service(wall_settings: Settings) -> AsyncIterator[tuple[Runtime, httpx.AsyncClient]]:
    async with running_service(wall_settings) as pair:
        yield pair


async def open_wall(browser: Any, base: str, token: str, *, lang: str = "vi") -> Any:
    page = await browser.new_page(viewport={"width": 1920, "height": 1080})
    page.on("pageerror", lambda e: print("page error:", e))
    # The language is remembered in localStorage; start each test from a known one.
    await page.add_init_script(f"localStorage.setItem('ioc.lang', '{lang}')")
    await page.goto(f"{base}/wall/#token={token}")
    return page


async def shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / f"{name}.png"))


async def firing(http: httpx.AsyncClient) -> list[dict[str, Any]]:
    r = await http.get("/api/v1/alerts", params={"state": "firing"}, headers=AUTH)
    assert r.status_code == 200, r.text
    out: list[dict[str, Any]] = r.json()
    return out


# A slug id as the site file writes them (phuong-nga-bay, nb-cab-01, vt-flood-01, chieu-sang).
RAW_ID = re.compile(r"\b[a-z]+(?:-[a-z0-9]+)+\b")


async def site_ids(http: httpx.AsyncClient) -> set[str]:
    """Every id of the site a person could be shown instead of a name."""
    site = (await http.get("/api/v1/site", headers=AUTH)).json()
    ids = {c["id"] for c in site["cities"]} | {w["id"] for w in site["wards"]["features"]}
    ids |= {a["id"] for a in site["agencies"]} | {c["code"] for c in site["categories"]}
    ids |= {j["id"] for j in site["junctions"]}
    ids |= set(site["ward_aliases"])  # former wards' ids (phuong-5) are ids too
    ids |= {alias for a in site["agencies"] for alias in a.get("aliases", [])}
    devices = (await http.get("/api/v1/devices", params={"limit": 5000}, headers=AUTH)).json()
    return ids | {d["id"] for d in (devices["items"] if isinstance(devices, dict) else devices)}


def assert_no_raw_ids(text: str, ids: set[str], lang: str) -> None:
    shown = set(RAW_ID.findall(text))
    assert not shown & ids, f"ids shown where names belong: {sorted(shown & ids)}"
    if lang == "vi":  # Vietnamese has no hyphenated words: any slug is an id leaking through
        assert not shown, f"id-like words on the wall: {sorted(shown)}"


async def test_alert_from_mqtt_appears_is_acknowledged_and_language_switches(
    service: tuple[Runtime, httpx.AsyncClient], browser: Any, publisher: MqttPublisher,
    wall_settings: Settings,
) -> None:  # fmt: skip
    from playwright.async_api import expect

    _, http = service
    page = await open_wall(browser, str(http.base_url).rstrip("/"), TOKEN)
    await expect(page.locator("h1")).to_have_text("IOC Vị Thanh – Ngã Bảy")
    await expect(page.locator("#alertList .empty")).to_be_visible(timeout=WAIT_MS)

    publish_levels(publisher, wall_settings, [(time.time() - 1, 0.80)])
    critical = page.locator("#alertList li.sev-critical")
    await expect(critical).to_contain_text("BĐ III 0,80", timeout=WAIT_MS)
    # its QĐ 18/2021 risk level (the rule's risk: level 2), in the level's colour
    await expect(critical.locator(".pill.risk")).to_have_text("Rủi ro cấp 2")
    assert await critical.locator(".pill.risk").evaluate("e => e.style.background") != ""
    await expect(page.locator("#alertList li.sev-warning")).to_contain_text("BĐ II")
    # Severity first: the critical alert is on top.
    await expect(page.locator("#alertList li").first).to_have_class("alert sev-critical")
    # The gauge's marker turned red (the map is a canvas: ask its model).
    assert await page.evaluate(f"wall.map.devices.get('{GAUGE}').state") == "alert"
    await shot(page, "wall-alert-vi")

    (bd3,) = [a for a in await firing(http) if a["rule"] == "bd3"]
    assert bd3["acknowledged_at"] is None
    await critical.locator("button.act-ack").click()

    async def acknowledged() -> Any:
        r = await http.get(f"/api/v1/alerts/{bd3['id']}", headers=AUTH)
        return r.json()["acknowledged_at"]

    await eventually(acknowledged)
    await expect(critical).to_contain_text("đã tiếp nhận", timeout=WAIT_MS)
    await expect(critical.locator("button.act-ack")).to_have_count(0)

    # A critical alert opens its incident by itself (routing.yaml), so it offers no second one;
    # the warning gets one by hand, linked to it and shown in the incidents panel.
    await expect(page.locator("#incidents li")).to_have_count(1, timeout=WAIT_MS)
    await expect(critical.locator("button.act-incident")).to_have_count(0, timeout=WAIT_MS)
    (bd2,) = [a for a in await firing(http) if a["rule"] == "bd2"]
    await page.locator("#alertList li.sev-warning button.act-incident").click()
    await expect(page.locator("#incidents li")).to_have_count(2, timeout=WAIT_MS)
    r = await http.get("/api/v1/incidents", params={"open": "true"}, headers=AUTH)
    (manual,) = [i for i in r.json() if i["source_alert_id"] == bd2["id"]]
    assert manual["category"] == "ngap-nuoc"
    await expect(page.locator("#alertList li.sev-warning button.act-incident")).to_have_count(0)

    # Silence (2 h, this alert's rule on this device): the server marks it suppressed.
    await page.locator("#alertList li.sev-warning button.act-silence").click()

    async def silences() -> Any:
        return (await http.get("/api/v1/silences", headers=AUTH)).json()

    (silence,) = await eventually(silences)
    assert {(m["name"], m["value"]) for m in silence["matchers"]} == {
        ("alertname", "bd2"),
        ("device_id", GAUGE),
    }

    await page.locator("#lang").click()
    await expect(page.locator("h1")).to_have_text("Vị Thanh – Ngã Bảy IOC")
    await expect(page.locator("#alertBox h2")).to_contain_text("Active alerts")
    await expect(critical).to_contain_text("level III 0.80")
    await expect(critical).to_contain_text("acknowledged")
    await shot(page, "wall-alert-en")
    await page.locator("#lang").click()
    await expect(page.locator("#alertBox h2")).to_contain_text("Cảnh báo đang hoạt động")


async def test_cut_socket_shows_the_banner_and_the_missed_alert_arrives_on_resume(
    service: tuple[Runtime, httpx.AsyncClient], browser: Any, publisher: MqttPublisher,
    wall_settings: Settings,
) -> None:  # fmt: skip
    from playwright.async_api import expect

    runtime, http = service
    proxy = TcpProxy("127.0.0.1", runtime.http_port)
    await proxy.start()
    try:
        page = await open_wall(browser, f"http://127.0.0.1:{proxy.port}", TOKEN)
        await expect(page.locator("#alertList .empty")).to_be_visible(timeout=WAIT_MS)
        await page.wait_for_function("wall.state.feed && wall.state.feed.open", timeout=WAIT_MS)
        await expect(page.locator("#banner")).to_be_hidden()

        await proxy.stop()  # the socket is cut, and reconnecting is refused
        banner = page.locator("#banner")
        await expect(banner).to_be_visible(timeout=WAIT_MS)
        await expect(banner).to_contain_text("MẤT KẾT NỐI")
        assert await page.evaluate("document.body.classList.contains('stale')")
        await shot(page, "wall-disconnected")

        publish_levels(publisher, wall_settings, [(time.time() - 1, 0.70)])  # BĐ II only
        (bd2,) = await eventually(lambda: firing(http))
        await expect(page.locator("#alertList .empty")).to_be_visible()  # not yet: cut off

        await proxy.start()  # same port: the page's retry reconnects with since=<last seq>
        await expect(page.locator("#alertList li.sev-warning")).to_contain_text(
            "BĐ II 0,70", timeout=WAIT_MS
        )
        await expect(banner).to_be_hidden(timeout=WAIT_MS)
        # It came as a replayed feed frame, not from a REST reload.
        assert await page.evaluate(f"wall.state.alertSeq.has({bd2['id']})")
        assert not await page.evaluate("document.body.classList.contains('stale')")
    finally:
        await proxy.stop()


async def test_viewer_sees_no_buttons_and_agency_sees_its_incidents(
    service: tuple[Runtime, httpx.AsyncClient], browser: Any, publisher: MqttPublisher,
    wall_settings: Settings,
) -> None:  # fmt: skip
    from playwright.async_api import expect

    from ioc.storage import tokens

    runtime, http = service
    async with runtime.pool.connection() as conn:
        _, viewer = await tokens.create(conn, name="wall 2", role="viewer")
        _, agency = await tokens.create(conn, name="pctt desk", role="agency:pctt")
    base = str(http.base_url).rstrip("/")
    # A day of semi-diurnal tide under BĐ I, then a surge over BĐ III: the chart shows both.
    now = time.time()
    tide = [(now - 86_400 + 600 * i, 0.35 + 0.12 * math.sin(2 * math.pi * i * 600 / 44_712))
            for i in range(144)]  # fmt: skip
    publish_levels(publisher, wall_settings, [*tide, (now - 1, 0.80)])
    await eventually(lambda: firing(http))

    page = await open_wall(browser, base, viewer)
    await expect(page.locator("#alertList li.sev-critical")).to_be_visible(timeout=WAIT_MS)
    await expect(page.locator("#role")).to_contain_text("Người xem")  # the role by its name
    await expect(page.locator("#alertList button")).to_have_count(0)
    await shot(page, "wall-viewer")
    # Everything has loaded (KPIs answered).
    await expect(page.locator("#kpis .kpi")).to_have_count(4, timeout=WAIT_MS)
    await expect(page.locator("#water polyline.observed")).to_have_count(1, timeout=WAIT_MS)
    # Under each station's chart: its next predicted high water, decimal comma, against BĐ.
    from ioc.core.tides import TidePredictor

    hw_line = page.locator('#water .next-hw[data-station="vt-flood-01"]')
    await expect(hw_line).to_contain_text("Đỉnh triều kế tiếp", timeout=WAIT_MS)
    text = await hw_line.inner_text()
    assert re.fullmatch(
        r"Đỉnh triều kế tiếp \d\d:\d\d, \d+,\d\d m — (trên|dưới) BĐ I{1,3} \d+,\d\d m", text
    ), text
    view = TidePredictor.from_site(runtime.site).view("vt-flood-01")
    start = datetime.fromtimestamp(now - 120, UTC)
    highs = view.high_waters(start, start + timedelta(hours=30))[:2]
    # The API gives levels to the millimetre and the wall rounds them to the centimetre, so a
    # level like 0.4253 shows as 0,42 (0.425 → 0,42): compare to within that double rounding.
    shown = float(re.search(r"(\d+,\d\d) m —", text).group(1).replace(",", "."))  # type: ignore[union-attr]
    assert any(abs(shown - level) < 0.006 for _, level in highs), (text, highs)
    await shot(page, "wall-1920x1080")
    # The same grid on a 4K wall: everything scales with the viewport, nothing overflows.
    for width, height in ((3840, 2160), (1920, 1080)):
        await page.set_viewport_size({"width": width, "height": height})
        await page.wait_for_function(
            f"document.documentElement.scrollWidth <= {width}"
            f" && document.documentElement.scrollHeight <= {height}",
            timeout=WAIT_MS,
        )
    await page.set_viewport_size({"width": 3840, "height": 2160})
    await shot(page, "wall-3840x2160")

    # The agency sees its own incidents (polled over the agency API), not the wall.
    r = await http.post(
        "/api/v1/incidents",
        json={"category": "ngap-nuoc", "title": "Ngập tại trạm Vị Thanh", "city": "vi-thanh",
              "ward": "phuong-5", "agency": "pctt"},
        headers=AUTH,
    )  # fmt: skip
    assert r.status_code == 201, r.text
    # The wall sends only the alert's id (routing stays on the server); without one the
    # category is required.
    nocat = await http.post("/api/v1/incidents", json={"title": "x"}, headers=AUTH)
    assert nocat.status_code == 422 and "category" in nocat.text, nocat.text
    agency_page = await open_wall(browser, base, agency)
    await expect(agency_page.locator("#agencyList")).to_contain_text(
        "Ngập tại trạm Vị Thanh", timeout=WAIT_MS
    )
    await expect(agency_page.locator("#wall")).to_be_hidden()
    await shot(agency_page, "wall-agency")

    # Names, never ids: with alerts, the incident, every panel and the detail panels open, in
    # both languages, the page shows no id of the site; numbers in Vietnamese have a comma.
    incident_id = r.json()["id"]
    await expect(page.locator("#incidents")).to_contain_text("Ngập tại trạm", timeout=WAIT_MS)
    ids = await site_ids(http)
    for lang, decimal in (("vi", "0,80 m"), ("en", "0.80 m")):
        if await page.evaluate("document.documentElement.lang") != lang:
            await page.locator("#lang").click()
        await expect(page.locator("#water .value").first).to_contain_text(decimal)
        for kind, key in (("device", f"'{GAUGE}'"), ("incident", str(incident_id))):
            await page.evaluate(f"wall.pick('{kind}', {key})")
            await expect(page.locator("#detail")).to_be_visible()
            assert_no_raw_ids(await page.inner_text("body"), ids, lang)
    await page.evaluate(f"wall.pick('device', '{GAUGE}')")
    await expect(page.locator("#detail")).to_contain_text("Water level")  # metric by its name


async def test_wrong_token_shows_the_sign_in_form(
    service: tuple[Runtime, httpx.AsyncClient], browser: Any
) -> None:
    from playwright.async_api import expect

    _, http = service
    page = await open_wall(browser, str(http.base_url).rstrip("/"), "not-a-token")
    await expect(page.locator("#signin")).to_be_visible(timeout=WAIT_MS)
    await expect(page.locator("#signinError")).to_have_text("Mã truy cập không hợp lệ.")
    await page.locator("#tokenInput").fill(TOKEN)
    await page.locator("#signin button").click()
    await expect(page.locator("#role")).to_contain_text("admin", timeout=WAIT_MS)
    await expect(page.locator("#signin")).to_be_hidden()


async def test_a_silent_open_socket_shows_stale_and_clears_when_frames_flow(
    wall_settings: Settings, browser: Any
) -> None:
    """A half-open connection: the socket stays open but nothing arrives, not even heartbeats."""
    from playwright.async_api import expect

    settings = wall_settings.model_copy(update={"ws_heartbeat_s": 0.5})
    async with running_service(settings) as (runtime, _):
        proxy = TcpProxy("127.0.0.1", runtime.http_port)
        await proxy.start()
        try:
            page = await open_wall(browser, f"http://127.0.0.1:{proxy.port}", TOKEN, lang="en")
            await page.wait_for_function("wall.state.feed && wall.state.feed.open", timeout=WAIT_MS)
            banner = page.locator("#banner")
            await expect(banner).to_be_hidden()
            proxy.pause()
            await expect(banner).to_contain_text("STALE", timeout=WAIT_MS)
            assert await page.evaluate("wall.state.feed.open")  # not closed: only silent
            assert await page.evaluate("document.body.classList.contains('stale')")
            await shot(page, "wall-stale")
            proxy.resume()
            await expect(banner).to_be_hidden(timeout=WAIT_MS)
        finally:
            proxy.resume()
            await proxy.stop()


async def test_open_citizen_reports_are_their_own_layer_and_open_their_panel(
    service: tuple[Runtime, httpx.AsyncClient], browser: Any
) -> None:
    runtime, http = service
    from ioc.storage import tokens

    async with runtime.pool.connection() as conn:
        _, app_key = await tokens.create(conn, name="citizen app", role="open311")
    r = await http.post("/open311/v2/requests.json", data={
        "api_key": app_key, "service_code": "chieu-sang", "lat": "9.7845", "long": "105.4700",
        "description": "Đèn đường trước số 12 không sáng.",
    })  # fmt: skip
    assert r.status_code in (200, 201), r.text
    (created,) = r.json()
    errors: list[str] = []
    page = await open_wall(browser, str(http.base_url).rstrip("/"), TOKEN)
    page.on("pageerror", lambda e: errors.append(str(e)))

    async def drawn() -> bool:
        count = await page.evaluate("wall.map ? wall.map.reports.length : 0")
        return bool(count == 1)

    await eventually(drawn)
    rid = created.get("service_request_id") or created.get("token")
    # the page opens the report's panel as a click on its diamond would
    await page.evaluate(f"wall.pick('report', '{rid}')")
    from playwright.async_api import expect

    await expect(page.locator("#detail")).to_contain_text("Đèn đường trước số 12 không sáng.")
    # lighting per cabinet, with tonight's energy against last week's (no readings: dashes)
    await expect(page.locator("#lighting")).to_contain_text("kWh tối nay")
    assert errors == []


async def test_the_kpi_tiles_show_the_counts_each_rate_is_made_of(
    service: tuple[Runtime, httpx.AsyncClient], browser: Any
) -> None:
    """On time / due beside the on-time rate: a citizen's report still open past its deadline
    is due and late (docs/kpis.md), so one case fixed on time and one overdue read 50 %, 1/2 —
    not 1/1 (on time / finished) under a 50 % rate."""
    from playwright.async_api import expect

    runtime, http = service
    now = datetime.now(UTC)
    async with runtime.pool.connection() as conn:
        for status, resolved, deadline in (
            ("resolved", now - timedelta(minutes=1), now + timedelta(hours=1)),
            ("dispatched", None, now - timedelta(minutes=1)),
        ):
            await conn.execute(
                """INSERT INTO incidents (category, severity, status, title, city, ward,
                       agency_id, opened_at, dispatched_at, first_dispatched_at, resolved_at,
                       deadline_at, source)
                   VALUES ('chieu-sang', 'warning', %s, 'Đèn đường không sáng', 'vi-thanh',
                           'phuong-vi-tan', 'urban-works', %s, %s, %s, %s, %s, 'report')""",
                (status, now - timedelta(minutes=2), now - timedelta(minutes=2),
                 now - timedelta(minutes=2), resolved, deadline),
            )  # fmt: skip
    head = (await http.get("/api/v1/kpis", headers=AUTH)).json()["headline"]
    assert (head["on_time"], head["due"], head["finished"], head["late_open"]) == (1, 2, 1, 1)
    page = await open_wall(browser, str(http.base_url).rstrip("/"), TOKEN)
    on_time = page.locator("#kpis .kpi").nth(2)
    await expect(on_time).to_contain_text("50 %", timeout=WAIT_MS)
    await expect(on_time.locator(".dim")).to_contain_text("1/2 phản ánh")


async def test_the_maplibre_map_draws_devices_reads_a_pmtiles_basemap_and_opens_a_panel(
    wall_settings: Settings, browser: Any, tmp_path: Path
) -> None:
    from PIL import Image
    from playwright.async_api import expect

    from tests.test_wall_api import tiny_pmtiles

    city = tmp_path / "city.pmtiles"
    tiny_pmtiles(city, colour=(200, 30, 200))  # a colour nothing else on the map has
    settings = wall_settings.model_copy(update={"basemap_file": city})
    async with running_service(settings) as (_, http):
        base = str(http.base_url).rstrip("/")
        page = await open_wall(browser, base, TOKEN)
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        requests: list[str] = []
        page.on("request", lambda r: requests.append(r.url))
        ranges: list[tuple[int, str | None]] = []

        async def answered(r: Any) -> None:
            if r.url.endswith("/api/v1/site/basemap.pmtiles"):
                ranges.append((r.status, await r.request.header_value("range")))

        page.on("response", answered)
        await page.wait_for_function(
            "wall.map && wall.map.gl && wall.map.gl.loaded()"
            " && wall.map.gl.isSourceLoaded('devices') && wall.map.gl.isSourceLoaded('city-tiles')"
            " && wall.map.gl.querySourceFeatures('devices').length > 0",
            timeout=WAIT_MS,
        )
        await page.evaluate("new Promise((r) => { wall.map.gl.once('idle', r); wall.map.fit(); })")
        # The map's WebGL canvas has the city's tiles and the device markers on it.
        ARTIFACTS.mkdir(exist_ok=True)
        shot_path = ARTIFACTS / "wall-maplibre-map.png"
        await page.locator("#map").screenshot(path=str(shot_path))
        image = Image.open(shot_path).convert("RGB")
        pixels = [image.getpixel((x, y)) for y in range(image.height) for x in range(image.width)]
        tiles = sum(1 for r, g, b in pixels if r > 90 and g < 60 and b > 90)
        states = ((0x3D, 0xDC, 0x84), (0xFF, 0xB3, 0x40), (0xFF, 0x5D, 0x5D), (0x6B, 0x77, 0x85))
        markers = sum(
            1
            for px in pixels
            if any(max(map(abs, (px[0] - c[0], px[1] - c[1], px[2] - c[2]))) < 12 for c in states)
        )
        assert tiles > 1000 and markers > 0, (tiles, markers)
        # the PMTiles reader asked by range and was answered with parts
        assert ranges and all(status == 206 and rng for status, rng in ranges), ranges

        # A device marker is a feature of the map; a click on it opens its panel.
        device = await page.evaluate(
            """() => new Promise((done) => {
              const d = [...wall.state.devices.values()].find((d) => d.kind === 'lighting');
              wall.map.gl.once('idle', () => {
                const p = wall.map.gl.project([d.lon, d.lat]);
                const f = wall.map.gl.queryRenderedFeatures([p.x, p.y], { layers: ['devices'] });
                done({ x: p.x, y: p.y, id: f.length ? f[0].properties.id : null });
              });
              wall.map.gl.jumpTo({ center: [d.lon, d.lat], zoom: 17 });
            })"""
        )
        assert device["id"], device
        name = await page.evaluate(f"wall.state.devices.get('{device['id']}').name")
        box = await page.locator("#map").bounding_box()
        assert box is not None
        await page.mouse.click(box["x"] + device["x"], box["y"] + device["y"])
        await expect(page.locator("#detail")).to_be_visible(timeout=WAIT_MS)
        await expect(page.locator("#detail")).to_contain_text(name, timeout=WAIT_MS)
        await shot(page, "wall-maplibre-device")
        # Nothing was asked of another host (no tiles, glyphs or sprites from outside).
        own = urlsplit(base).netloc
        assert [u for u in requests if urlsplit(u).netloc not in (own, "")] == []
        assert errors == []


async def test_the_canvas_fallback_is_chosen_by_the_page_address(
    service: tuple[Runtime, httpx.AsyncClient], browser: Any
) -> None:
    """IOC_WALL_MAP=canvas or /wall/?map=canvas: the 2D-canvas map, the same model."""
    _, http = service
    page = await browser.new_page(viewport={"width": 1920, "height": 1080})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    await page.goto(f"{str(http.base_url).rstrip('/')}/wall/?map=canvas#token={TOKEN}")
    await page.wait_for_function("wall.map && wall.map.devices.size > 0", timeout=WAIT_MS)
    assert await page.evaluate("wall.map.gl === undefined && wall.map.canvas.tagName") == "CANVAS"
    # the choice outlives the token's removal from the address
    assert await page.evaluate("location.search") == "?map=canvas"
    assert errors == []
