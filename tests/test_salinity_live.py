"""End to end: a salinity reading published over MQTT to the real broker is stored, the shipped
salinity rule fires after its `for`, and the alert — with its low-water advisory — reaches a
/ws client and the REST API; the reading is in the readings API."""

from __future__ import annotations

import shutil
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from ioc.core.settings import Settings
from ioc.core.topics import device_topic
from ioc.rules.language import DEFAULT_PACK
from tests.conftest import TOKEN, MqttPublisher, eventually, running_service

AUTH = {"Authorization": f"Bearer {TOKEN}"}
STATION = "nb-sal-01"  # sông Cái Côn – Ngã Bảy (site file); rice limit 1‰
MIN = 60.0


async def test_salinity_over_mqtt_fires_the_rice_rule_and_reaches_the_websocket(
    settings: Settings, tmp_path: Path, publisher: MqttPublisher
) -> None:
    from tests.test_live import Client

    s = _with_salinity_pack(settings, tmp_path)
    async with running_service(s) as (runtime, http):
        assert runtime.rules is not None
        client = await Client.open(runtime, types="alert,readings", city="nga-bay")
        try:
            await eventually(lambda: _has(client, "hello"))
            now = time.time()
            topic = device_topic(s.mqtt_topic_prefix, "nga-bay", "salinity", STATION, "telemetry")
            body = {"ts": int((now - 1) * 1000), "metrics": {"salinity_ppt": 1.18}}
            publisher.publish_many([(topic, orjson.dumps(body))])

            async def rice(state: str) -> list[dict[str, Any]]:
                return [
                    f for f in client.of("alert")
                    if f["data"]["rule"] == "salinity-rice" and f["data"]["state"] == state
                ]  # fmt: skip

            (pending,) = await eventually(lambda: rice("pending"))
            assert pending["data"]["device_id"] == STATION
            # stored: the reading is in the readings API
            window = {
                "metric": "salinity_ppt",
                "from": datetime.fromtimestamp(now - 600, UTC).isoformat(),
                "to": datetime.fromtimestamp(now + 60, UTC).isoformat(),
            }
            r = await http.get(f"/api/v1/devices/{STATION}/readings", params=window, headers=AUTH)
            assert r.status_code == 200, r.text
            assert [p["value"] for p in r.json()["points"]] == [1.18]

            await runtime.rules.tick(now - 1 + 10 * MIN)  # the rule's `for: 10m` has passed
            (firing,) = await eventually(lambda: rice("firing"))
            data = firing["data"]
            assert data["value"] == 1.18
            assert data["labels"]["agency"] == "agriculture-environment"
            assert data["labels"]["domain"] == "salinity"
            assert "1,18‰" in data["annotations"]["summary_vi"]  # decimal comma in vi
            # the advisory: the next low water at the station, in +07:00, after the reading
            low = datetime.fromisoformat(data["annotations"]["next_low_water"])
            assert low.utcoffset() == timedelta(hours=7)
            assert now - 1 < low.timestamp() < now + 14 * 3600
            assert "triều xuống" in data["annotations"]["advice_vi"]

            r = await http.get("/api/v1/alerts", params={"state": "firing"}, headers=AUTH)
            assert r.status_code == 200, r.text
            (alert,) = [a for a in r.json() if a["rule"] == "salinity-rice"]
            assert alert["annotations"]["next_low_water"] == data["annotations"]["next_low_water"]
        finally:
            await client.close()


def _with_salinity_pack(settings: Settings, tmp_path: Path) -> Settings:
    """The service with the shipped salinity pack alone, its clock ticking rarely."""
    rules = tmp_path / "rules"
    rules.mkdir()
    shutil.copy(DEFAULT_PACK / "salinity.yaml", rules / "salinity.yaml")
    return settings.model_copy(update={"rules_dir": rules, "rules_tick_s": 3600.0})


async def _has(client: Any, kind: str) -> bool:
    return bool(client.of(kind))


async def test_four_ppt_over_mqtt_carries_its_risk_level_to_the_websocket_and_cap(
    settings: Settings, tmp_path: Path, publisher: MqttPublisher
) -> None:
    """4‰ at the Xà No sluice (vt-sal-01): the shipped salinity-emergency rule fires with the
    station's QĐ 18/2021 risk level (3, orange) on /ws and the REST API, mutes the rice alert
    of the same station, and the CAP warning issued from it is Severe with the level as a
    parameter and the low-water advice in its instruction."""
    from tests.test_live import Client

    s = _with_salinity_pack(settings, tmp_path)
    async with running_service(s) as (runtime, http):
        assert runtime.rules is not None
        client = await Client.open(runtime, types="alert", city="vi-thanh")
        try:
            await eventually(lambda: _has(client, "hello"))
            now = time.time()
            topic = device_topic(
                s.mqtt_topic_prefix, "vi-thanh", "salinity", "vt-sal-01", "telemetry"
            )
            body = {"ts": int((now - 1) * 1000), "metrics": {"salinity_ppt": 4.6}}
            publisher.publish_many([(topic, orjson.dumps(body))])

            async def frames(rule: str, state: str) -> list[dict[str, Any]]:
                return [
                    f["data"] for f in client.of("alert")
                    if f["data"]["rule"] == rule and f["data"]["state"] == state
                ]  # fmt: skip

            await eventually(lambda: frames("salinity-emergency", "pending"))
            await runtime.rules.tick(now - 1 + 10 * MIN)  # past the rules' `for: 10m`
            (emergency,) = await eventually(lambda: frames("salinity-emergency", "firing"))
            assert emergency["device_id"] == "vt-sal-01"
            assert emergency["risk_level"] == 3  # the station's risk_level_4ppt (site file)
            assert emergency["risk"]["colour_en"] == "orange" and emergency["risk"]["colour"]
            assert "cấp độ rủi ro thiên tai 3" in emergency["annotations"]["summary_vi"]
            assert "triều xuống" in emergency["annotations"]["advice_vi"]

            r = await http.get("/api/v1/alerts", params={"state": "firing"}, headers=AUTH)
            assert r.status_code == 200, r.text
            by_rule = {a["rule"]: a for a in r.json()}
            assert by_rule["salinity-emergency"]["risk_level"] == 3
            # under 4‰ there is no disaster risk level; 4‰ says more than 1‰: rice is muted
            assert by_rule["salinity-rice"]["risk_level"] is None
            assert by_rule["salinity-rice"]["suppressed_by"]

            r = await http.post(
                f"/api/v1/alerts/{by_rule['salinity-emergency']['id']}/cap",
                json={"msg_type": "Alert"},
                headers=AUTH,
            )
            assert r.status_code == 201, r.text
            xml = r.json()["xml"]
            assert "<severity>Severe</severity>" in xml  # risk level 3 (risk_levels.yaml)
            assert "<category>Env</category>" in xml and "Xâm nhập mặn" in xml
            flat = xml.replace("\n", "").replace(" ", "")
            assert "<valueName>disasterRiskLevel</valueName><value>3</value>" in flat
            assert emergency["annotations"]["advice_vi"] in xml  # the advice, in the instruction
        finally:
            await client.close()
