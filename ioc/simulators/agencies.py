"""Simulated agencies (and the citizens who rate their work) for the demo and tests.

An agency is an outside system like a field device: it hears of its work on its dispatch topic
(``ioc/dispatch/{agency}``, MQTT QoS 1 — the contract in docs/agencies.md) and answers through
the agency API with its own ``agency:{code}`` token: accept (or, now and then, reject as not
its business), report progress, resolve with a note. After a resolution the citizen who reported
the problem rates it through Open311's feedback extension; with an operator token, the IOC's
duty operator checks each rejection and sends the case back (the agency was right to be asked).
Like the field-device simulators it
imports nothing of the IOC; it speaks only MQTT (through the shared ``mqttclient``) and HTTP.

Times are compressed for the demo: ``speed`` divides every delay (the defaults are minutes, so
a viewer sees incidents move from dispatched to resolved while watching).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from mqttclient import Client, ConnectRefused, Message

log = logging.getLogger(__name__)

_REJECT_NOTE = "Không thuộc phạm vi quản lý của đơn vị; đề nghị IOC chuyển đơn vị khác."
_PROGRESS_NOTE = "Đã cử tổ kỹ thuật đến hiện trường."
_REDISPATCH_NOTE = "IOC đã xác minh: đúng thẩm quyền của đơn vị, đề nghị xử lý."
_SEEN_MAX = 10_000  # idempotency keys remembered; the oldest are forgotten first
_RETRY_MAX_S = 15.0  # the first connection is retried, doubling the wait up to this
_RESOLVE_NOTES = {
    "chieu-sang": "Đã thay bóng đèn, kiểm tra tủ điện; đèn hoạt động bình thường.",
    "ngap-nuoc": "Đã khơi thông cống, bố trí máy bơm; nước đã rút.",
    "giao-thong": "CSGT đã phân luồng, giải tỏa hiện trường.",
    "rac-thai": "Đã thu gom, vệ sinh khu vực.",
    "thiet-bi": "Đã khởi động lại thiết bị, kết nối ổn định.",
}


@dataclass(frozen=True, slots=True)
class Pace:
    """Median delays (seconds, before dividing by speed) and the chance of a rejection."""

    accept_s: float = 40.0
    work_s: float = 150.0
    reject_p: float = 0.05


class AgencyDesk:
    """Every agency in ``tokens`` works its dispatches; ``citizen_key`` (an Open311 api_key)
    lets the reporters rate resolved reports. Runs until cancelled."""

    def __init__(
        self,
        *,
        mqtt_host: str,
        mqtt_port: int,
        api_url: str,
        tokens: Mapping[str, str],
        citizen_key: str | None = None,
        operator_token: str | None = None,
        dispatch_prefix: str = "ioc/dispatch",
        speed: float = 1.0,
        seed: int = 7,
        pace: Pace = Pace(),
        mqtt_username: str | None = None,
        mqtt_password: str | None = None,
    ) -> None:
        self._mqtt = (mqtt_host, mqtt_port, mqtt_username, mqtt_password)
        self._api_url = api_url
        self._tokens = dict(tokens)
        self._citizen_key = citizen_key
        self._operator_token = operator_token
        self._prefix = dispatch_prefix
        self._speed = speed
        self._rng = random.Random(seed)
        self._pace = pace
        # bounded: when full, the receiver waits (the dispatch is acknowledged only once queued
        # here), so the client's own bounded queue and then the broker hold the rest
        self._inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=10_000)
        # idempotency keys: a redelivered dispatch is worked once (bounded, oldest forgotten)
        self._seen: OrderedDict[str, None] = OrderedDict()
        # incidents this desk rejected once: sent back by the IOC, they are worked (bounded too)
        self._rejected: OrderedDict[Any, None] = OrderedDict()
        self.worked: dict[str, int] = dict.fromkeys(
            ("accepted", "rejected", "redispatched", "resolved", "rated"), 0
        )

    async def run(self) -> None:
        host, port, user, password = self._mqtt
        client_id = f"sim-agencies-{self._rng.randrange(10**9)}"
        delay = 0.5
        while True:
            try:
                async with Client(
                    host,
                    port,
                    client_id=client_id,
                    username=user,
                    password=password if user else None,
                    clean_start=True,
                    session_expiry_s=0,
                    manual_ack=True,
                ) as client:
                    for agency in self._tokens:
                        await client.subscribe(f"{self._prefix}/{agency}", qos=1)
                    async with (
                        httpx.AsyncClient(base_url=self._api_url, timeout=10) as http,
                        asyncio.TaskGroup() as tg,
                    ):
                        tg.create_task(self._receive(client), name="agency-desk-receive")
                        while True:
                            doc = await self._inbox.get()
                            tg.create_task(self._work(http, doc))
            except (OSError, ConnectRefused) as exc:
                # the first connection failed (later losses the client reconnects by itself)
                log.warning("agency desk: broker %s:%s: %s; retrying", host, port, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RETRY_MAX_S)

    async def _receive(self, client: Client) -> None:
        async for message in client:
            await self._offer(message)
            client.ack(message)

    async def _offer(self, message: Message) -> None:
        try:
            doc = orjson.loads(message.payload)
        except orjson.JSONDecodeError:
            log.warning("agency desk: undecodable dispatch on %s", message.topic)
            return
        if not isinstance(doc, dict):
            log.warning("agency desk: dispatch on %s is not an object", message.topic)
            return
        key = str(doc.get("id"))
        if key in self._seen:
            return
        await self._inbox.put(doc)  # full: wait, the broker keeps the rest unacknowledged
        _remember(self._seen, key)

    def _delay(self, median_s: float) -> float:
        return self._rng.lognormvariate(0.0, 0.5) * median_s / self._speed

    async def _work(self, http: httpx.AsyncClient, doc: dict[str, Any]) -> None:
        kind, agency, incident = doc.get("kind"), doc.get("agency"), doc.get("incident") or {}
        token = self._tokens.get(str(agency))
        if kind not in ("incident.dispatched", "incident.reopened") or token is None:
            return
        iid = incident.get("id")
        auth = {"Authorization": f"Bearer {token}"}
        base = f"/api/v1/agency/incidents/{iid}"
        try:
            await asyncio.sleep(self._delay(self._pace.accept_s))
            first_time = iid not in self._rejected
            if first_time and kind == "incident.dispatched" and (
                self._rng.random() < self._pace.reject_p
            ):
                r = await http.post(f"{base}/reject", headers=auth, json={"note": _REJECT_NOTE})
                if r.status_code == 200:
                    self.worked["rejected"] += 1
                    _remember(self._rejected, iid)
                    await self._send_back(http, iid)
                return
            r = await http.post(f"{base}/accept", headers=auth)
            if r.status_code != 200:
                return  # withdrawn, reassigned or merged meanwhile: nothing left to do
            self.worked["accepted"] += 1
            await asyncio.sleep(self._delay(self._pace.work_s) / 2)
            await http.post(f"{base}/progress", headers=auth, json={"note": _PROGRESS_NOTE})
            await asyncio.sleep(self._delay(self._pace.work_s) / 2)
            note = _RESOLVE_NOTES.get(str(incident.get("category")), "Đã xử lý xong.")
            r = await http.post(f"{base}/resolve", headers=auth, json={"note": note})
            if r.status_code != 200:
                return
            self.worked["resolved"] += 1
            await self._rate(http, incident)
        except httpx.HTTPError as exc:
            log.warning("agency desk: incident %s: %s", iid, exc)

    async def _send_back(self, http: httpx.AsyncClient, iid: Any) -> None:
        """The duty operator reviews a rejection and dispatches the case again."""
        if self._operator_token is None:
            return
        await asyncio.sleep(self._delay(self._pace.accept_s))
        r = await http.post(
            f"/api/v1/incidents/{iid}/dispatch",
            headers={"Authorization": f"Bearer {self._operator_token}"},
            json={"note": _REDISPATCH_NOTE},
        )
        if r.status_code == 200:
            self.worked["redispatched"] += 1

    async def _rate(self, http: httpx.AsyncClient, incident: Mapping[str, Any]) -> None:
        """The first reporter rates the fix (mostly content: 4–5 stars four times in five)."""
        reports = incident.get("reports") or []
        if not reports or self._citizen_key is None:
            return
        await asyncio.sleep(self._delay(self._pace.accept_s))
        rating = self._rng.choices((5, 4, 3, 2, 1), weights=(50, 30, 10, 6, 4))[0]
        with contextlib.suppress(httpx.HTTPError):
            r = await http.post(
                f"/open311/v2/requests/{reports[0]['id']}/feedback.json",
                data={"api_key": self._citizen_key, "rating": str(rating),
                      "comment": "Cảm ơn đơn vị đã xử lý." if rating >= 4 else "Xử lý chậm."},
            )  # fmt: skip
            if r.status_code == 200:
                self.worked["rated"] += 1


def _remember(keys: OrderedDict[Any, None], key: Any) -> None:
    keys[key] = None
    if len(keys) > _SEEN_MAX:
        keys.popitem(last=False)
