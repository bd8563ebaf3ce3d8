"""The simulated agencies against the whole running service: an incident dispatched over the
real broker is accepted, worked and resolved through the agency API, with every step in its
history — what a viewer of `ioc demo` sees."""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import urlsplit

from ioc.core.settings import Settings
from ioc.simulators.agencies import AgencyDesk, Pace
from ioc.storage import tokens
from tests.conftest import TOKEN, eventually, running_service


async def test_simulated_agency_works_its_dispatches(settings: Settings) -> None:
    async with running_service(settings) as (runtime, http):
        async with runtime.pool.connection() as conn:
            _, works = await tokens.create(conn, name="sim", role="agency:urban-works")
        mqtt_url = urlsplit(settings.mqtt_url or "")
        desk = AgencyDesk(
            mqtt_host=mqtt_url.hostname or "127.0.0.1", mqtt_port=mqtt_url.port or 1883,
            api_url=str(http.base_url), tokens={"urban-works": works},
            dispatch_prefix=settings.dispatch_mqtt_prefix, speed=200.0,
            pace=Pace(reject_p=0.0),
        )  # fmt: skip
        worker = asyncio.create_task(desk.run())
        try:
            await asyncio.sleep(0.5)  # the desk subscribes
            admin = {"Authorization": f"Bearer {TOKEN}"}
            opened = []
            for title in ("Đèn tắt đoạn 1", "Đèn tắt đoạn 2"):
                r = await http.post("/api/v1/incidents", headers=admin, json={
                    "category": "chieu-sang", "title": title, "city": "vi-thanh",
                    "ward": "phuong-5"})  # fmt: skip
                assert r.status_code == 201, r.text
                opened.append(r.json()["id"])

            async def all_resolved() -> bool:
                states = [
                    (await http.get(f"/api/v1/incidents/{i}", headers=admin)).json()["status"]
                    for i in opened
                ]
                return all(s == "resolved" for s in states)

            await eventually(all_resolved, timeout=60)
            detail = (await http.get(f"/api/v1/incidents/{opened[0]}", headers=admin)).json()
            steps = [h["kind"] for h in detail["history"]]
            assert steps == ["opened", "dispatch", "accept", "progress", "resolve"]
            assert detail["history"][-1]["actor"] == "agency:urban-works/sim"
            assert desk.worked["resolved"] == 2
        finally:
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker


async def test_a_rejected_case_is_sent_back_by_the_duty_operator_and_then_worked(
    settings: Settings,
) -> None:
    async with running_service(settings) as (runtime, http):
        async with runtime.pool.connection() as conn:
            _, works = await tokens.create(conn, name="sim", role="agency:urban-works")
            _, duty = await tokens.create(conn, name="duty", role="operator")
        mqtt_url = urlsplit(settings.mqtt_url or "")
        desk = AgencyDesk(
            mqtt_host=mqtt_url.hostname or "127.0.0.1", mqtt_port=mqtt_url.port or 1883,
            api_url=str(http.base_url), tokens={"urban-works": works}, operator_token=duty,
            dispatch_prefix=settings.dispatch_mqtt_prefix, speed=200.0,
            pace=Pace(reject_p=1.0),  # every first dispatch is rejected
        )  # fmt: skip
        worker = asyncio.create_task(desk.run())
        try:
            await asyncio.sleep(0.5)  # the desk subscribes
            admin = {"Authorization": f"Bearer {TOKEN}"}
            r = await http.post("/api/v1/incidents", headers=admin, json={
                "category": "chieu-sang", "title": "Đèn tắt", "city": "vi-thanh",
                "ward": "phuong-5"})  # fmt: skip
            iid = r.json()["id"]

            async def resolved() -> bool:
                got = await http.get(f"/api/v1/incidents/{iid}", headers=admin)
                return bool(got.json()["status"] == "resolved")

            await eventually(resolved, timeout=60)
            detail = (await http.get(f"/api/v1/incidents/{iid}", headers=admin)).json()
            steps = [(h["kind"], h["actor"]) for h in detail["history"]]
            assert steps == [
                ("opened", "admin"), ("dispatch", "admin"),
                ("reject", "agency:urban-works/sim"), ("dispatch", "operator/duty"),
                ("accept", "agency:urban-works/sim"), ("progress", "agency:urban-works/sim"),
                ("resolve", "agency:urban-works/sim"),
            ]  # fmt: skip
            assert (desk.worked["rejected"], desk.worked["redispatched"]) == (1, 1)
        finally:
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker
