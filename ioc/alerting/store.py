"""Every SQL statement on ``alerts``, ``alert_events``, ``silences`` and ``maintenance_windows``.

One open row (pending or firing) per fingerprint (a partial unique index enforces it). Every
change of an alert is an ``alert_events`` row carrying its reason (the values that made the rule
move, who acted, why it was muted), written by the same function as the change. Functions that
change alerts return the changed rows and do not announce them: the caller runs
:func:`ioc.alerting.announce.announce` in the same transaction, so the wall screen and the
incident worker hear of exactly what committed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from ioc.core.localtime import SITE_ZONE, iso_value
from ioc.core.risk import risk_level
from ioc.rules.engine import OpenAlert, Transition

_COLUMNS = """a.id, a.fingerprint, a.rule, a.state, a.severity, a.labels, a.annotations,
    a.device_id, a.value, a.active_at, a.started_at, a.resolved_at, a.keep_firing_since,
    a.acknowledged_at, a.acknowledged_by, a.ack_comment, a.suppressed_by, a.escalated_at,
    a.escalation_level, a.resolved_by, a.resolve_reason, a.updated_at, a.risk_level"""


def _ts(t: float | None) -> datetime | None:
    return None if t is None else datetime.fromtimestamp(t, UTC)


def iso_time(t: float) -> str:
    """Epoch seconds → RFC 3339 in the operators' zone (+07:00)."""
    return datetime.fromtimestamp(t, SITE_ZONE).isoformat()


def alert_json(row: Mapping[str, Any]) -> dict[str, Any]:
    """The alert as the API and the live feed show it (times RFC 3339 in +07:00)."""
    labels = row["labels"] or {}
    out = {k: iso_value(v) for k, v in row.items()}
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


def _reason(tr: Transition) -> dict[str, Any]:
    """JSON-safe reason: numbers and strings, times as RFC 3339."""
    out: dict[str, Any] = {}
    for k, v in tr.reason.items():
        if k == "time" and isinstance(v, int | float):
            out["reading_time"] = iso_value(datetime.fromtimestamp(v, UTC))
        elif k == "peak_time" and isinstance(v, int | float):  # forecast_peak: the high water
            out[k] = iso_value(datetime.fromtimestamp(v, UTC))
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
    transaction; the caller announces the rows in the same one.

    One statement per transition (the move and its history row), all sent in one pipeline: an
    alert storm — a feeder trips and a thousand gauges fall silent at once — is one round trip,
    not two thousand, and the rule service holds up ingest's commits that much less (measured:
    2,002 transitions took 1.5 s one by one; docs/benchmarks.md)."""
    if not transitions:
        return []
    cursors = []
    async with conn.pipeline() as pipeline:
        for tr in transitions:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(*_move(tr))
            cursors.append(cur)
        await pipeline.sync()
        rows = [await cur.fetchone() for cur in cursors]
    out: list[tuple[str, dict[str, Any]]] = []
    for tr, row in zip(transitions, rows, strict=True):
        if row is None:
            continue  # the alert was resolved by hand meanwhile: nothing left to move
        if out and tr.to == "firing" and out[-1][0] == "pending" and out[-1][1]["id"] == row["id"]:
            out.pop()
        out.append((tr.to, row))
    return [row for _, row in out]


# The history row of a move, in the same statement: written exactly when the alert moved.
_HISTORY = """, history AS (
    INSERT INTO alert_events (alert_id, time, kind, reason) SELECT id, %s, %s, %s FROM moved)
SELECT * FROM moved"""


def _move(tr: Transition) -> tuple[str, tuple[Any, ...]]:
    """The statement that applies ``tr`` to its alert and records it; returns the alert row, or
    no row when there is no open alert to move."""
    # an open alert's risk level only rises: GREATEST ignores NULL (a rule without risk)
    common = (tr.value, Jsonb(dict(tr.annotations)), tr.risk_level)
    history = (_ts(tr.at), tr.to, Jsonb(_reason(tr)))
    if tr.to == "pending" or (tr.to == "firing" and tr.started_at == tr.active_at):
        # New alert (firing straight away when `for` is 0). If an open row exists (restored,
        # or redelivered input), it is the same alert: merge into it.
        query = f"""WITH moved AS (
            INSERT INTO alerts AS a (fingerprint, rule, state, severity, labels, annotations,
                device_id, value, active_at, started_at, risk_level)
            VALUES (%s, %s, %s, %s, %s, %s,
                    (SELECT id FROM devices WHERE id = %s), %s, %s, %s, %s)
            ON CONFLICT (fingerprint) WHERE state <> 'resolved' DO UPDATE SET
                value = excluded.value, annotations = excluded.annotations,
                risk_level = GREATEST(a.risk_level, excluded.risk_level), updated_at = now(),
                state = CASE WHEN a.state = 'firing' THEN 'firing' ELSE excluded.state END,
                started_at = COALESCE(a.started_at, excluded.started_at)
            RETURNING {_COLUMNS}){_HISTORY}"""
        params: tuple[Any, ...] = (
            tr.fingerprint, tr.rule, tr.to, tr.severity, Jsonb(dict(tr.labels)),
            Jsonb(dict(tr.annotations)), tr.device_id, tr.value, _ts(tr.active_at),
            _ts(tr.started_at), tr.risk_level,
        )  # fmt: skip
        return query, (*params, *history)
    if tr.to == "firing":
        sql = """UPDATE alerts a SET state = 'firing', started_at = %s, value = %s,
                   annotations = %s, risk_level = GREATEST(a.risk_level, %s), updated_at = now()"""
        params = (_ts(tr.started_at), *common)
    elif tr.to in ("resolved", "cancelled"):
        sql = """UPDATE alerts a SET state = 'resolved', resolved_at = %s, value = %s,
                   annotations = %s, risk_level = GREATEST(a.risk_level, %s),
                   keep_firing_since = NULL, updated_at = now()"""
        params = (_ts(tr.at), *common)
    elif tr.to in ("risk_raised", "advised"):
        sql = """UPDATE alerts a SET value = %s, annotations = %s,
                   risk_level = GREATEST(a.risk_level, %s), updated_at = now()"""
        params = common
    elif tr.to in ("keep_firing", "refiring"):
        sql = """UPDATE alerts a SET keep_firing_since = %s, value = %s, annotations = %s,
                   risk_level = GREATEST(a.risk_level, %s)"""
        params = (_ts(tr.keep_firing_since), *common)
    else:
        raise ValueError(f"unknown transition {tr.to!r}")
    query = f"""WITH moved AS (
        {sql} WHERE fingerprint = %s AND state <> 'resolved' RETURNING {_COLUMNS}){_HISTORY}"""
    return query, (*params, tr.fingerprint, *history)


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
        return [{k: iso_value(v) for k, v in r.items()} for r in await cur.fetchall()]


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
    """Change an open alert and record who did what in its history. Call inside a transaction
    and announce the row in it. ``assignments`` and ``condition`` are constant SQL of this
    module."""
    async with conn.cursor(row_factory=dict_row) as cur:
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


# -- what the rules service keeps in memory -----------------------------------------------------


async def open_ids(conn: psycopg.AsyncConnection) -> dict[str, tuple[int, dict[str, Any] | None]]:
    """Open alerts by fingerprint: (row id, why it is muted or None)."""
    async with conn.cursor() as cur:
        await cur.execute(
            "SELECT fingerprint, id, suppressed_by FROM alerts WHERE state <> 'resolved'"
        )
        return {str(fp): (int(i), why) for fp, i, why in await cur.fetchall()}


async def set_suppression(
    conn: psycopg.AsyncConnection, alert_id: int, reason: dict[str, Any] | None, at: float
) -> dict[str, Any] | None:
    """Mute (``reason``: the silence, window, inhibiting alert or outage) or unmute an open
    alert, with its history row; None when it was resolved meanwhile."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"""UPDATE alerts a SET suppressed_by = %s, updated_at = now()
                WHERE id = %s AND state <> 'resolved' RETURNING {_COLUMNS}""",
            (Jsonb(reason) if reason else None, alert_id),
        )
        row = await cur.fetchone()
        if row is not None:
            await cur.execute(
                "INSERT INTO alert_events (alert_id, time, kind, reason) VALUES (%s, %s, %s, %s)",
                (
                    alert_id,
                    _ts(at),
                    "suppressed" if reason else "unsuppressed",
                    Jsonb(reason or {}),
                ),
            )
    return row


async def escalate(
    conn: psycopg.AsyncConnection, at: float, *, max_level: int, after_s: float
) -> list[dict[str, Any]]:
    """Raise the escalation level of firing critical alerts nobody acknowledged (and nothing
    mutes) for ``after_s`` since they started or last escalated, up to ``max_level``."""
    now = _ts(at)
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"""UPDATE alerts a SET escalation_level = escalation_level + 1,
                   escalated_at = %(now)s, updated_at = now()
                WHERE state = 'firing' AND severity = 'critical'
                  AND acknowledged_at IS NULL AND suppressed_by IS NULL
                  AND escalation_level < %(max)s
                  AND COALESCE(escalated_at, started_at)
                      <= %(now)s - make_interval(secs => %(after)s)
                RETURNING {_COLUMNS}""",
            {"now": now, "max": max_level, "after": after_s},
        )
        rows = await cur.fetchall()
        for r in rows:
            await cur.execute(
                "INSERT INTO alert_events (alert_id, time, kind, reason)"
                " VALUES (%s, %s, 'escalated', %s)",
                (
                    r["id"],
                    now,
                    Jsonb(
                        {
                            "level": r["escalation_level"],
                            "unacknowledged_for_s": at - r["started_at"].timestamp(),
                        }
                    ),
                ),
            )
    return rows


async def silences_in_force(conn: psycopg.AsyncConnection) -> list[tuple[Any, ...]]:
    """Silences not yet ended or expired: (id, matchers, start, end) with times in epoch s."""
    async with conn.cursor() as cur:
        await cur.execute(
            "SELECT id, matchers, extract(epoch FROM starts_at),"
            " extract(epoch FROM COALESCE(expired_at, ends_at)) FROM silences"
            " WHERE COALESCE(expired_at, ends_at) > now()"
        )
        return await cur.fetchall()


async def maintenance_windows(conn: psycopg.AsyncConnection) -> list[tuple[Any, ...]]:
    """Every maintenance window: (id, name, matchers, weekdays, start time, duration s, valid
    from, valid to) with times in epoch s."""
    async with conn.cursor() as cur:
        await cur.execute(
            "SELECT id, name, matchers, weekdays, start_time, extract(epoch FROM duration),"
            " extract(epoch FROM valid_from), extract(epoch FROM valid_to)"
            " FROM maintenance_windows"
        )
        return await cur.fetchall()


# -- for the API and the incident worker ---------------------------------------------------------


async def labels(conn: psycopg.AsyncConnection, alert_id: int) -> dict[str, Any] | None:
    """The alert's labels, or None when there is no such alert."""
    cur = await conn.execute("SELECT labels FROM alerts WHERE id = %s", (alert_id,))
    row = await cur.fetchone()
    return None if row is None else dict(row[0])


async def lock_for_cap(conn: psycopg.AsyncConnection, alert_id: int) -> dict[str, Any] | None:
    """The alert a CAP message is about, locked: issuers of one alert are serialised, so its
    message numbers and reference chain stay gap-free and in order. Call inside a transaction."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            """SELECT id, rule, state, severity, labels, annotations, device_id, value,
                      active_at, started_at, risk_level FROM alerts WHERE id = %s FOR UPDATE""",
            (alert_id,),
        )
        return await cur.fetchone()


async def open_counts_by_rule(conn: psycopg.AsyncConnection) -> dict[str, dict[str, int]]:
    """{rule: {state: count}} of the alerts now pending or firing."""
    cur = await conn.execute(
        "SELECT rule, state, count(*) FROM alerts WHERE state <> 'resolved' GROUP BY 1, 2"
    )
    counts: dict[str, dict[str, int]] = {}
    for rule, state, n in await cur.fetchall():
        counts.setdefault(rule, {})[state] = n
    return counts


async def of_incident(
    conn: psycopg.AsyncConnection, source_alert_id: int | None, incident_id: int
) -> list[dict[str, Any]]:
    """The alerts an incident was opened from or linked to, oldest first."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            """SELECT a.id, a.rule, a.severity, a.device_id, a.state, a.value,
                      a.annotations FROM alerts a
               WHERE a.id = %s OR a.id IN (SELECT alert_id FROM incident_alerts
                                           WHERE incident_id = %s) ORDER BY a.id""",
            (source_alert_id, incident_id),
        )
        return await cur.fetchall()


_WITHOUT_INCIDENT = """a.state = 'firing' AND a.suppressed_by IS NULL
    AND NOT EXISTS (SELECT 1 FROM incidents i WHERE i.source_alert_id = a.id)
    AND NOT EXISTS (SELECT 1 FROM incident_alerts x WHERE x.alert_id = a.id)"""


async def firing_without_incident(conn: psycopg.AsyncConnection) -> list[int]:
    """Ids of firing, unmuted rule alerts no incident was opened from or linked to yet."""
    cur = await conn.execute(
        f"""SELECT a.id FROM alerts a
            WHERE {_WITHOUT_INCIDENT} AND a.rule NOT LIKE 'ioc.%' ORDER BY a.id"""
    )
    return [int(r[0]) for r in await cur.fetchall()]


async def newest_incident_of_device(
    conn: psycopg.AsyncConnection, device_id: str | None, *, category: str, open_sql: str
) -> int | None:
    """The newest incident of ``category`` opened from an alert of ``device_id`` that is still
    open by ``open_sql`` (:data:`ioc.incidents.store.OPEN_SQL`, a constant condition on ``i``)."""
    cur = await conn.execute(
        f"""SELECT i.id FROM incidents i JOIN alerts a ON a.id = i.source_alert_id
            WHERE {open_sql} AND i.category = %s AND a.device_id = %s
            ORDER BY i.id DESC LIMIT 1""",
        (category, device_id),
    )
    row = await cur.fetchone()
    return int(row[0]) if row is not None else None


async def claim_without_incident(
    conn: psycopg.AsyncConnection, alert_id: int
) -> dict[str, Any] | None:
    """Lock a firing alert still without an incident, with its device's place; None when
    another worker holds it or it was resolved, muted or linked meanwhile."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"""SELECT a.id, a.rule, a.severity, a.labels, a.annotations, a.device_id,
                      a.state, d.lat, d.lon, d.city, d.ward, d.attributes->>'road' AS road
               FROM alerts a LEFT JOIN devices d ON d.id = a.device_id
               WHERE a.id = %s AND {_WITHOUT_INCIDENT}
               FOR UPDATE OF a SKIP LOCKED""",
            (alert_id,),
        )
        return await cur.fetchone()


# -- silences and maintenance windows (the API's) -----------------------------------------------

_SILENCE_COLUMNS = "id, matchers, starts_at, ends_at, comment, created_by, created_at, expired_at"
_WINDOW_COLUMNS = """id, name, matchers, weekdays, start_time,
    (extract(epoch FROM duration) / 60)::int AS duration_minutes, valid_from, valid_to, comment,
    created_by"""


async def _one(conn: psycopg.AsyncConnection, query: str, params: Any) -> dict[str, Any] | None:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params)
        return await cur.fetchone()


async def _all(conn: psycopg.AsyncConnection, query: str, params: Any) -> list[dict[str, Any]]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params)
        return await cur.fetchall()


async def create_silence(
    conn: psycopg.AsyncConnection,
    matchers: list[dict[str, str]],
    starts_at: datetime,
    ends_at: datetime,
    created_by: str,
    comment: str,
) -> dict[str, Any]:
    row = await _one(
        conn,
        f"""INSERT INTO silences (matchers, starts_at, ends_at, created_by, comment)
            VALUES (%s, %s, %s, %s, %s) RETURNING {_SILENCE_COLUMNS}""",
        (Jsonb(matchers), starts_at, ends_at, created_by, comment),
    )
    assert row is not None
    return row


async def list_silences(
    conn: psycopg.AsyncConnection, *, include_expired: bool
) -> list[dict[str, Any]]:
    return await _all(
        conn,
        f"SELECT {_SILENCE_COLUMNS} FROM silences"
        " WHERE %s OR COALESCE(expired_at, ends_at) > now() ORDER BY starts_at DESC, id DESC",
        (include_expired,),
    )


async def get_silence(conn: psycopg.AsyncConnection, silence_id: int) -> dict[str, Any] | None:
    return await _one(conn, f"SELECT {_SILENCE_COLUMNS} FROM silences WHERE id = %s", (silence_id,))


async def expire_silence(conn: psycopg.AsyncConnection, silence_id: int) -> dict[str, Any] | None:
    """Expire now (kept for the record, as in Alertmanager); an expired one keeps its time."""
    return await _one(
        conn,
        f"""UPDATE silences SET expired_at = LEAST(COALESCE(expired_at, now()), now())
            WHERE id = %s RETURNING {_SILENCE_COLUMNS}""",
        (silence_id,),
    )


async def create_window(
    conn: psycopg.AsyncConnection,
    *,
    name: str,
    matchers: list[dict[str, str]],
    weekdays: list[int],
    start_time: Any,
    duration: timedelta,
    valid_from: datetime | None,
    valid_to: datetime | None,
    created_by: str,
    comment: str,
) -> dict[str, Any]:
    row = await _one(
        conn,
        f"""INSERT INTO maintenance_windows (name, matchers, weekdays, start_time, duration,
                valid_from, valid_to, created_by, comment)
            VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING {_WINDOW_COLUMNS}""",
        (name, Jsonb(matchers), weekdays, start_time, duration, valid_from, valid_to,
         created_by, comment),
    )  # fmt: skip
    assert row is not None
    return row


async def list_windows(conn: psycopg.AsyncConnection) -> list[dict[str, Any]]:
    return await _all(conn, f"SELECT {_WINDOW_COLUMNS} FROM maintenance_windows ORDER BY id", ())


async def delete_window(conn: psycopg.AsyncConnection, window_id: int) -> bool:
    cur = await conn.execute("DELETE FROM maintenance_windows WHERE id = %s", (window_id,))
    return cur.rowcount > 0
