"""How the wall looks on a flood evening, at 1920×1080 and 3840×2160, in Debian's Chromium.

The evening is played into the running service the real way (MQTT telemetry, the default pack's
BĐ and rain rules, the incident the critical alert opens): six hours of water rising past BĐ III
at Vị Thanh and to BĐ II at Ngã Bảy, heavy rain, slow junctions. Then:

- screenshots against reviewed reference images in tests/wall_reference/ (a share of differing
  pixels, not pixel-exact; values that follow the clock or the astronomical tide are masked);
- the alert list: no text wraps one word per line, a row's place stays on one line and what
  happened on at most two;
- no raw id of the site on the page where a name exists.

A changed look is reviewed, not waved through: run with IOC_UPDATE_WALL_REFERENCES=1, look at
the new images in tests/wall_reference/ and commit them with the change.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import yaml

from ioc.app.runtime import Runtime
from ioc.core.settings import Settings
from ioc.core.topics import device_topic
from ioc.rules.language import DEFAULT_PACK
from tests.conftest import TOKEN, MqttPublisher, eventually, running_service
from tests.test_wall_e2e import WAIT_MS, assert_no_raw_ids, site_ids
from tests.wall_browser import (
    ARTIFACTS,
    REFERENCES,
    browser,
    chromium_endpoint,
    image_difference,
    needs_chromium,
)

pytestmark = needs_chromium
__all__ = ["browser", "chromium_endpoint"]  # fixtures, imported for pytest

AUTH = {"Authorization": f"Bearer {TOKEN}"}
# Threshold rules only: the tide-aware ones depend on the day's astronomical tide, which would
# make the evening, and so the picture, different from one run to the next.
RULES = ("flood-bd1", "flood-bd2", "flood-bd3", "rain-heavy", "rain-very-heavy")
STEP_S, HOURS = 600, 6
# Share of pixels (at half size) allowed to differ: masked values aside, what moves between two
# runs is text antialiasing and sub-pixel placement; a panel moved or a row rewrapped is far more.
TOLERANCE = 0.02
# What follows the clock or the tide prediction of the day: hidden in the compared screenshots
# (visibility, not Playwright's mask: a mask also paints over elements scrolled out of their
# panel, on top of the panel below).
MASK = ["#clock", "#lastUpdate", ".alert .time", ".countdown", "#water svg text",
        "#water polyline.tide", "#water circle", ".next-hw", "#kpis .dim"]  # fmt: skip


@pytest.fixture
def evening_settings(settings: Settings, tmp_path: Path) -> Settings:
    pack = yaml.safe_load((DEFAULT_PACK / "default.yaml").read_text("utf-8"))
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "evening.yaml").write_text(
        yaml.safe_dump(
            {"rules": [r for r in pack["rules"] if r["id"] in RULES]}, allow_unicode=True
        ),
        "utf-8",
    )
    # stream clock: the rules' `for: 10m` runs on the readings' time, as in the demo's replay
    return settings.model_copy(update={"rules_dir": rules, "rules_clock": "stream"})


@pytest.fixture
async def service(evening_settings: Settings) -> AsyncIterator[tuple[Runtime, httpx.AsyncClient]]:
    async with running_service(evening_settings) as pair:
        yield pair


def _rise(i: int, n: int, start: float, end: float) -> float:
    """Flat for the first third, then a rise to ``end`` (a flood tide with rain on top)."""
    f = max(0.0, (i - n / 3) / (n - 1 - n / 3))
    return round(start + (end - start) * f**1.5, 3)


def play_evening(publisher: MqttPublisher, settings: Settings, end: float) -> None:
    prefix, n = settings.mqtt_topic_prefix, HOURS * 3600 // STEP_S + 1
    times = [end - (n - 1 - i) * STEP_S for i in range(n)]
    levels = {  # device: (city, start, end) — BĐ I/II/III 0.55/0.65/0.75 and 1.20/1.30/1.40 m
        "vt-flood-01": ("vi-thanh", 0.30, 0.81),
        "vt-flood-02": ("vi-thanh", 0.28, 0.58),
        "nb-flood-01": ("nga-bay", 0.85, 1.33),
        "nb-flood-02": ("nga-bay", 0.80, 1.05),
    }
    rain = {"vt-rain-01": ("vi-thanh", 38.0, 72.0), "nb-rain-01": ("nga-bay", 14.0, 31.0)}
    msgs: list[tuple[str, bytes]] = []
    for i, t in enumerate(times):
        for dev, (city, a, b) in levels.items():
            metrics = {"water_level_m": _rise(i, n, a, b)}
            msgs.append(
                (device_topic(prefix, city, "flood", dev, "telemetry"), _payload(t, metrics))
            )
        for dev, (city, peak, total) in rain.items():
            # a shower peaking two hours before the end; 24 h total rising to `total`
            rate = round(max(0.0, peak * (1 - abs(i - (n - 13)) / 8)), 1)
            day = round(total * i / (n - 1), 1)
            metrics = {"rain_rate_mm_h": rate, "rain_24h_mm": day}
            msgs.append(
                (device_topic(prefix, city, "rain", dev, "telemetry"), _payload(t, metrics))
            )
    slow = (("nb-tfd-01", "nga-bay", 14.0), ("vt-tfd-01", "vi-thanh", 22.0),
            ("nb-tfd-02", "nga-bay", 31.0), ("vt-tfd-02", "vi-thanh", 36.0))  # fmt: skip
    for dev, city, speed in slow:
        msgs.append(
            (device_topic(prefix, city, "traffic", dev, "telemetry"),
             _payload(end, {"speed_kmh": speed}))
        )  # fmt: skip
    publisher.publish_many(msgs)


def _payload(t: float, metrics: dict[str, float]) -> bytes:
    return orjson.dumps({"ts": int(t * 1000), "metrics": metrics})


async def firing(http: httpx.AsyncClient) -> list[dict[str, Any]]:
    r = await http.get("/api/v1/alerts", params={"state": "firing"}, headers=AUTH)
    assert r.status_code == 200, r.text
    out: list[dict[str, Any]] = r.json()
    return out


# Lines and words of each text in the alert list as laid out (a Range's client rects are one per
# line fragment).
LINES = """() => [...document.querySelectorAll('#alertList .alert-place, #alertList .alert-what')]
  .map((e) => {
    const r = document.createRange(); r.selectNodeContents(e);
    const tops = new Set([...r.getClientRects()].map((x) => Math.round(x.top)));
    // shown: a clamped text lays out more lines than its box shows
    const shown = Math.round(e.clientHeight / parseFloat(getComputedStyle(e).lineHeight));
    return { cls: e.className, text: e.innerText, lines: tops.size, shown,
             words: e.innerText.split(/\\s+/).filter(Boolean).length,
             clamped: e.scrollHeight > e.clientHeight + 1 };
  })"""


async def test_the_flood_evening_looks_as_reviewed_at_1080p_and_4k(
    service: tuple[Runtime, httpx.AsyncClient], browser: Any, publisher: MqttPublisher,
    evening_settings: Settings,
) -> None:  # fmt: skip
    from playwright.async_api import expect

    _, http = service
    end = (time.time() // STEP_S) * STEP_S - STEP_S
    play_evening(publisher, evening_settings, end)

    async def evening_is_in() -> bool:
        rules = {(a["rule"], a["device_id"]) for a in await firing(http)}
        incidents = (await http.get("/api/v1/incidents?open=true", headers=AUTH)).json()
        return {("flood-bd3", "vt-flood-01"), ("flood-bd2", "nb-flood-01"),
                ("rain-heavy", "vt-rain-01")} <= rules and len(incidents) >= 1  # fmt: skip

    await eventually(evening_is_in, timeout=60)
    expected_rows = len(await firing(http))

    page = await browser.new_page(viewport={"width": 1920, "height": 1080})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    await page.add_init_script("localStorage.setItem('ioc.lang', 'vi')")
    # the page's clock at the evening's end: "since", ages and the timeline's "now" hold still
    await page.clock.set_fixed_time(datetime.fromtimestamp(end + 60, UTC))
    await page.goto(f"{str(http.base_url).rstrip('/')}/wall/#token={TOKEN}")
    await expect(page.locator("#alertList li.alert")).to_have_count(expected_rows, timeout=WAIT_MS)
    await expect(page.locator("#kpis .kpi")).to_have_count(4, timeout=WAIT_MS)
    await expect(page.locator("#water polyline.observed")).to_have_count(4, timeout=WAIT_MS)
    await expect(page.locator("#incidents li")).not_to_have_count(0, timeout=WAIT_MS)
    await page.wait_for_function(
        "wall.map.basemap && wall.map.gauges && wall.map.gauges.length >= 4", timeout=WAIT_MS
    )
    # The map is MapLibre's, drawn: device markers and the base layer are features on screen,
    # the gauges' bars and the Vietnamese names are on it.
    await page.wait_for_function(
        "wall.map.gl && wall.map.gl.loaded() && wall.map.gl.queryRenderedFeatures("
        "{layers: ['clusters', 'devices']}).length > 0",
        timeout=WAIT_MS,
    )
    drawn = await page.evaluate(
        "wall.map.gl.queryRenderedFeatures({layers: ['base-line']}).map((f) => f.properties.name)"
    )
    assert {"Kênh xáng Xà No", "Sông Cái Côn", "Quốc lộ 1A"} <= set(drawn), drawn
    await expect(page.locator("#map .gauge")).to_have_count(4, timeout=WAIT_MS)
    await expect(page.locator("#map .map-label.town")).to_have_text(["Vị Thanh", "Ngã Bảy"])

    # The alert list reads from across the room: place on one line, what on at most two, and
    # never a column of single words.
    for row in await page.evaluate(LINES):
        assert row["shown"] <= (1 if "place" in row["cls"] else 2), row
        if row["words"] >= 4:
            assert row["words"] / row["lines"] >= 3, f"one word per line: {row}"
    critical = page.locator("#alertList li.sev-critical").first
    await expect(critical.locator(".alert-place")).to_have_text("Trạm thủy văn Vị Thanh")
    await expect(critical.locator(".alert-what")).to_contain_text("vượt báo động III (0,75 m)")

    # Names where they exist, never ids: every panel, in both languages.
    ids = await site_ids(http)
    for lang in ("vi", "en"):
        if await page.evaluate("document.documentElement.lang") != lang:
            await page.locator("#lang").click()
            await expect(page.locator("html")).to_have_attribute("lang", lang)
        assert_no_raw_ids(await page.inner_text("body"), ids, lang)
    await page.locator("#lang").click()
    await expect(page.locator("html")).to_have_attribute("lang", "vi")

    failures = []
    for width, height in ((1920, 1080), (3840, 2160)):
        await page.set_viewport_size({"width": width, "height": height})
        await page.wait_for_function(
            f"document.documentElement.scrollWidth <= {width}"
            f" && document.documentElement.scrollHeight <= {height}",
            timeout=WAIT_MS,
        )
        # the map refits to its new box on resize and draws at the next frame; once its tiles
        # are in, two frames later it is on screen
        await page.evaluate(
            "new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)))"
        )
        await page.wait_for_function("wall.map.gl.loaded()", timeout=WAIT_MS)
        await page.evaluate(
            "new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)))"
        )
        name = f"wall-evening-{width}x{height}.png"
        ARTIFACTS.mkdir(exist_ok=True)
        # as it looks (docs/img/wall.png, wall-4k.png), then without what moves, to compare
        await page.screenshot(path=str(ARTIFACTS / f"wall-evening-{width}x{height}-full.png"))
        hide = await page.add_style_tag(
            content=", ".join(MASK) + " { visibility: hidden !important; }"
        )
        shot = ARTIFACTS / name
        await page.screenshot(path=str(shot), animations="disabled")
        await hide.evaluate("e => e.remove()")
        reference = REFERENCES / name
        if os.environ.get("IOC_UPDATE_WALL_REFERENCES") == "1":
            REFERENCES.mkdir(exist_ok=True)
            shutil.copyfile(shot, reference)
            continue
        assert reference.exists(), f"no reference {reference}: see this module's docstring"
        diff = image_difference(shot, reference)
        if diff > TOLERANCE:
            failures.append(f"{name}: {diff:.1%} of pixels differ (> {TOLERANCE:.0%}); see {shot}")
    assert not failures, failures
    assert not errors, errors
