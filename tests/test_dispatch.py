"""Agency dispatch: the outbox, webhook and MQTT delivery, retries, order, restarts, operator API.

Every webhook test talks to a real HTTP receiver on a free local port (``Receiver``) that behaves
like an agency's server: it checks the signature, processes each idempotency key once and answers
repeats with 200 without processing them again — so "exactly once from the receiver's point of
view" is what its ``processed`` list shows. It can be told to fail (500), hang past the timeout
(after processing: the case the idempotency key exists for), throttle (429) or refuse (400).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import paho.mqtt.client as mqtt
import psycopg
import pytest
from paho.mqtt.properties import Properties
from prometheus_client import REGISTRY
from psycopg.rows import dict_row

from ioc.core.settings import MqttAddress, Settings
from ioc.dispatch import DispatchConfigError, DispatchWorker, enqueue, sign, verify
from ioc.dispatch import outbox as outbox_store
from ioc.dispatch.deliveries import list_deliveries, retry_failed
from ioc.dispatch.delivery import Outcome
from ioc.dispatch.retry import (
    RETRY_AFTER_CAP_S,
    backoff_delay,
    classify_status,
    parse_retry_after,
    retry_delay,
)
from ioc.storage import tokens as token_store
from tests.conftest import TOKEN, eventually, running_service
from tests.proxy import TcpProxy

AGENCY = "urban-works"  # has a webhook in these tests
MQTT_ONLY = "power-company"  # MQTT topic only
SECRET = "s3cret-for-tests"

# --- a real agency receiver ---------------------------------------------------------------------

OK, ERROR, HANG, THROTTLE, REFUSE, SLOW = "ok", "500", "hang", "429", "400", "slow"


@dataclass
class Request:
    key: str
    headers: dict[str, str]
    body: bytes
    action: str = ""

    @property
    def doc(self) -> dict[str, Any]:
        return orjson.loads(self.body)  # type: ignore[no-any-return]


@dataclass
class Receiver:
    """An agency's webhook endpoint over real HTTP/1.1 (asyncio streams, one request per
    connection). ``plan`` actions are used first, one per request; then ``decide`` (default: the
    ``default`` action)."""

    secret: str = SECRET
    default: str = OK
    plan: deque[str] = field(default_factory=deque)
    decide: Callable[[Request], str] | None = None
    slow_s: float = 0.3
    requests: list[Request] = field(default_factory=list)
    processed: list[str] = field(default_factory=list)  # keys, in the order they were acted on
    documents: dict[str, dict[str, Any]] = field(default_factory=dict)
    repeats: Counter[str] = field(default_factory=Counter)
    bad_signatures: int = 0
    port: int = 0
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[Any]] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/ioc/dispatch"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _process(self, req: Request) -> None:
        """What the agency does with a message: once per idempotency key."""
        if req.key in self.documents:
            self.repeats[req.key] += 1
            return
        self.documents[req.key] = req.doc
        self.processed.append(req.key)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            headers = {}
            for line in lines[1:]:
                if ":" in line:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            req = Request(headers.get("idempotency-key", ""), headers, body)
            self.requests.append(req)
            if not verify(
                self.secret,
                timestamp=headers.get("x-ioc-timestamp", ""),
                signature=headers.get("x-ioc-signature", ""),
                body=body,
                now=time.time(),
            ):
                self.bad_signatures += 1
                await self._answer(writer, 401)
                return
            action = self.plan.popleft() if self.plan else None
            action = action or (self.decide(req) if self.decide else self.default)
            req.action = action
            if action == OK:
                self._process(req)
                await self._answer(writer, 200)
            elif action == HANG:
                self._process(req)  # done, but the answer never comes in time
                await asyncio.sleep(3600)
            elif action == SLOW:
                self._process(req)
                await asyncio.sleep(self.slow_s)
                await self._answer(writer, 200)
            elif action == THROTTLE:
                await self._answer(writer, 429, {"Retry-After": "0"})
            else:
                await self._answer(writer, int(action), body=b'{"error": "as planned"}')
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._tasks.discard(task)
            with contextlib.suppress(Exception):
                writer.close()

    @staticmethod
    async def _answer(
        writer: asyncio.StreamWriter,
        status: int,
        headers: dict[str, str] | None = None,
        body: bytes = b"",
    ) -> None:
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        writer.write(
            f"HTTP/1.1 {status} X\r\nContent-Length: {len(body)}\r\nConnection: close\r\n"
            f"Content-Type: application/json\r\n{extra}\r\n".encode()
            + body
        )
        await writer.drain()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    await r.start()
    yield r
    await r.close()


def dispatch_settings(settings: Settings, topic_prefix: str, receiver: Receiver | None) -> Settings:
    """Small timeouts and backoff (the tests wait for outcomes, they do not time them)."""
    hooks = {AGENCY: {"url": receiver.url, "secret": SECRET}} if receiver else {}
    return settings.model_copy(
        update={
            "agency_webhooks": hooks,
            "dispatch_timeout_s": 1.0,
            "dispatch_backoff_base_s": 0.05,
            "dispatch_backoff_max_s": 0.2,
            "dispatch_max_attempts": 8,
            "dispatch_mqtt_prefix": f"{topic_prefix}/dispatch",
        }
    )


# --- helpers -----------------------------------------------------------------------------------


async def new_incident(db: psycopg.AsyncConnection, title: str = "Đèn tắt") -> int:
    cur = await db.execute(
        "INSERT INTO incidents (category, severity, status, title, opened_at)"
        " VALUES ('chieu-sang', 'warning', 'new', %s, now()) RETURNING id",
        (title,),
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def dispatch(
    db: psycopg.AsyncConnection,
    s: Settings,
    incident_id: int | None,
    kind: str = "incident.dispatched",
    agency: str = AGENCY,
    **extra: Any,
) -> list[int]:
    async with db.transaction():
        return await enqueue(
            db,
            incident_id=incident_id,
            agency_id=agency,
            kind=kind,
            payload={"id": incident_id, "title": "Đèn tắt", **extra},
            settings=s,
        )


async def rows(db: psycopg.AsyncConnection, where: str = "true") -> list[dict[str, Any]]:
    async with db.cursor(row_factory=dict_row) as cur:
        await cur.execute(f"SELECT * FROM outbox WHERE {where} ORDER BY id")
        return await cur.fetchall()


async def attempt_log(db: psycopg.AsyncConnection, outbox_id: int) -> list[dict[str, Any]]:
    async with db.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT * FROM delivery_attempts WHERE outbox_id = %s ORDER BY time, id", (outbox_id,)
        )
        return await cur.fetchall()


async def all_settled(db: psycopg.AsyncConnection) -> bool:
    return not await rows(db, "state = 'pending'")


def assert_exactly_once(receiver: Receiver, webhook_rows: list[dict[str, Any]]) -> None:
    """Each dispatch processed once; repeats only ever carried a key we sent."""
    keys = {r["idempotency_key"] for r in webhook_rows}
    assert sorted(receiver.processed) == sorted(keys)
    assert len(receiver.processed) == len(set(receiver.processed))
    assert set(receiver.repeats) <= keys
    assert receiver.bad_signatures == 0
    for req in receiver.requests:
        assert req.doc["id"] == req.key  # the key in the header is the message id


class Subscriber:
    """A real MQTT v5 subscriber (the agency's side of the MQTT channel)."""

    def __init__(self, url: str, topic: str) -> None:
        addr = MqttAddress(url)
        self.messages: list[mqtt.MQTTMessage] = []
        self.subscribed = asyncio.Event()
        loop = asyncio.get_running_loop()
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=f"agency-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv5,
        )
        if addr.username:
            self.client.username_pw_set(addr.username, addr.password)
        self.client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda *_: loop.call_soon_threadsafe(self.subscribed.set)
        self.client.on_message = lambda c, u, m: self.messages.append(m)
        self.client.connect(addr.host, addr.port)
        self.client.loop_start()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@contextlib.asynccontextmanager
async def subscribed(url: str, topic: str) -> AsyncIterator[Subscriber]:
    sub = Subscriber(url, topic)
    try:
        await asyncio.wait_for(sub.subscribed.wait(), 20)
        yield sub
    finally:
        sub.close()


def user_properties(msg: mqtt.MQTTMessage) -> dict[str, str]:
    props: Properties | None = msg.properties
    return dict(getattr(props, "UserProperty", []) or [])


# --- the policy, in isolation -----------------------------------------------------------------


def test_statuses_are_classified_as_the_retry_policy_says() -> None:
    assert classify_status(200) is Outcome.DELIVERED
    assert classify_status(204) is Outcome.DELIVERED
    for code in (500, 502, 503, 504, 408, 409, 425, 429):
        assert classify_status(code) is Outcome.RETRY, code
    for code in (400, 401, 403, 404, 410, 413, 422, 301, 302):
        assert classify_status(code) is Outcome.FAILED, code


def test_backoff_is_exponential_with_full_jitter_and_honours_retry_after() -> None:
    rng = random.Random(7)
    for attempt, ceiling in ((1, 2.0), (2, 4.0), (3, 8.0), (9, 512.0), (10, 600.0), (40, 600.0)):
        samples = [backoff_delay(attempt, base_s=2.0, max_s=600.0, rng=rng) for _ in range(500)]
        assert all(0.0 <= d <= ceiling for d in samples)
        assert max(samples) > ceiling * 0.9  # full jitter spans the whole range
        assert min(samples) < ceiling * 0.1
    # never sooner than Retry-After; an absurd Retry-After is capped
    assert retry_delay(1, base_s=2.0, max_s=600.0, retry_after_s=120.0, rng=rng) >= 120.0
    assert retry_delay(1, base_s=2.0, max_s=600.0, retry_after_s=1e9, rng=rng) <= RETRY_AFTER_CAP_S


def test_retry_after_as_seconds_or_http_date() -> None:
    now = datetime(2026, 11, 28, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("120", now) == 120.0
    assert parse_retry_after("Sat, 28 Nov 2026 12:01:30 GMT", now) == 90.0
    assert parse_retry_after("Sat, 28 Nov 2026 11:00:00 GMT", now) == 0.0
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(None, now) is None


def test_signature_verifies_and_refuses_tampering_and_replay() -> None:
    body = b'{"id": "k", "kind": "incident.dispatched"}'
    now = 1_800_000_000
    sig = sign(SECRET, now, body)
    assert sig.startswith("sha256=") and len(sig) == 7 + 64
    assert verify(SECRET, timestamp=str(now), signature=sig, body=body, now=now + 10)
    assert not verify("other", timestamp=str(now), signature=sig, body=body, now=now)
    assert not verify(SECRET, timestamp=str(now), signature=sig, body=body + b" ", now=now)
    assert not verify(SECRET, timestamp=str(now + 1), signature=sig, body=body, now=now)
    assert not verify(SECRET, timestamp=str(now), signature=sig, body=body, now=now + 301)
    assert not verify(SECRET, timestamp="x", signature=sig, body=body, now=now)


# --- the outbox --------------------------------------------------------------------------------


async def test_enqueue_is_part_of_the_callers_transaction(
    settings: Settings, db: psycopg.AsyncConnection, database_url: str, topic_prefix: str
) -> None:
    s = dispatch_settings(settings, topic_prefix, None).model_copy(
        update={"agency_webhooks": {AGENCY: {"url": "https://agency.example/ioc", "secret": "x"}}}
    )
    incident = await new_incident(db)
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as listener:
        await listener.execute(f"LISTEN {outbox_store.OUTBOX_CHANNEL}")

        # the incident change rolls back: no dispatch either
        with pytest.raises(RuntimeError, match="incident change failed"):
            async with db.transaction():
                await enqueue(
                    db,
                    incident_id=incident,
                    agency_id=AGENCY,
                    kind="incident.dispatched",
                    payload={"id": incident},
                    settings=s,
                )
                raise RuntimeError("incident change failed")
        assert await rows(db) == []

        async with db.transaction():
            ids = await enqueue(
                db,
                incident_id=incident,
                agency_id=AGENCY,
                kind="incident.dispatched",
                payload={"id": incident, "at": datetime(2026, 11, 28, 19, 0, tzinfo=UTC)},
                settings=s,
            )
            # not visible to anyone else before the caller commits
            async with await psycopg.AsyncConnection.connect(database_url) as other:
                cur = await other.execute("SELECT count(*) FROM outbox")
                assert (await cur.fetchone()) == (0,)
        gen = listener.notifies(timeout=30, stop_after=1)
        assert [n.channel async for n in gen] == [outbox_store.OUTBOX_CHANNEL]

    written = await rows(db)
    assert [r["id"] for r in written] == ids
    assert {(r["channel"], r["target"]) for r in written} == {
        ("mqtt", f"{topic_prefix}/dispatch/{AGENCY}"),
        ("webhook", "https://agency.example/ioc"),
    }
    assert all(r["state"] == "pending" and r["attempts"] == 0 for r in written)
    assert len({uuid.UUID(r["idempotency_key"]) for r in written}) == 2  # fresh uuid4 each
    assert written[0]["payload"]["at"] == "2026-11-28T19:00:00+00:00"

    # an agency without a webhook gets its MQTT topic only
    assert len(await dispatch(db, s, incident, agency=MQTT_ONLY)) == 1


async def test_bad_webhook_configuration_is_refused_naming_the_field(
    settings: Settings, database_url: str
) -> None:
    for entry, field_name in (
        ({"url": "ftp://x", "secret": "s"}, "url"),
        ({"url": "https://x"}, "secret"),
    ):
        s = settings.model_copy(update={"agency_webhooks": {AGENCY: entry}})
        with pytest.raises(DispatchConfigError, match=rf"\['{AGENCY}'\]\.{field_name}"):
            async with DispatchWorker(s, database_url):
                pass


# --- webhook delivery --------------------------------------------------------------------------


async def test_webhook_survives_errors_timeouts_and_throttling_processed_exactly_once(
    settings: Settings,
    db: psycopg.AsyncConnection,
    database_url: str,
    topic_prefix: str,
    receiver: Receiver,
) -> None:
    s = dispatch_settings(settings, topic_prefix, receiver)
    receiver.plan.extend([ERROR, HANG, THROTTLE, ERROR, HANG, ERROR])
    for n in range(6):
        await dispatch(db, s, await new_incident(db, f"sự cố {n}"))

    async with DispatchWorker(s, database_url) as worker:
        assert worker.max_in_flight == 8
        await eventually(lambda: all_settled(db), timeout=90)

    webhook_rows = await rows(db, "channel = 'webhook'")
    assert {r["state"] for r in webhook_rows} == {"delivered"}
    assert_exactly_once(receiver, webhook_rows)
    # the hung requests had been processed: their redelivery came with the same key
    assert sum(receiver.repeats.values()) >= 2
    # every request is one logged attempt, and the other way round
    logs = {r["id"]: await attempt_log(db, r["id"]) for r in webhook_rows}
    assert sum(len(v) for v in logs.values()) == len(receiver.requests)
    for r in webhook_rows:
        assert r["attempts"] == len(logs[r["id"]])
        assert logs[r["id"]][-1]["outcome"] == "delivered"
        assert logs[r["id"]][-1]["status_code"] == 200
    entries = [e for v in logs.values() for e in v]
    assert {(e["outcome"], e["status_code"]) for e in entries} >= {
        ("retry", 500),
        ("retry", 429),
        ("retry", None),
        ("delivered", 200),
    }
    timeouts = [e for e in entries if e["status_code"] is None]
    assert all(e["error"].startswith("timeout") for e in timeouts)
    assert all(e["duration_ms"] >= 0 for e in entries)
    # the envelope
    doc = receiver.documents[webhook_rows[0]["idempotency_key"]]
    assert set(doc) == {"id", "kind", "agency", "incident", "sent_at"}
    assert doc["agency"] == AGENCY and doc["kind"] == "incident.dispatched"
    assert doc["sent_at"].endswith("+07:00")
    assert receiver.requests[0].headers["x-ioc-signature"].startswith("sha256=")
    # the MQTT twins were delivered too, and the metrics counted it all
    assert {r["state"] for r in await rows(db, "channel = 'mqtt'")} == {"delivered"}
    sample = REGISTRY.get_sample_value
    assert sample(
        "ioc_dispatch_deliveries_total",
        {"agency": AGENCY, "channel": "webhook", "outcome": "retry"},
    )
    assert sample("ioc_dispatch_delivery_latency_seconds_count", {"channel": "webhook"})


async def test_retryable_errors_fail_after_the_last_attempt(
    settings: Settings,
    db: psycopg.AsyncConnection,
    database_url: str,
    topic_prefix: str,
    receiver: Receiver,
) -> None:
    s = dispatch_settings(settings, topic_prefix, receiver).model_copy(
        update={"dispatch_max_attempts": 3}
    )
    receiver.default = "503"
    await dispatch(db, s, await new_incident(db))
    async with DispatchWorker(s, database_url):
        await eventually(lambda: rows(db, "channel = 'webhook' AND state = 'failed'"), timeout=60)
    (row,) = await rows(db, "channel = 'webhook'")
    assert row["attempts"] == 3
    assert row["last_error"].startswith("gave up after 3 attempts: HTTP 503")
    assert [e["outcome"] for e in await attempt_log(db, row["id"])] == ["retry", "retry", "failed"]
    assert receiver.processed == []


async def test_permanent_refusal_fails_at_once_and_an_operator_retry_delivers(
    settings: Settings,
    db: psycopg.AsyncConnection,
    topic_prefix: str,
    receiver: Receiver,
) -> None:
    s = dispatch_settings(settings, topic_prefix, receiver)
    receiver.default = REFUSE
    async with running_service(s) as (runtime, http):
        assert runtime.dispatch is not None
        admin = {"Authorization": f"Bearer {TOKEN}"}
        incident = await new_incident(db)
        mqtt_id, webhook_id = await dispatch(db, s, incident)

        failed = await eventually(
            lambda: rows(db, "channel = 'webhook' AND state = 'failed'"), timeout=60
        )
        assert failed[0]["attempts"] == 1  # a 400 is not retried
        assert failed[0]["last_error"].startswith("HTTP 400")
        await eventually(lambda: rows(db, "channel = 'mqtt' AND state = 'delivered'"))

        listed = (await http.get("/api/v1/deliveries?state=failed", headers=admin)).json()
        assert [(d["id"], d["attempts"], d["state"]) for d in listed] == [(webhook_id, 1, "failed")]
        assert listed[0]["last_error"].startswith("HTTP 400")
        by_incident = await http.get(f"/api/v1/deliveries?incident={incident}", headers=admin)
        assert {d["id"] for d in by_incident.json()} == {mqtt_id, webhook_id}
        by_agency = await http.get("/api/v1/deliveries?agency=nobody", headers=admin)
        assert by_agency.json() == []

        bad = await http.get("/api/v1/deliveries?state=lost", headers=admin)
        assert bad.status_code == 422 and bad.json()["message"].startswith("state:")
        bad = await http.get("/api/v1/deliveries?channel=fax", headers=admin)
        assert bad.status_code == 422 and bad.json()["message"].startswith("channel:")
        missing = await http.get("/api/v1/deliveries/999999", headers=admin)
        assert missing.status_code == 404
        conflict = await http.post(f"/api/v1/deliveries/{mqtt_id}/retry", headers=admin)
        assert conflict.status_code == 409
        assert "delivered, not failed" in conflict.json()["message"]
        assert (
            await http.post("/api/v1/deliveries/999999/retry", headers=admin)
        ).status_code == 404
        assert (await http.get("/api/v1/deliveries")).status_code == 401

        # a viewer sees the log but may not retry
        _, viewer_token = await token_store.create(db, name="wall", role="viewer")
        viewer = {"Authorization": f"Bearer {viewer_token}"}
        detail = await http.get(f"/api/v1/deliveries/{webhook_id}", headers=viewer)
        assert detail.status_code == 200
        assert [(a["outcome"], a["status_code"]) for a in detail.json()["attempt_log"]] == [
            ("failed", 400)
        ]
        assert detail.json()["payload"]["id"] == incident
        forbidden = await http.post(f"/api/v1/deliveries/{webhook_id}/retry", headers=viewer)
        assert forbidden.status_code == 403

        # the agency fixed its side; the operator retries
        receiver.default = OK
        retried = await http.post(f"/api/v1/deliveries/{webhook_id}/retry", headers=admin)
        assert retried.status_code == 200, retried.text
        assert retried.json()["state"] in ("pending", "delivered")
        assert retried.json()["retried_by"] == "admin"
        await eventually(lambda: rows(db, "channel = 'webhook' AND state = 'delivered'"))

        detail = (await http.get(f"/api/v1/deliveries/{webhook_id}", headers=admin)).json()
        assert [(a["outcome"], a["status_code"]) for a in detail["attempt_log"]] == [
            ("failed", 400),
            ("delivered", 200),
        ]
        assert detail["delivered_at"].endswith("+07:00")
        metrics = await http.get("/metrics", headers=admin)
        assert "ioc_dispatch_outbox_backlog" in metrics.text
    assert_exactly_once(receiver, await rows(db, "channel = 'webhook'"))


# --- restarts and crashes ----------------------------------------------------------------------


async def test_no_dispatch_lost_or_processed_twice_across_a_worker_restart(
    settings: Settings,
    db: psycopg.AsyncConnection,
    database_url: str,
    topic_prefix: str,
    receiver: Receiver,
) -> None:
    s = dispatch_settings(settings, topic_prefix, receiver)
    receiver.default = SLOW  # processed on arrival, answered a moment later
    for n in range(20):
        await dispatch(db, s, await new_incident(db, f"sự cố {n}"))

    # stop in the middle, cutting in-flight attempts at once: processed by the receiver, not yet
    # recorded here — the crash window the idempotency key exists for
    first = DispatchWorker(s, database_url, stop_grace_s=0)
    async with first:
        await eventually(lambda: _at_least(receiver.processed, 3))
    cut_short = await rows(db, "channel = 'webhook' AND state = 'pending'")
    assert cut_short, "the stop came after everything was delivered"
    processed_before = set(receiver.processed)
    assert processed_before & {r["idempotency_key"] for r in cut_short}
    interrupted = [
        e
        for r in cut_short
        for e in await attempt_log(db, r["id"])
        if e["error"] and e["error"].startswith("interrupted")
    ]
    assert interrupted

    async with DispatchWorker(s, database_url):
        await eventually(lambda: all_settled(db), timeout=90)
    webhook_rows = await rows(db, "channel = 'webhook'")
    assert {r["state"] for r in webhook_rows} == {"delivered"}
    assert_exactly_once(receiver, webhook_rows)
    assert set(receiver.repeats) <= processed_before  # only the cut ones came again
    assert sum(receiver.repeats.values()) >= 1


async def test_rows_claimed_by_a_dead_worker_are_redelivered_after_their_lease(
    settings: Settings,
    db: psycopg.AsyncConnection,
    database_url: str,
    topic_prefix: str,
    receiver: Receiver,
) -> None:
    s = dispatch_settings(settings, topic_prefix, receiver)
    for _ in range(3):
        await dispatch(db, s, await new_incident(db))
    # a worker claims everything, then dies without a word (its process was killed)
    claimed = await outbox_store.claim(db, 100, lease_s=0.5)
    assert len(claimed) == 6
    async with DispatchWorker(s, database_url):
        await eventually(lambda: all_settled(db), timeout=60)
    webhook_rows = await rows(db, "channel = 'webhook'")
    assert {(r["state"], r["attempts"]) for r in webhook_rows} == {("delivered", 2)}
    assert_exactly_once(receiver, webhook_rows)


async def test_two_workers_share_the_outbox_without_sending_anything_twice(
    settings: Settings,
    db: psycopg.AsyncConnection,
    database_url: str,
    topic_prefix: str,
    receiver: Receiver,
) -> None:
    s = dispatch_settings(settings, topic_prefix, receiver)
    for n in range(30):
        await dispatch(db, s, await new_incident(db, f"sự cố {n}"))
    async with DispatchWorker(s, database_url), DispatchWorker(s, database_url):
        await eventually(lambda: all_settled(db), timeout=90)
    webhook_rows = await rows(db, "channel = 'webhook'")
    assert_exactly_once(receiver, webhook_rows)
    assert len(receiver.requests) == 30  # SKIP LOCKED + lease: not even a repeat
    assert not receiver.repeats


# --- order -------------------------------------------------------------------------------------


async def test_an_update_never_overtakes_its_dispatch(
    settings: Settings,
    db: psycopg.AsyncConnection,
    database_url: str,
    topic_prefix: str,
    receiver: Receiver,
) -> None:
    s = dispatch_settings(settings, topic_prefix, receiver).model_copy(
        update={"dispatch_max_attempts": 1000}
    )
    slow_start, refused, other = [await new_incident(db) for _ in range(3)]
    attempts: Counter[tuple[int, str]] = Counter()

    def decide(req: Request) -> str:
        doc = req.doc
        incident, kind = doc["incident"]["id"], doc["kind"]
        attempts[(incident, kind)] += 1
        if incident == slow_start and kind == "incident.dispatched":
            # fails until the other incident's whole stream went through: streams do not
            # wait for each other (were they to, this would never finish)
            done = {(d["incident"]["id"], d["kind"]) for d in receiver.documents.values()}
            return OK if (other, "incident.withdrawn") in done else ERROR
        if incident == refused and kind == "incident.dispatched" and not refused_fixed.is_set():
            return REFUSE
        return OK

    refused_fixed = asyncio.Event()
    receiver.decide = decide
    async with db.transaction():  # the incidents code may write several in one transaction
        for incident in (slow_start, refused, other):
            for kind in ("incident.dispatched", "incident.updated", "incident.withdrawn"):
                await enqueue(
                    db,
                    incident_id=incident,
                    agency_id=AGENCY,
                    kind=kind,
                    payload={"id": incident},
                    settings=s,
                )

    async with DispatchWorker(s, database_url):
        # the refused dispatch fails; everything behind it waits, visibly
        await eventually(lambda: rows(db, "channel = 'webhook' AND state = 'failed'"), timeout=60)
        await eventually(lambda: _delivered_kinds(db, slow_start, 3), timeout=60)
        await eventually(lambda: _delivered_kinds(db, other, 3), timeout=60)
        (failed,) = await rows(db, "state = 'failed'")

        async def only_webhook_waits() -> bool:
            # the refused incident's MQTT stream is its own and goes through (not necessarily
            # before the webhook failed: a race the test must not depend on)
            pending = await list_deliveries(db, states=["pending"], incident=refused)
            return {w["channel"] for w in pending} == {"webhook"}

        await eventually(only_webhook_waits, timeout=60)
        waiting = await list_deliveries(db, states=["pending"], incident=refused)
        assert {w["channel"] for w in waiting} == {"webhook"}
        assert [w["waiting_for"] for w in waiting] == [failed["id"], failed["id"]]
        assert not [
            r
            for r in receiver.requests
            if r.doc["incident"]["id"] == refused and r.doc["kind"] != "incident.dispatched"
        ]
        # the operator retries: the dispatch goes, then the rest in order
        refused_fixed.set()
        assert await retry_failed(db, failed["id"], by="operator/test") is not None
        await eventually(lambda: all_settled(db), timeout=60)

    order = [
        (receiver.documents[k]["incident"]["id"], receiver.documents[k]["kind"])
        for k in receiver.processed
    ]
    for incident in (slow_start, refused, other):
        assert [k for i, k in order if i == incident] == [
            "incident.dispatched",
            "incident.updated",
            "incident.withdrawn",
        ]
    assert_exactly_once(receiver, await rows(db, "channel = 'webhook'"))


# --- MQTT delivery -----------------------------------------------------------------------------


async def test_mqtt_channel_publishes_qos1_with_the_idempotency_key_in_order(
    settings: Settings,
    db: psycopg.AsyncConnection,
    database_url: str,
    topic_prefix: str,
    mqtt_url: str,
) -> None:
    s = dispatch_settings(settings, topic_prefix, None)
    topic = f"{topic_prefix}/dispatch/{MQTT_ONLY}"
    async with subscribed(mqtt_url, topic) as agency:
        incident = await new_incident(db)
        for kind in ("incident.dispatched", "incident.updated", "incident.resolved"):
            await dispatch(db, s, incident, kind=kind, agency=MQTT_ONLY)
        async with DispatchWorker(s, database_url) as worker:
            await eventually(lambda: all_settled(db), timeout=60)
            assert worker.mqtt_connected
        await eventually(lambda: _at_least(agency.messages, 3))

    sent = await rows(db)
    assert {(r["channel"], r["target"], r["state"]) for r in sent} == {("mqtt", topic, "delivered")}
    got = list(agency.messages)
    assert all(m.qos == 1 and m.topic == topic for m in got)
    docs = [orjson.loads(m.payload) for m in got]
    assert [d["kind"] for d in docs] == [
        "incident.dispatched",
        "incident.updated",
        "incident.resolved",
    ]
    assert [d["id"] for d in docs] == [r["idempotency_key"] for r in sent]
    assert [user_properties(m)["idempotency-key"] for m in got] == [d["id"] for d in docs]
    assert docs[0]["agency"] == MQTT_ONLY and docs[0]["incident"]["id"] == incident
    for r in sent:
        assert [e["outcome"] for e in await attempt_log(db, r["id"])] == ["delivered"]


async def test_mqtt_delivery_waits_out_a_broker_outage(
    settings: Settings,
    db: psycopg.AsyncConnection,
    database_url: str,
    topic_prefix: str,
    mqtt_url: str,
) -> None:
    broker = MqttAddress(mqtt_url)
    proxy = TcpProxy(broker.host, broker.port)
    await proxy.start()
    s = dispatch_settings(settings, topic_prefix, None).model_copy(
        update={"mqtt_url": f"mqtt://127.0.0.1:{proxy.port}", "dispatch_max_attempts": 100}
    )
    topic = f"{topic_prefix}/dispatch/{MQTT_ONLY}"
    try:
        async with subscribed(mqtt_url, topic) as agency, DispatchWorker(s, database_url) as w:
            await eventually(lambda: _true(w.mqtt_connected))
            await proxy.stop()  # the broker is gone for the dispatch worker
            await eventually(lambda: _true(not w.mqtt_connected))
            incident = await new_incident(db)
            (row_id,) = await dispatch(db, s, incident, agency=MQTT_ONLY)
            await eventually(lambda: rows(db, f"id = {row_id} AND attempts >= 2"), timeout=60)
            (row,) = await rows(db, f"id = {row_id}")
            assert row["state"] == "pending" and "broker" in row["last_error"]
            await proxy.start()  # same port: back
            await eventually(lambda: all_settled(db), timeout=90)
            await eventually(lambda: _at_least(agency.messages, 1))
        log = await attempt_log(db, row_id)
        assert [e["outcome"] for e in log][-1] == "delivered"
        assert {e["outcome"] for e in log[:-1]} == {"retry"}
        assert orjson.loads(agency.messages[0].payload)["id"] == row["idempotency_key"]
    finally:
        await proxy.stop()


# --- small helpers -----------------------------------------------------------------------------


async def _at_least(items: list[Any], n: int) -> bool:
    return len(items) >= n


async def _true(value: bool) -> bool:
    return value


async def _delivered_kinds(db: psycopg.AsyncConnection, incident: int, n: int) -> bool:
    done = await rows(
        db, f"incident_id = {incident} AND channel = 'webhook' AND state = 'delivered'"
    )
    return len(done) >= n
