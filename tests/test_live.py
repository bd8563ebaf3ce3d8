"""The live feed over /ws on a running service (real PostgreSQL, real HTTP server, real sockets)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

import httpx
import orjson
import psycopg
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from ioc.app.runtime import Role, Runtime, run_service
from ioc.core.settings import Settings
from ioc.live import session as live_session
from ioc.live.hub import LiveHub
from ioc.storage import Flavour, feed
from ioc.storage.feed import FeedEvent
from ioc.storage.maintenance import run_maintenance
from tests.conftest import TOKEN, eventually
from tests.proxy import database_behind_proxy

CONTROL = {"hello", "heartbeat", "resync"}
# An API process without ingest or upkeep: frames come from what the tests write themselves.
API_ONLY = frozenset({Role.API, Role.DISPATCH})


# -- helpers ----------------------------------------------------------------------------------


def alert(n: int, *, city: str = "vi-thanh", kind: str = "flood", pad: int = 0) -> FeedEvent:
    payload: dict[str, Any] = {
        "id": n,
        "rule": "flood-level",
        "state": "firing",
        "severity": "critical",
        "city": city,
        "ward": "phuong-5" if city == "vi-thanh" else None,
        "kind": kind,
        "annotations": {"summary_vi": f"Cảnh báo {n}", "summary_en": f"Alert {n}"},
    }
    if pad:
        payload["pad"] = "x" * pad
    return FeedEvent("alert", payload, city, payload["ward"], kind)


def device(device_id: str, city: str, kind: str, online: bool) -> FeedEvent:
    return FeedEvent(
        "device",
        {"device_id": device_id, "city": city, "ward": None, "kind": kind, "online": online},
        city,
        None,
        kind,
    )


def readings(points: dict[str, tuple[str, str, float]], *, second: int = 0) -> FeedEvent:
    """``{device_id: (city, kind, value)}`` → one readings row (metric ``m``)."""
    time = f"2026-11-28T19:{second // 60:02d}:{second % 60:02d}+07:00"
    return FeedEvent(
        "readings",
        {
            "devices": {
                d: {
                    "city": c,
                    "ward": None,
                    "kind": k,
                    "metrics": {"m": {"time": time, "value": v}},
                }
                for d, (c, k, v) in points.items()
            }
        },
    )


async def append(db: psycopg.AsyncConnection, *events: FeedEvent) -> list[int]:
    async with db.transaction():
        return await feed.append(db, events)


def ws_url(runtime: Runtime, **params: Any) -> str:
    query = urlencode({k: v for k, v in params.items() if v is not None})
    return f"ws://127.0.0.1:{runtime.http_port}/ws?{query}"


class Client:
    """A /ws client reading in the background; ``frames`` holds every frame received."""

    def __init__(self, conn: ClientConnection) -> None:
        self.conn = conn
        self.frames: list[dict[str, Any]] = []
        self.task: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, runtime: Runtime, *, token: str | None = TOKEN, **params: Any) -> Client:
        client = cls(await connect(ws_url(runtime, token=token, **params), max_size=None))
        client.start()
        return client

    def start(self) -> None:
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for message in self.conn:
                self.frames.append(orjson.loads(message))

    def data(self) -> list[dict[str, Any]]:
        return [f for f in self.frames if f["type"] not in CONTROL]

    def of(self, type: str) -> list[dict[str, Any]]:
        return [f for f in self.frames if f["type"] == type]

    async def has_seq(self, seq: int) -> bool:
        return any(f["seq"] >= seq and f["type"] not in CONTROL for f in self.frames)

    async def closed(self) -> bool:
        return self.task is not None and self.task.done()

    async def close(self) -> None:
        await self.conn.close()
        if self.task is not None:
            await self.task


@pytest.fixture
async def service(settings: Settings) -> AsyncIterator[Runtime]:
    async with run_service(settings, API_ONLY) as runtime:
        yield runtime


def hub_of(runtime: Runtime) -> LiveHub:
    assert runtime.live is not None
    return runtime.live


def assert_ordered_once(frames: list[dict[str, Any]]) -> None:
    seqs = [f["seq"] for f in frames]
    assert seqs == sorted(set(seqs)), seqs


# -- delivery and filters -----------------------------------------------------------------------


async def test_appended_events_reach_a_client_in_order(
    service: Runtime, db: psycopg.AsyncConnection
) -> None:
    client = await Client.open(service)
    await eventually(lambda: _has_type(client, "hello"))
    assert client.frames[0] == {
        **client.frames[0],
        "type": "hello",
        "seq": hub_of(service).last_seq,
    }
    seqs = await append(
        db,
        alert(1),
        device("vt-flood-01", "vi-thanh", "flood", False),
        readings({"vt-flood-01": ("vi-thanh", "flood", 0.82)}),
    )
    seqs += await append(db, alert(2))
    seqs += await append(db, FeedEvent("kpi", {"name": "lamps_on_pct", "value": 97.5}))
    await eventually(lambda: client.has_seq(seqs[-1]))
    got = client.data()
    assert [f["seq"] for f in got] == seqs and seqs == sorted(seqs)
    assert [f["type"] for f in got] == ["alert", "device", "readings", "alert", "kpi"]
    assert got[0]["data"]["annotations"]["summary_vi"] == "Cảnh báo 1"
    assert got[1]["data"] == {
        "device_id": "vt-flood-01",
        "city": "vi-thanh",
        "ward": None,
        "kind": "flood",
        "online": False,
    }
    assert got[2]["data"]["devices"]["vt-flood-01"]["metrics"]["m"]["value"] == 0.82
    assert got[4]["data"] == {"name": "lamps_on_pct", "value": 97.5}  # unknown types pass as-is
    assert all(f["time"].endswith("+07:00") for f in got)
    await client.close()


async def _has_type(client: Client, type: str) -> bool:
    return bool(client.of(type))


async def test_filters_by_type_city_ward_kind_and_readings_per_device(
    service: Runtime, db: psycopg.AsyncConnection
) -> None:
    alerts_only = await Client.open(service, types="alert")
    nga_bay = await Client.open(service, city="nga-bay")
    flood = await Client.open(service, kind="flood")
    ward = await Client.open(service, ward="phuong-5")
    # the unit that absorbed Phường V (1 July 2025) sees frames stored under the former id
    unit = await Client.open(service, ward="phuong-vi-tan")
    several = await Client.open(service, types="alert,device", kind="flood,lighting")
    everyone = [alerts_only, nga_bay, flood, ward, unit, several]
    for c in everyone:
        await eventually(lambda c=c: _has_type(c, "hello"))
    mixed = readings(
        {
            "vt-flood-01": ("vi-thanh", "flood", 0.8),
            "nb-lamp-0001": ("nga-bay", "lighting", 100.0),
            "nb-flood-01": ("nga-bay", "flood", 0.5),
        }
    )
    seqs = await append(
        db,
        alert(1, city="vi-thanh", kind="flood"),
        alert(2, city="nga-bay", kind="lighting"),
        device("nb-rain-01", "nga-bay", "rain", True),
        mixed,
        readings({"vt-lamp-0001": ("vi-thanh", "lighting", 90.0)}),
        FeedEvent("kpi", {"value": 1}),  # no place: never matches a place filter
    )
    # A sentinel every filter matches: once it is in, everything before it was delivered.
    (sentinel,) = await append(db, alert(3, city="nga-bay", kind="flood"))
    sentinel_ward = (await append(db, alert(4, city="vi-thanh", kind="flood")))[0]
    for c in everyone:
        local = any(c is x for x in (ward, unit))
        await eventually(lambda c=c, local=local: c.has_seq(sentinel_ward if local else sentinel))

    def seen(c: Client) -> list[tuple[str, Any]]:
        return [
            (f["type"], f["data"].get("id") or f["data"].get("device_id") or f["seq"])
            for f in c.data()
        ]

    s = seqs
    assert seen(alerts_only) == [("alert", 1), ("alert", 2), ("alert", 3), ("alert", 4)]
    assert seen(nga_bay) == [
        ("alert", 2),
        ("device", "nb-rain-01"),
        ("readings", s[3]),
        ("alert", 3),
    ]
    assert seen(flood) == [("alert", 1), ("readings", s[3]), ("alert", 3), ("alert", 4)]
    assert seen(ward) == [("alert", 1), ("alert", 4)]
    assert seen(unit) == [("alert", 1), ("alert", 4)]
    assert seen(several) == [("alert", 1), ("alert", 2), ("alert", 3), ("alert", 4)]
    (r,) = nga_bay.of("readings")
    assert set(r["data"]["devices"]) == {"nb-lamp-0001", "nb-flood-01"}
    (r,) = flood.of("readings")
    assert set(r["data"]["devices"]) == {"vt-flood-01", "nb-flood-01"}
    for c in everyone:
        assert_ordered_once(c.data())
        await c.close()


# -- resume -------------------------------------------------------------------------------------


async def test_resume_from_the_ring_buffer_delivers_exactly_the_missed_frames(
    service: Runtime, db: psycopg.AsyncConnection
) -> None:
    hub = hub_of(service)
    first = await Client.open(service)
    seqs = await append(db, *(alert(i) for i in range(5)))
    await eventually(lambda: first.has_seq(seqs[-1]))
    await first.close()
    last_seen = first.data()[-1]["seq"]
    missed = await append(db, *(alert(i) for i in range(5, 12)))
    await eventually(lambda: _hub_at(hub, missed[-1]))
    reads_before = hub.backlog_reads
    again = await Client.open(service, since=last_seen)
    more = await append(db, alert(12))
    await eventually(lambda: again.has_seq(more[-1]))
    assert [f["seq"] for f in again.data()] == missed + more
    assert hub.backlog_reads == reads_before  # served from memory
    await again.close()


async def _hub_at(hub: LiveHub, seq: int) -> bool:
    return hub.last_seq >= seq


@pytest.mark.parametrize(
    ("feed_buffer", "feed_buffer_bytes"),
    [(0, 2**20), (3, 2**20), (10_000, 2_000)],  # none, 3 frames, ~2 kB of frames
)
async def test_resume_from_the_database_while_frames_keep_coming(
    settings: Settings,
    db: psycopg.AsyncConnection,
    monkeypatch: pytest.MonkeyPatch,
    feed_buffer: int,
    feed_buffer_bytes: int,
) -> None:
    monkeypatch.setattr(live_session, "BACKLOG_PAGE", 4)  # many pages, many chances for a race
    settings = settings.model_copy(
        update={"feed_buffer": feed_buffer, "feed_buffer_bytes": feed_buffer_bytes}
    )
    async with run_service(settings, API_ONLY) as runtime:
        hub = hub_of(runtime)
        old = await append(db, *(alert(i) for i in range(30)))
        await eventually(lambda: _hub_at(hub, old[-1]))
        since = old[4]

        async def keep_appending() -> list[int]:
            out: list[int] = []
            for i in range(40):
                out += await append(db, alert(100 + i))
                await asyncio.sleep(0)
            return out

        writer = asyncio.create_task(keep_appending())
        client = await Client.open(runtime, since=since)
        new = await writer
        await eventually(lambda: client.has_seq(new[-1]))
        got = [f["seq"] for f in client.data()]
        assert got == old[5:] + new  # every frame after since, once, in order
        assert hub.backlog_reads > 0
        assert len(hub.ring) <= feed_buffer and hub.ring_bytes <= feed_buffer_bytes
        assert hub.ring_bytes == sum(f.size for f in hub.ring)
        await client.close()


async def test_a_pruned_resume_point_gets_resync_then_live_frames(
    settings: Settings, db: psycopg.AsyncConnection, flavour: Flavour
) -> None:
    gone = await append(db, *(alert(i) for i in range(5)))
    await db.execute("UPDATE feed_events SET time = now() - interval '3 days'")
    kept = await append(db, alert(5))
    report = await run_maintenance(
        db,
        flavour,
        retention_days=400,
        dead_letter_limit=1000,
        max_age_s=3600,
        feed_retention=timedelta(hours=48),
    )
    assert report.feed_events_pruned == 5
    async with run_service(settings, API_ONLY) as runtime:
        late = await Client.open(runtime, since=gone[1])
        await eventually(lambda: _has_type(late, "resync"))
        (resync,) = late.of("resync")
        assert resync["reason"] == "pruned" and resync["seq"] == kept[0]
        live = await append(db, alert(6))
        await eventually(lambda: late.has_seq(live[0]))
        assert [f["seq"] for f in late.data()] == live
        # Resuming right at the cut misses nothing: no resync, the kept row comes from the table.
        exact = await Client.open(runtime, since=gone[-1])
        await eventually(lambda: exact.has_seq(live[0]))
        assert not exact.of("resync") and [f["seq"] for f in exact.data()] == kept + live
        await late.close()
        await exact.close()


async def test_resume_across_rolled_back_seqs(
    settings: Settings, db: psycopg.AsyncConnection
) -> None:
    kept = await append(db, alert(1), alert(2))
    with contextlib.suppress(_Rollback):
        async with db.transaction():  # takes seqs, then rolls back: a hole with no rows
            await feed.append(db, [alert(3), alert(4)])
            raise _Rollback
    async with run_service(settings, API_ONLY) as runtime:
        assert hub_of(runtime).last_seq == kept[-1] + 2  # the head is a seq that has no row
        a = await Client.open(runtime, since=kept[0])
        b = await Client.open(runtime, since=kept[-1])
        # Both reach live without a newer row to carry them past the hole.
        await eventually(lambda: _subscribers(hub_of(runtime), 2))
        new = await append(db, alert(5))
        for c in (a, b):
            await eventually(lambda c=c: c.has_seq(new[0]))
        assert [f["seq"] for f in a.data()] == kept[1:] + new
        assert [f["seq"] for f in b.data()] == new and not a.of("resync") + b.of("resync")
        await a.close()
        await b.close()


class _Rollback(Exception):
    pass


# -- slow clients -------------------------------------------------------------------------------


async def stuck_client(runtime: Runtime, **params: Any) -> ClientConnection:
    """A client that reads nothing until told: tiny receive buffer, one-message queue."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", runtime.http_port or 0))
    return await connect(
        ws_url(runtime, token=TOKEN, **params),
        sock=sock,
        max_queue=1,
        max_size=None,
        ping_interval=None,
        compression=None,  # padding must take room in the socket buffers
    )


async def test_a_client_that_stops_reading_gets_resync_and_loses_no_alert(
    settings: Settings, db: psycopg.AsyncConnection
) -> None:
    settings = settings.model_copy(update={"ws_client_queue": 4, "feed_buffer": 3})
    async with run_service(settings, API_ONLY) as runtime:
        hub = hub_of(runtime)
        conn = await stuck_client(runtime)
        await eventually(lambda: _subscribed(hub))
        sent: list[int] = []

        async def overflowed() -> bool:
            if hub.resyncs:
                return True
            sent.extend(await append(db, *(alert(len(sent) + i, pad=50_000) for i in range(4))))
            return False

        await eventually(overflowed, timeout=120)
        sent += await append(db, alert(len(sent)), alert(len(sent) + 1))  # after the overflow
        client = Client(conn)
        client.start()  # reads again: what was in flight, the resync, then the close
        await eventually(lambda: client.closed())
        assert conn.close_code == live_session.CLOSE_TOO_SLOW
        resync = client.frames[-1]
        assert resync["type"] == "resync" and resync["reason"] == "too_slow"
        first = client.data()
        assert resync["seq"] == first[-1]["seq"] < sent[-1]
        again = await Client.open(runtime, since=resync["seq"])
        await eventually(lambda: again.has_seq(sent[-1]))
        assert [f["seq"] for f in first + again.data()] == sent  # every alert, once, in order
        await again.close()


async def _subscribed(hub: LiveHub) -> bool:
    return bool(hub.subscribers)


async def _subscribers(hub: LiveHub, n: int) -> bool:
    return len(hub.subscribers) == n


async def test_readings_are_coalesced_when_a_client_queue_is_full(
    settings: Settings, db: psycopg.AsyncConnection
) -> None:
    settings = settings.model_copy(update={"ws_client_queue": 4})
    async with run_service(settings, API_ONLY) as runtime:
        hub = hub_of(runtime)
        conn = await stuck_client(runtime)
        await eventually(lambda: _subscribed(hub))
        (sub,) = hub.subscribers
        pads = [f"pad-{i:04d}" for i in range(600)]  # big frames fill the socket buffers
        sent: list[int] = []
        last: dict[str, float] = {}

        async def coalescing() -> bool:
            if sub.coalesced:
                return True
            n = len(sent)
            points = {p: ("vi-thanh", "flood", float(n)) for p in pads}
            points["vt-flood-01"] = ("vi-thanh", "flood", float(n))
            sent.extend(await append(db, readings(points, second=n)))
            last.update({d: v for d, (_, _, v) in points.items()})
            return False

        await eventually(coalescing, timeout=120)
        n = len(sent)
        alert_seq = await append(db, alert(1))
        final = await append(
            db, readings({"vt-flood-01": ("vi-thanh", "flood", 999.0)}, second=n + 1)
        )
        last["vt-flood-01"] = 999.0
        client = Client(conn)
        client.start()
        await eventually(lambda: client.has_seq(final[0]))
        frames = client.data()
        assert_ordered_once(frames)
        assert not client.of("resync") and hub.resyncs == 0 and not await client.closed()
        assert [f["seq"] for f in frames if f["type"] == "alert"] == alert_seq
        got_readings = [f for f in frames if f["type"] == "readings"]
        assert len(got_readings) < len(sent) + 1  # some were merged
        assert got_readings[-1]["seq"] == final[0]
        state: dict[str, float] = {}
        for f in got_readings:  # what a screen shows after applying every frame received
            for d, dev in f["data"]["devices"].items():
                state[d] = dev["metrics"]["m"]["value"]
        assert state == last  # newest value per device and metric, nothing lost
        await client.close()


# -- auth, heartbeat, page ------------------------------------------------------------------------


async def test_auth_is_required_by_query_token_or_header(service: Runtime) -> None:
    for token in (None, "wrong"):
        async with connect(ws_url(service, token=token)) as conn:
            with pytest.raises(ConnectionClosed):
                await conn.recv()
            assert conn.close_code == live_session.CLOSE_UNAUTHORIZED
    async with connect(
        ws_url(service), additional_headers={"Authorization": f"Bearer {TOKEN}"}
    ) as conn:
        assert orjson.loads(await conn.recv())["type"] == "hello"
    async with connect(ws_url(service, token=TOKEN)) as conn:
        hello = orjson.loads(await conn.recv())
        assert hello["type"] == "hello" and hello["data"]["heartbeat_s"] == 15
    async with connect(ws_url(service, token=TOKEN, since="yesterday")) as conn:
        with pytest.raises(ConnectionClosed):
            await conn.recv()
        assert conn.close_code == live_session.CLOSE_BAD_REQUEST
        assert conn.close_reason is not None and "since" in conn.close_reason


async def test_issued_tokens_by_role(service: Runtime) -> None:
    """Viewer and operator tokens watch the feed; agency tokens do not (they see their own
    incidents through the agency API); a revoked token is refused."""
    from ioc.storage import tokens

    async with service.pool.connection() as conn:
        viewer_rec, viewer = await tokens.create(conn, name="wall 1", role="viewer")
        _, agency = await tokens.create(conn, name="pctt", role="agency:pctt")
    async with connect(ws_url(service, token=viewer)) as conn:
        assert orjson.loads(await conn.recv())["type"] == "hello"
    async with connect(ws_url(service, token=agency)) as conn:
        with pytest.raises(ConnectionClosed):
            await conn.recv()
        assert conn.close_code == live_session.CLOSE_FORBIDDEN
    async with service.pool.connection() as conn:
        assert await tokens.revoke(conn, viewer_rec.id)
    async with connect(ws_url(service, token=viewer)) as conn:
        with pytest.raises(ConnectionClosed):
            await conn.recv()
        assert conn.close_code == live_session.CLOSE_UNAUTHORIZED


async def test_heartbeats_carry_the_position(
    settings: Settings, db: psycopg.AsyncConnection
) -> None:
    settings = settings.model_copy(update={"ws_heartbeat_s": 0.2})
    async with run_service(settings, API_ONLY) as runtime:
        # Filtered out, yet the heartbeat's seq moves past it: resuming from there skips it.
        client = await Client.open(runtime, types="alert")
        (seq,) = await append(db, device("vt-flood-01", "vi-thanh", "flood", True))
        beat = await eventually(lambda: _heartbeat_at(client, seq))
        assert beat["time"].endswith("+07:00")
        assert not client.data()
        await client.close()


async def _heartbeat_at(client: Client, seq: int) -> dict[str, Any] | None:
    return next((f for f in client.of("heartbeat") if f["seq"] >= seq), None)


async def test_the_root_sends_browsers_to_the_wall_screen(service: Runtime) -> None:
    # One live client: the wall (/wall/); / is kept for old bookmarks.
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{service.http_port}") as http:
        r = await http.get("/")
    assert r.status_code == 307 and r.headers["location"] == "/wall/"


# -- several processes, database outages -----------------------------------------------------------


async def test_two_hubs_on_one_database_serve_the_same_frames(
    settings: Settings, db: psycopg.AsyncConnection
) -> None:
    async with (
        run_service(settings, API_ONLY) as one,
        run_service(settings, API_ONLY) as two,
    ):
        a = await Client.open(one)
        b = await Client.open(two, since=0)
        seqs = await append(db, alert(1), readings({"vt-flood-01": ("vi-thanh", "flood", 1.0)}))
        seqs += await append(db, device("vt-flood-01", "vi-thanh", "flood", False))
        for c in (a, b):
            await eventually(lambda c=c: c.has_seq(seqs[-1]))
        assert a.data() == b.data() and [f["seq"] for f in a.data()] == seqs
        await a.close()
        await b.close()


async def test_the_hub_rereads_after_losing_the_database(
    settings: Settings, db: psycopg.AsyncConnection
) -> None:
    proxy, proxied = await database_behind_proxy(settings)
    try:
        async with run_service(proxied, API_ONLY) as runtime:
            hub = hub_of(runtime)
            client = await Client.open(runtime)
            await eventually(lambda: _connected(hub))
            before = await append(db, alert(1))
            await eventually(lambda: client.has_seq(before[0]))
            await proxy.stop()  # the hub's connection is cut
            await eventually(lambda: _disconnected(hub))
            during = await append(db, alert(2), alert(3))  # written while the hub is away
            await proxy.start()
            after = await append(db, alert(4))
            await eventually(lambda: client.has_seq(after[0]), timeout=60)
            assert [f["seq"] for f in client.data()] == before + during + after
            await client.close()
    finally:
        await proxy.stop()


async def _connected(hub: LiveHub) -> bool:
    return hub.connected


async def _disconnected(hub: LiveHub) -> bool:
    return not hub.connected
