"""The device registry in PostgreSQL (table ``devices``, a contract name)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from ioc.core.devices import Device

# Listeners (ingest workers) reload their device index when this channel fires.
CHANNEL = "ioc_devices"

_COLUMNS = "id, kind, city, ward, name, lat, lon, attributes"


def row_to_device(row: dict[str, Any]) -> Device:
    return Device(
        id=row["id"],
        kind=row["kind"],
        city=row["city"],
        ward=row["ward"],
        name=row["name"],
        lat=row["lat"],
        lon=row["lon"],
        attributes=row["attributes"],
    )


async def insert_device(conn: psycopg.AsyncConnection, device: Device) -> bool:
    """Register a new device; False if the id is taken. Notifies ingest workers on commit."""
    cur = await conn.execute(
        f"INSERT INTO devices ({_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (id) DO NOTHING",
        _params(device),
    )
    if cur.rowcount:
        await conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, device.id))
    return cur.rowcount == 1


async def sync_site_devices(conn: psycopg.AsyncConnection, devices: Iterable[Device]) -> int:
    """Upsert the site file's devices (source 'site'); devices registered over REST are kept."""
    rows = [(*_params(d), "site") for d in devices]
    async with conn.cursor() as cur:
        await cur.executemany(
            f"INSERT INTO devices ({_COLUMNS}, source) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (id) DO UPDATE SET kind = excluded.kind, city = excluded.city,"
            " ward = excluded.ward, name = excluded.name, lat = excluded.lat, lon = excluded.lon,"
            " attributes = excluded.attributes, updated_at = now()"
            " WHERE (devices.kind, devices.city, devices.ward, devices.name, devices.lat,"
            " devices.lon, devices.attributes) IS DISTINCT FROM (excluded.kind, excluded.city,"
            " excluded.ward, excluded.name, excluded.lat, excluded.lon, excluded.attributes)",
            rows,
        )
    await conn.execute("SELECT pg_notify(%s, '*')", (CHANNEL,))
    return len(rows)


async def get_device(conn: psycopg.AsyncConnection, device_id: str) -> Device | None:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(f"SELECT {_COLUMNS} FROM devices WHERE id = %s", (device_id,))
        row = await cur.fetchone()
    return None if row is None else row_to_device(row)


async def list_devices(
    conn: psycopg.AsyncConnection,
    *,
    kind: str | None = None,
    city: str | None = None,
    ward: str | Sequence[str] | None = None,
    limit: int = 1000,
    after: str | None = None,
) -> list[Device]:
    """Devices ordered by id, keyset-paginated with ``after``; ``ward`` may be several ids (a
    unit and its former wards)."""
    wards = None if ward is None else [ward] if isinstance(ward, str) else list(ward)
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"SELECT {_COLUMNS} FROM devices"
            " WHERE (%(kind)s::text IS NULL OR kind = %(kind)s)"
            " AND (%(city)s::text IS NULL OR city = %(city)s)"
            " AND (%(ward)s::text[] IS NULL OR ward = ANY(%(ward)s::text[]))"
            " AND (%(after)s::text IS NULL OR id > %(after)s)"
            " ORDER BY id LIMIT %(limit)s",
            {"kind": kind, "city": city, "ward": wards, "after": after, "limit": limit},
        )
        return [row_to_device(r) for r in await cur.fetchall()]


async def device_places(conn: psycopg.AsyncConnection) -> dict[str, tuple[str, str, str | None]]:
    """id -> (kind, city, ward): what ingest checks a topic against and places live frames by."""
    cur = await conn.execute("SELECT id, kind, city, ward FROM devices")
    return {r[0]: (r[1], r[2], r[3]) for r in await cur.fetchall()}


async def device_live_state(conn: psycopg.AsyncConnection, device_id: str) -> dict[str, Any]:
    """Online status, last seen and the newest value of every metric."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT online, status_changed_at, last_seen_at FROM device_state WHERE device_id = %s",
            (device_id,),
        )
        state = await cur.fetchone() or {}
        await cur.execute(
            "SELECT metric, time, value FROM latest_readings WHERE device_id = %s ORDER BY metric",
            (device_id,),
        )
        latest = {
            r["metric"]: {"time": r["time"], "value": r["value"]} for r in await cur.fetchall()
        }
    return {
        "online": state.get("online"),
        "status_changed_at": state.get("status_changed_at"),
        "last_seen_at": state.get("last_seen_at"),
        "latest": latest,
    }


async def live_states(
    conn: psycopg.AsyncConnection, device_ids: list[str]
) -> dict[str, dict[str, Any]]:
    """:func:`device_live_state` for many devices in two queries (a page of the device list)."""
    out: dict[str, dict[str, Any]] = {
        i: {"online": None, "last_seen_at": None, "latest": {}} for i in device_ids
    }
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT device_id, online, last_seen_at FROM device_state WHERE device_id = ANY(%s)",
            (device_ids,),
        )
        for r in await cur.fetchall():
            out[r["device_id"]].update(online=r["online"], last_seen_at=r["last_seen_at"])
        await cur.execute(
            "SELECT device_id, metric, time, value FROM latest_readings WHERE device_id = ANY(%s)",
            (device_ids,),
        )
        for r in await cur.fetchall():
            out[r["device_id"]]["latest"][r["metric"]] = {"time": r["time"], "value": r["value"]}
    return out


def _params(d: Device) -> tuple[Any, ...]:
    return (d.id, d.kind, d.city, d.ward, d.name, d.lat, d.lon, Jsonb(d.attributes))


async def decommissioned_ids(conn: psycopg.AsyncConnection) -> frozenset[str]:
    """What ingest refuses with reason ``decommissioned``."""
    cur = await conn.execute("SELECT id FROM devices WHERE decommissioned_at IS NOT NULL")
    return frozenset(r[0] for r in await cur.fetchall())
