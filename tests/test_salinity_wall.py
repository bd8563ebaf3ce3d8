"""The wall's salinity panel in headless Chromium (same harness as tests/test_wall_e2e.py): a
reading over MQTT shows against its station's thresholds, with the low-water advisory of the
salinity alert it opened."""

from __future__ import annotations

import shutil
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from ioc.core.settings import Settings
from ioc.core.topics import device_topic
from ioc.rules.language import DEFAULT_PACK
from tests.conftest import TOKEN, MqttPublisher, running_service
from tests.test_salinity_live import AUTH
from tests.test_wall_e2e import WAIT_MS, open_wall, shot
from tests.wall_browser import CHROMIUM, browser, chromium_endpoint

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium")
__all__ = ["browser", "chromium_endpoint"]  # the fixture, imported for pytest


async def test_salinity_panel_shows_the_latest_value_against_the_thresholds(
    settings: Settings, tmp_path: Path, browser: Any, publisher: MqttPublisher
) -> None:
    from playwright.async_api import expect

    rules = tmp_path / "rules"
    rules.mkdir()
    shutil.copy(DEFAULT_PACK / "salinity.yaml", rules / "salinity.yaml")
    s = settings.model_copy(update={"rules_dir": rules, "rules_tick_s": 3600.0})
    async with running_service(s) as (_, http):
        page = await open_wall(browser, str(http.base_url).rstrip("/"), TOKEN)
        await expect(page.locator("#alertList .empty")).to_be_visible(timeout=WAIT_MS)
        ts = int((time.time() - 1) * 1000)
        prefix = s.mqtt_topic_prefix
        publisher.publish_many(
            [
                (
                    device_topic(prefix, "nga-bay", "salinity", dev, "telemetry"),
                    orjson.dumps({"ts": ts, "metrics": {"salinity_ppt": v}}),
                )
                for dev, v in (("nb-sal-01", 1.18), ("nb-sal-02", 0.21))
            ]
        )
        panel = page.locator("#salinity")
        over = panel.locator("tr", has_text="Cái Côn")
        await expect(over).to_contain_text("1,18 ‰", timeout=WAIT_MS)
        await expect(over).to_have_class("warm")
        await expect(over).to_contain_text("lúa")  # the rice limit it is over
        # its (pending) rice alert's advisory: the next low water, local time
        r = await http.get("/api/v1/alerts", params={"state": "pending"}, headers=AUTH)
        (rice,) = [a for a in r.json() if a["rule"] == "salinity-rice"]
        low = datetime.fromisoformat(rice["annotations"]["next_low_water"])
        await expect(over).to_contain_text(f"Lấy nước ~{low:%H:%M %d/%m}", timeout=WAIT_MS)
        fresh = panel.locator("tr", has_text="Nhà máy nước Ngã Bảy")
        await expect(fresh).to_contain_text("0,21 ‰")
        await expect(fresh).to_contain_text("dưới ngưỡng")
        await expect(fresh).to_contain_text("nước sinh hoạt 0,5")  # a plant: domestic limit
        await expect(page.locator("#salinity").locator("xpath=..").locator("h2")).to_have_text(
            "Độ mặn"
        )
        await shot(page, "wall-salinity-vi")
