"""Alerts in PostgreSQL: engine transitions → ``alerts`` rows + ``alert_events`` history + feed.

One open row (pending or firing) per fingerprint (a partial unique index enforces it). Every
transition is an ``alert_events`` row carrying its reason (the values that made the rule move),
and a ``feed_events`` row in the same transaction, so the wall screen hears of exactly what
committed. Operator actions (acknowledge, resolve by hand) go through here too.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from ioc.risk import risk_level
from ioc.settings import DISPLAY_TIMEZONE
from ioc.storage.feed import FeedEvent, append
from rules.engine import OpenAlert, Transition

_COLUMNS = """a.id, a.fingerprint, a.rule, a.state, a.severity, a.labels, a.annotations,
    a.device_id, a.value, a.active_at, a.started_at, a.resolved_at, a.keep_firing_since,
    a.acknowledged_at, a.acknowledged_by, a.ack_comment, a.suppressed_by, a.escalated_at,
    a.escalation_level, a.resolved_by, a.resolve_reason, a.updated_at, a.risk_level"""


def _ts(t: float | None) -> datetime | None:
    return None if t is None else datetime.fromtimestamp(t, UTC)


_ZONE = ZoneInfo(DISPLAY_TIMEZONE)


def _iso(v: Any) -> Any:
    if isinstance(v, datetime):
        return v.astimezone(_ZONE).isoformat()
    return v


def iso_time(t: float) -> str:
    """Epoch seconds → RFC 3339 in the operators' zone (+07:00)."""
    return datetime.fromtimestamp(t, _ZONE).isoformat()


def alert_json(row: Mapping[str, Any]) -> dict[str, Any]:
    """The alert as the API and the live feed show it (times RFC 3339 in +07:00)."""
    labels = row["labels"] or {}
    out = {k: _iso(v) for k, v in row.items()}
    out["city"] = labels.get("city") or None
    out["ward"] = labels.get("ward") or None
    out["kind"] = labels.get("kind") or None
    out["domain"] = labels.get("domain")
    out["silenced"] = row.get("suppressed_by") is not None
    # QĐ 18/2021/QĐ-TTg disaster risk level (flood, rain, salinity rules): its colour and names
    level = risk_level(row.get("risk_level"))
    out["risk_level"] = level.level if level is not None else None
    out["risk"] = level.as_json() if level is not None else None
    return out


def feed_event(row: Mapping[str, Any]) -> FeedEvent:
    doc = alert_json(row)
    return FeedEvent("alert", doc, city=doc["city"], ward=doc["ward"], kind=doc["kind"])


def _reason(tr: Transition) -> dict[str, Any]:
    """JSON-safe reason: numbers and strings, times as RFC 3339."""
    out: dict[str, Any] = {}
    for k, v in tr.reason.items():
        if k == "time" and isinstance(v, int | float):
            out["reading_time"] = _iso(datetime.fromtimestamp(v, UTC))
        elif k == "peak_time" and isinstance(v, int | float):  # forecast_peak: the high water
            out[k] = _iso(datetime.fromtimestamp(v, UTC))
        elif isinstance(v, dict):
            out[k] = {kk: vv for kk, vv in v.items() if isinstance(vv, str | int | float | bool)}
        elif isinstance(v, str | int | float | bool | list) or v is None:
            out[k] = v
    return out


async def apply_transitions(
    conn: psycopg.AsyncConnection, transitions: Sequence[Transition]
) -> list[dict[str, Any]]:
    """Persist transitions in order; returns the alert row after each one that moved an alert,
    in order (an alert can move twice in one batch: a flash flood fires and resolves between two
    commits — the wall screen must see both). A ``pending`` immediately followed by ``firing`` of
    the same alert (a rule without ``for``) is reported once, as firing. Call inside a
    transaction; the caller appends the feed events (``feed_event(row)``) in the same one."""
    out: list[tuple[str, dict[str, Any]]] = []
    async with conn.cursor(row_factory=dict_row) as cur:
        for tr in transitions:
            row = await _apply(cur, tr)
            if row is None:
                continue
            await cur.execute(
                "INSERT INTO alert_events (alert_id, time, kind, reason) VALUES (%s, %s, %s, %s)",
                (row["id"], _ts(tr.at), tr.to, Jsonb(_reason(tr))),
            )
            if out and tr.to == "firing" and out[-1][0] == "pending":
                if out[-1][1]["id"] == row["id"]:
                    out.pop()
            out.append((tr.to, row))
    return [row for _, row in out]


async def _apply(cur: psycopg.AsyncCursor[dict[str, Any]], tr: Transition) -> dict[str, Any] | None:
    # an open alert's risk level only rises: GREATEST ignores NULL (a rule without risk)
    common = (tr.value, Jsonb(dict(tr.annotations)), tr.risk_level)
    if tr.to == "pending" or (tr.to == "firing" and tr.started_at == tr.active_at):
        # New alert (firing straight away when `for` is 0). If an open row exists (restored,
        # or redelivered input), it is the same alert: merge into it.
        await cur.execute(
            f"""UPDATE alerts a SET value = %s, annotations = %s,
                   risk_level = GREATEST(a.risk_level, %s), updated_at = now(),
                   state = CASE WHEN a.state = 'firing' THEN 'firing' ELSE %s END,
                   started_at = COALESCE(a.started_at, %s)
                WHERE fingerprint = %s AND state <> 'resolved' RETURNING {_COLUMNS}""",
            (*common, tr.to, _ts(tr.started_at), tr.fingerprint),
        )
        row = await cur.fetchone()
        if row is not None:
            return row
        device_id = tr.device_id
        await cur.execute(
            f"""INSERT INTO alerts AS a (fingerprint, rule, state, severity, labels, annotations,
                   device_id, value, active_at, started_at, risk_level)
                VALUES (%s, %s, %s, %s, %s, %s,
                        (SELECT id FROM devices WHERE id = %s), %s, %s, %s, %s)
                RETURNING {_COLUMNS}""",
            (
                tr.fingerprint, tr.rule, tr.to, tr.severity, Jsonb(dict(tr.labels)),
                Jsonb(dict(tr.annotations)), device_id, tr.value, _ts(tr.active_at),
                _ts(tr.started_at), tr.risk_level,
            ),
        )  # fmt: skip
        return await cur.fetchone()
    if tr.to == "firing":
        sql = """UPDATE alerts a SET state = 'firing', started_at = %s, value = %s,
                   annotations = %s, risk_level = GREATEST(a.risk_level, %s), updated_at = now()"""
        params: tuple[Any, ...] = (_ts(tr.started_at), *common)
    elif tr.to in ("resolved", "cancelled"):
        sql = """UPDATE alerts a SET state = 'resolved', resolved_at = %s, value = %s,
                   annotations = %s, risk_level = GREATEST(a.risk_level, %s),
                   keep_firing_since = NULL, updated_at = now()"""
        params = (_ts(tr.at), *common)
    elif tr.to in ("keep_firing", "refiring"):
        sql = """UPDATE alerts a SET keep_firing_since = %s, value = %s, annotations = %s,
                   risk_level = GREATEST(a.risk_level, %s)"""
        params = (_ts(tr.keep_firing_since), *common)
    else:
        raise ValueError(f"unknown transition {tr.to!r}")
    await cur.execute(
        f"{sql} WHERE fingerprint = %s AND state <> 'resolved' RETURNING {_COLUMNS}",
        (*params, tr.fingerprint),
    )
    # None: the alert was resolved by hand meanwhile — nothing left to move.
    return await cur.fetchone()


async def open_alerts(conn: psycopg.AsyncConnection) -> list[OpenAlert]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            """SELECT fingerprint, rule, state, active_at, started_at, keep_firing_since, value,
                      labels
               FROM alerts WHERE state <> 'resolved' AND rule NOT LIKE 'ioc.%'"""
        )
        rows = await cur.fetchall()
    return [
        OpenAlert(
            r["fingerprint"],
            r["rule"],
            r["state"],
            r["active_at"].timestamp(),
            r["started_at"].timestamp() if r["started_at"] else None,
            r["keep_firing_since"].timestamp() if r["keep_firing_since"] else None,
            r["value"],
            r["labels"],
        )
        for r in rows
    ]


async def resolve_orphans(
    conn: psycopg.AsyncConnection, orphans: Iterable[OpenAlert], at: float
) -> list[dict[str, Any]]:
    """Open alerts no current rule produces (rule removed or changed while stopped)."""
    rows: list[dict[str, Any]] = []
    async with conn.cursor(row_factory=dict_row) as cur:
        for a in orphans:
            await cur.execute(
                f"""UPDATE alerts a SET state = 'resolved', resolved_at = %s, updated_at = now(),
                       resolve_reason = 'rule or device changed'
                    WHERE fingerprint = %s AND state <> 'resolved' RETURNING {_COLUMNS}""",
                (_ts(at), a.fingerprint),
            )
            row = await cur.fetchone()
            if row is not None:
                await cur.execute(
                    "INSERT INTO alert_events (alert_id, time, kind, reason)"
                    " VALUES (%s, %s, 'resolved', %s)",
                    (row["id"], _ts(at), Jsonb({"rule": "changed or removed"})),
                )
                rows.append(row)
    return rows


async def get_alert(conn: psycopg.AsyncConnection, alert_id: int) -> dict[str, Any] | None:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(f"SELECT {_COLUMNS} FROM alerts a WHERE id = %s", (alert_id,))
        return await cur.fetchone()


async def history(conn: psycopg.AsyncConnection, alert_id: int) -> list[dict[str, Any]]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT time, kind, actor, reason FROM alert_events WHERE alert_id = %s ORDER BY id",
            (alert_id,),
        )
        return [{k: _iso(v) for k, v in r.items()} for r in await cur.fetchall()]


async def list_alerts(
    conn: psycopg.AsyncConnection,
    *,
    states: Sequence[str] = (),
    severity: str | None = None,
    labels: Mapping[str, str] | None = None,
    rule: str | None = None,
    limit: int = 500,
) -> list[dict[str, Any]]:
    where = ["TRUE"]
    params: list[Any] = []
    if states:
        where.append("a.state = ANY(%s)")
        params.append(list(states))
    if severity:
        where.append("a.severity = %s")
        params.append(severity)
    if rule:
        where.append("a.rule = %s")
        params.append(rule)
    if labels:
        where.append("a.labels @> %s")
        params.append(Jsonb(dict(labels)))
    params.append(limit)
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"""SELECT {_COLUMNS} FROM alerts a WHERE {" AND ".join(where)}
                ORDER BY CASE a.state WHEN 'firing' THEN 0 WHEN 'pending' THEN 1 ELSE 2 END,
                         CASE a.severity WHEN 'critical' THEN 0 WHEN 'warning' THEN 1 ELSE 2 END,
                         a.active_at DESC, a.id DESC
                LIMIT %s""",
            params,
        )
        return await cur.fetchall()


async def acknowledge(
    conn: psycopg.AsyncConnection, alert_id: int, who: str, comment: str, at: datetime
) -> dict[str, Any] | None:
    """Record who acknowledged; None when the alert is resolved or already acknowledged (the
    first acknowledgement stands)."""
    return await _operator_action(
        conn,
        """acknowledged_at = %(at)s, acknowledged_by = %(who)s, ack_comment = %(note)s""",
        "AND acknowledged_at IS NULL",
        {"id": alert_id, "at": at, "who": who, "note": comment},
        "acknowledged",
        {"comment": comment},
    )


async def resolve_by_hand(
    conn: psycopg.AsyncConnection, alert_id: int, who: str, reason: str, at: datetime
) -> dict[str, Any] | None:
    """An operator closes an alert; the engine learns of it (``hand_resolved_since``) and starts
    that series afresh, so a condition still true raises a new alert after its ``for``."""
    return await _operator_action(
        conn,
        """state = 'resolved', resolved_at = %(at)s, resolved_by = %(who)s,
           resolve_reason = %(note)s, keep_firing_since = NULL""",
        "",
        {"id": alert_id, "at": at, "who": who, "note": reason},
        "resolved_by_hand",
        {"reason": reason},
    )


async def _operator_action(
    conn: psycopg.AsyncConnection,
    assignments: str,
    condition: str,
    params: dict[str, Any],
    kind: str,
    reason: dict[str, Any],
) -> dict[str, Any] | None:
    """Change an open alert, record who did what in its history and tell the live feed — one
    transaction. ``assignments`` and ``condition`` are constant SQL of this module."""
    async with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"""UPDATE alerts a SET {assignments}, updated_at = now()
                WHERE id = %(id)s AND state <> 'resolved' {condition}
                RETURNING {_COLUMNS}""",
            params,
        )
        row = await cur.fetchone()
        if row is None:
            return None
        await cur.execute(
            "INSERT INTO alert_events (alert_id, time, kind, actor, reason)"
            " VALUES (%s, %s, %s, %s, %s)",
            (params["id"], params["at"], kind, params["who"], Jsonb(reason)),
        )
        await append(conn, [feed_event(row)])
        return row


async def hand_resolved_since(
    conn: psycopg.AsyncConnection, after_event_id: int
) -> tuple[int, list[str]]:
    """Fingerprints resolved by hand after an alert_events id; returns (newest id, fps)."""
    async with conn.cursor() as cur:
        await cur.execute(
            """SELECT e.id, a.fingerprint FROM alert_events e JOIN alerts a ON a.id = e.alert_id
               WHERE e.kind = 'resolved_by_hand' AND e.id > %s ORDER BY e.id""",
            (after_event_id,),
        )
        rows = await cur.fetchall()
    if not rows:
        return after_event_id, []
    return int(rows[-1][0]), [str(r[1]) for r in rows]


async def last_event_id(conn: psycopg.AsyncConnection) -> int:
    async with conn.cursor() as cur:
        await cur.execute("SELECT COALESCE(max(id), 0) FROM alert_events")
        row = await cur.fetchone()
    return int(row[0]) if row else 0


INTERNAL_PREFIX = "ioc."  # rules of alerts the IOC raises itself; the engine never restores them


async def raise_internal(
    conn: psycopg.AsyncConnection,
    *,
    rule: str,
    fingerprint: str,
    severity: str,
    labels: Mapping[str, str],
    annotations: Mapping[str, str],
    at: datetime,
) -> dict[str, Any] | None:
    """Fire an alert the IOC raises itself (an overdue incident): same table, history and
    semantics as rule alerts, but no rule file behind it. None if it is already open."""
    if not rule.startswith(INTERNAL_PREFIX):
        raise ValueError(f"internal alert rules start with {INTERNAL_PREFIX!r}")
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"""INSERT INTO alerts AS a (fingerprint, rule, state, severity, labels, annotations,
                   active_at, started_at)
                VALUES (%s, %s, 'firing', %s, %s, %s, %s, %s)
                ON CONFLICT (fingerprint) WHERE state <> 'resolved' DO NOTHING
                RETURNING {_COLUMNS}""",
            (fingerprint, rule, severity, Jsonb(dict(labels)), Jsonb(dict(annotations)), at, at),
        )
        row = await cur.fetchone()
        if row is not None:
            await cur.execute(
                "INSERT INTO alert_events (alert_id, time, kind, reason) VALUES (%s, %s, %s, %s)",
                (row["id"], at, "firing", Jsonb(dict(labels))),
            )
    return row


async def resolve_internal(
    conn: psycopg.AsyncConnection, fingerprint: str, at: datetime
) -> dict[str, Any] | None:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"""UPDATE alerts a SET state = 'resolved', resolved_at = %s, updated_at = now()
                WHERE fingerprint = %s AND state <> 'resolved' RETURNING {_COLUMNS}""",
            (at, fingerprint),
        )
        row = await cur.fetchone()
        if row is not None:
            await cur.execute(
                "INSERT INTO alert_events (alert_id, time, kind, reason) VALUES (%s, %s, %s, %s)",
                (row["id"], at, "resolved", Jsonb({})),
            )
    return row
