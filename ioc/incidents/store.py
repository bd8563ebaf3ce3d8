"""Incidents in PostgreSQL: open, join, step through the lifecycle, merge, split, rate.

Every change is one transaction holding the incident row (``FOR UPDATE``), its history row
(``incident_events``: who, when, from → to, note), the live-feed frame and, when an agency must
hear of it, its outbox rows (:func:`ioc.dispatch.outbox.enqueue`) — so an agency is told exactly
when the change committed, and a crash in between loses nothing.

No clock is read here: every change takes its time (``at``) from the caller — the API route or
the incident worker's pass — so one change has one time in its row, history, frame and message.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from ioc.alerting import store as alert_store
from ioc.alerting.announce import frame as alert_frame
from ioc.core.localtime import iso_local, iso_value
from ioc.core.settings import Settings
from ioc.core.site import Site
from ioc.dispatch import outbox
from ioc.incidents.lifecycle import (
    AGENCY_ACTIVE,
    OPEN,
    Actor,
    Status,
    StepError,
    check,
    check_extension,
)
from ioc.routing.table import Routing
from ioc.storage.feed import FeedEvent, append


async def _enqueue(conn: psycopg.AsyncConnection, ctx: Context, **kwargs: Any) -> None:
    await outbox.enqueue(conn, settings=ctx.settings, **kwargs)


COLUMNS = """i.id, i.category, i.severity, i.status, i.title, i.description, i.city, i.ward,
    i.lat, i.lon, i.agency_id, i.opened_at, i.deadline_at, i.paused_since, i.dispatched_at,
    i.accepted_at, i.resolved_at, i.closed_at, i.overdue_at, i.rating, i.rating_comment,
    i.merged_into, i.source_alert_id, i.version, i.updated_at, i.source, i.first_dispatched_at,
    i.extended_at, i.extension_reason, i.deadline_before_extension"""
SOURCES = ("report", "alert", "operator")  # what opened an incident (migration 0011)
OPEN_SQL = "i.status NOT IN ('resolved', 'closed') AND i.merged_into IS NULL"
OVERDUE_RULE = "ioc.incident-overdue"  # an alert the IOC raises itself (not from a rule file)
EARTH_RADIUS_M = 6_371_000.0
# What an agency never sees: the citizens' ratings and comments (they go to the IOC's KPIs) and
# the channels' own ids of the reports (they lead back to a person in the channel's system).
AGENCY_HIDDEN_FIELDS = frozenset({"rating", "rating_comment", "external_id"})
DISPATCH_MAX_REPORTS = 50  # reports carried in one dispatch message (reports_total counts all)


@dataclass(frozen=True, slots=True)
class Context:
    """What incident changes need besides the connection: routing data, site, settings."""

    routing: Routing
    site: Site
    settings: Settings


@dataclass(frozen=True, slots=True)
class Who:
    """The actor of a change: its kind (for the lifecycle's permissions) and its name."""

    kind: Actor
    name: str
    agency: str | None = None  # set for agency tokens: they may only touch their incidents


SYSTEM = Who(Actor.SYSTEM, "system")


class IncidentNotFound(LookupError):
    pass


class CategoryError(StepError):
    """An unknown category (service code): answered 422 naming it."""


def incident_json(row: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    """The incident as the API, the feed and agencies see it at ``now`` (times RFC 3339 in
    +07:00; ``overdue`` and ``seconds_left`` as of ``now``)."""
    out = {k: iso_value(v) for k, v in row.items()}
    deadline = row.get("deadline_at")
    is_open = row["status"] not in ("resolved", "closed") and row.get("merged_into") is None
    # a paused clock stands still: the countdown is frozen where the pause began, and a paused
    # incident only counts as overdue if it already was when it paused
    clock = row.get("paused_since") or now
    out["open"] = is_open
    out["overdue"] = bool(
        is_open
        and deadline is not None
        and (row.get("overdue_at") is not None or (clock is now and now > deadline))
    )
    out["seconds_left"] = (
        round((deadline - clock).total_seconds()) if is_open and deadline is not None else None
    )
    return out


def feed_event(row: Mapping[str, Any], at: datetime) -> FeedEvent:
    """The incident's feed frame for a change made at ``at``."""
    return FeedEvent(
        "incident", incident_json(row, at), city=row["city"], ward=row["ward"], kind=None
    )


async def record_event(
    cur: psycopg.AsyncCursor[dict[str, Any]],
    incident_id: int,
    kind: str,
    who: Who,
    *,
    at: datetime,
    from_status: str | None = None,
    to_status: str | None = None,
    note: str | None = None,
    data: Mapping[str, Any] | None = None,
) -> None:
    await cur.execute(
        """INSERT INTO incident_events (incident_id, time, kind, actor, from_status, to_status,
               note, data) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)""",
        (incident_id, at, kind, who.name, from_status, to_status, note, Jsonb(dict(data or {}))),
    )


async def _fetch(
    cur: psycopg.AsyncCursor[dict[str, Any]], incident_id: int, *, lock: bool
) -> dict[str, Any]:
    await cur.execute(
        f"SELECT {COLUMNS} FROM incidents i WHERE i.id = %s{' FOR UPDATE' if lock else ''}",
        (incident_id,),
    )
    row = await cur.fetchone()
    if row is None:
        raise IncidentNotFound(f"no incident {incident_id}")
    return row


async def _announce(
    conn: psycopg.AsyncConnection,
    ctx: Context,
    row: Mapping[str, Any],
    kind: str | None,
    *,
    at: datetime,
    agency: str | None = None,
) -> None:
    """Feed frame always; outbox rows for the agency when ``kind`` says it must hear of it."""
    await append(conn, [feed_event(row, at)])
    target = agency or row["agency_id"]
    if kind is not None and target:
        await _enqueue(
            conn,
            ctx,
            incident_id=row["id"],
            agency_id=target,
            kind=kind,
            payload=await dispatch_payload(conn, row, at),
        )


async def dispatch_payload(
    conn: psycopg.AsyncConnection, row: Mapping[str, Any], at: datetime
) -> dict[str, Any]:
    """What an agency receives about a change made at ``at``: the incident, its reports
    (without the reporters' personal data) and the alerts behind it."""
    doc = {k: v for k, v in incident_json(row, at).items() if k not in AGENCY_HIDDEN_FIELDS}
    async with conn.cursor(row_factory=dict_row) as cur:
        # bounded: a flooded street can gather hundreds of reports; the message carries the
        # first ones and the count, the agency API lists them all
        await cur.execute(
            """SELECT id, source, service_code, lat, lon, address, description, media_url,
                      reported_at, count(*) OVER () AS total
               FROM reports WHERE incident_id = %s ORDER BY id LIMIT %s""",
            (row["id"], DISPATCH_MAX_REPORTS),
        )
        rows = await cur.fetchall()
        doc["reports_total"] = rows[0]["total"] if rows else 0
        doc["reports"] = [{k: iso_value(v) for k, v in r.items() if k != "total"} for r in rows]
    doc["alerts"] = await alert_store.of_incident(conn, row["source_alert_id"], row["id"])
    return doc


async def lock_category(conn: psycopg.AsyncConnection, category: str) -> None:
    """Serialise "join the nearest open incident, else open one" per category for the rest of
    the transaction: two workers (API processes) routing reports or alerts of one category at
    once would otherwise each find nothing and open the same problem twice. Taken before any
    incident row lock and before the feed lock, always in that order."""
    await conn.execute(
        "SELECT pg_advisory_xact_lock(hashtext('incident-route:' || %s))", (category,)
    )


async def open_incident(
    conn: psycopg.AsyncConnection,
    ctx: Context,
    *,
    category: str,
    severity: str,
    title: str,
    who: Who,
    description: str = "",
    city: str | None = None,
    ward: str | None = None,
    lat: float | None = None,
    lon: float | None = None,
    agency_id: str | None = None,
    source_alert_id: int | None = None,
    source: str | None = None,
    at: datetime,
    note: str | None = None,
    dispatch: bool = True,
    labels: Mapping[str, str] | None = None,
    route_text: str | None = None,
) -> dict[str, Any]:
    """Open an incident with its routing (agency, agencies working with it, deadline) and,
    unless ``dispatch`` is false or no agency is known, dispatch it at once. Call inside a
    transaction. ``at`` is when the problem was made known (a report's receipt): the deadline
    runs from it. ``labels`` (an alert's) and ``route_text`` (a report's description and
    address; title and description by default) are what the routing file's routes look at."""
    if category not in ctx.routing.by_code:
        raise CategoryError(f"category: unknown category {category!r}")
    ward = ctx.site.current_ward_id(ward)  # a former ward id: the unit that absorbed it
    if ward is None and lat is not None and lon is not None:
        found = ctx.site.ward_of(lat, lon)
        if found is not None:
            ward, city = found.id, city or found.city
    text = route_text if route_text is not None else f"{title}\n{description}"
    assignment = ctx.routing.assign(category, city, ward, ctx.site, text=text, labels=labels)
    agency = ctx.site.current_agency_id(agency_id) or assignment.agency
    also = tuple(a for a in assignment.also if a != agency)
    deadline = ctx.routing.deadline(category, severity, at)
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"""INSERT INTO incidents AS i (category, severity, status, title, description, city,
                   ward, lat, lon, agency_id, opened_at, deadline_at, source_alert_id,
                   paused_since, source)
                VALUES (%s, %s, 'new', %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
                RETURNING {COLUMNS}""",
            (category, severity, title, description, city, ward, lat, lon, agency, at, deadline,
             source_alert_id, at if Status.NEW.value in ctx.routing.pause_in_status else None,
             _source(source, source_alert_id)),
        )  # fmt: skip
        row = await cur.fetchone()
        assert row is not None
        await record_event(
            cur, row["id"], "opened", who, at=at, to_status="new", note=note,
            data={"agency": agency, "also": list(also), "route": assignment.route,
                  "deadline": iso_value(deadline),
                  "deadline_rule": str(ctx.routing.deadline_rule(category, severity))},
        )  # fmt: skip
    if dispatch and agency:
        return await take_step(conn, ctx, row["id"], "dispatch", who, note=None, at=at)
    await _announce(conn, ctx, row, None, at=at)
    return row


def _source(source: str | None, source_alert_id: int | None) -> str:
    if source is None:
        return "alert" if source_alert_id is not None else "operator"
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, not {source!r}")
    return source


async def take_step(
    conn: psycopg.AsyncConnection,
    ctx: Context,
    incident_id: int,
    step_name: str,
    who: Who,
    *,
    note: str | None,
    at: datetime,
    data: Mapping[str, Any] | None = None,
    agency_id: str | None = None,
    expected_version: int | None = None,
) -> dict[str, Any]:
    """Apply a lifecycle step (:mod:`ioc.incidents.lifecycle`) and record it; raises
    :class:`StepError` (not allowed now / not permitted) or :class:`IncidentNotFound` (also for
    an agency asking about another agency's incident: it must not learn that it exists)."""
    async with conn.cursor(row_factory=dict_row) as cur:
        row = await _fetch(cur, incident_id, lock=True)
        if who.agency is not None and not _same_agency(ctx, row["agency_id"], who.agency):
            raise IncidentNotFound(f"no incident {incident_id}")
        if row["merged_into"] is not None:
            raise StepError(f"incident {incident_id} was merged into {row['merged_into']}")
        _check_version(row, expected_version)
        step = check(step_name, row["status"], who.kind, note)
        target = step.target or Status(row["status"])
        sets = ["status = %(to)s", "version = version + 1", "updated_at = now()"]
        params: dict[str, Any] = {"id": incident_id, "to": target.value, "at": at}
        if agency_id is not None:
            sets.append("agency_id = %(agency)s")
            params["agency"] = agency_id
        stamp = {
            Status.DISPATCHED: "dispatched_at",
            Status.ACCEPTED: "accepted_at",
            Status.RESOLVED: "resolved_at",
            Status.CLOSED: "closed_at",
        }.get(target)
        if stamp is not None:
            sets.append(f"{stamp} = %(at)s")
        if target is Status.DISPATCHED:  # the IOC's forwarding clock stops at the first one
            sets.append("first_dispatched_at = coalesce(first_dispatched_at, %(at)s)")
        if step.name == "reopen":
            # the old deadline stands (the KPI counts it); overdue_at is cleared so a reopened
            # incident past it raises a fresh overdue alert on the next pass
            sets += ["resolved_at = NULL", "closed_at = NULL", "accepted_at = NULL",
                     "overdue_at = NULL", "rating = NULL", "rating_comment = NULL"]  # fmt: skip
        sets += _clock_changes(ctx, row, target, at, params)
        await cur.execute(
            f"UPDATE incidents i SET {', '.join(sets)} WHERE id = %(id)s RETURNING {COLUMNS}",
            params,
        )
        new = await cur.fetchone()
        assert new is not None
        await record_event(
            cur, incident_id, step.name, who, at=at, from_status=row["status"],
            to_status=target.value, note=note, data=data,
        )  # fmt: skip
    if target in (Status.RESOLVED, Status.CLOSED) or (
        row["overdue_at"] is not None and new["overdue_at"] is None  # clock resumed in time
    ):
        await _resolve_overdue_alert(conn, row, at)
    kind = {
        "dispatch": "incident.dispatched",
        "reopen": "incident.reopened",
        "resolve": "incident.resolved",  # an operator resolved it for the agency
        "close": "incident.closed",
    }.get(step.name)
    # The agency's own steps need no message back to it; a dispatch goes to the (new) agency.
    await _announce(conn, ctx, new, kind if who.kind is not Actor.AGENCY else None, at=at)
    if step.name == "dispatch" and who.kind is not Actor.AGENCY:
        await _notify_also(conn, ctx, new, at)
    return new


async def _notify_also(
    conn: psycopg.AsyncConnection, ctx: Context, row: Mapping[str, Any], at: datetime
) -> None:
    """The agencies the routing says work with the lead one (``also``, recorded when the
    incident was opened) hear of the dispatch: ``incident.notified``, the same payload plus
    ``lead_agency``. They do not own it (no deadline, no agency steps)."""
    async with conn.cursor() as cur:
        await cur.execute(
            """SELECT data->'also' FROM incident_events
               WHERE incident_id = %s AND kind = 'opened' ORDER BY id LIMIT 1""",
            (row["id"],),
        )
        found = await cur.fetchone()
    also = [a for a in (found[0] if found and isinstance(found[0], list) else [])
            if isinstance(a, str) and a and a != row["agency_id"]]  # fmt: skip
    if not also:
        return
    payload = {**await dispatch_payload(conn, row, at), "lead_agency": row["agency_id"]}
    for agency in also:
        await _enqueue(
            conn, ctx, incident_id=row["id"], agency_id=agency, kind="incident.notified",
            payload=payload,
        )  # fmt: skip


def _same_agency(ctx: Context, stored: str | None, agency: str) -> bool:
    """Whether an incident stored under ``stored`` is ``agency``'s, former ids included (an
    ``agency:pctt`` token and incidents stored for ``pctt`` are the civil-defence command's)."""
    if stored is None:
        return False
    return ctx.site.current_agency_id(stored) == ctx.site.current_agency_id(agency)


def _check_version(row: Mapping[str, Any], expected: int | None) -> None:
    """Optimistic concurrency: an operator acting on a stale view is told to reload."""
    if expected is not None and row["version"] != expected:
        raise StepError(
            f"incident {row['id']} changed meanwhile (version {row['version']}, "
            f"you had {expected}): reload it"
        )


def _clock_changes(
    ctx: Context, row: Mapping[str, Any], target: Status, at: datetime, params: dict[str, Any]
) -> list[str]:
    """Stop the deadline clock on entering a paused status; on leaving it, move the deadline
    later by the time spent there (working time for working-time deadlines) — and if that moves
    it past now, the incident is no longer overdue."""
    paused = ctx.routing.pause_in_status
    if target.value in paused and row["paused_since"] is None:
        params["paused_since"] = at
        return ["paused_since = %(paused_since)s"]
    if target.value not in paused and row["paused_since"] is not None and row["deadline_at"]:
        rule = ctx.routing.deadline_rule(row["category"], row["severity"])
        if rule.unit == "hours":
            shift = at - row["paused_since"]
            params["deadline"] = row["deadline_at"] + shift
        else:
            cal = ctx.routing.calendar
            shift = cal.working_time_between(row["paused_since"], at)
            params["deadline"] = cal.add_working_time(
                row["deadline_at"], shift / timedelta(hours=1)
            )
        if params["deadline"] > at:
            return ["paused_since = NULL", "deadline_at = %(deadline)s", "overdue_at = NULL"]
        return ["paused_since = NULL", "deadline_at = %(deadline)s"]
    return []


async def reassign(
    conn: psycopg.AsyncConnection, ctx: Context, incident_id: int, agency_id: str, who: Who,
    note: str, expected_version: int | None = None, *, at: datetime,
) -> dict[str, Any]:  # fmt: skip
    """Give the incident to another agency; if it was with an agency, dispatch it anew there
    and tell the old one it is withdrawn."""
    if ctx.site.find_agency(agency_id) is None:
        raise StepError(f"unknown agency {agency_id!r}")
    agency_id = ctx.site.agency(agency_id).id  # a former id: the agency that took over
    async with conn.cursor(row_factory=dict_row) as cur:
        row = await _fetch(cur, incident_id, lock=True)
        if row["status"] not in OPEN or row["merged_into"] is not None:
            raise StepError(f"incident {incident_id} is {row['status']}; reopen it first")
        _check_version(row, expected_version)
        old = row["agency_id"]
        if old == agency_id:
            raise StepError(f"incident {incident_id} is already with {agency_id}")
        await cur.execute(
            f"""UPDATE incidents i SET agency_id = %s, version = version + 1, updated_at = now(),
                   status = CASE WHEN status = 'new' THEN status ELSE 'dispatched' END,
                   dispatched_at = CASE WHEN status = 'new' THEN dispatched_at ELSE %s END,
                   accepted_at = NULL
                WHERE id = %s RETURNING {COLUMNS}""",
            (agency_id, at, incident_id),
        )
        new = await cur.fetchone()
        assert new is not None
        await record_event(
            cur, incident_id, "reassigned", who, at=at,
            from_status=row["status"], to_status=new["status"], note=note,
            data={"from": old, "to": agency_id},
        )  # fmt: skip
    if old and old != agency_id and row["status"] != Status.NEW:
        await _enqueue(
            conn, ctx, incident_id=incident_id, agency_id=old, kind="incident.withdrawn",
            payload=incident_json(new, at),
        )  # fmt: skip
    await _announce(
        conn, ctx, new, "incident.dispatched" if new["status"] != "new" else None, at=at
    )
    return new


async def rate_incident(
    conn: psycopg.AsyncConnection,
    incident_id: int,
    *,
    rating: int,
    comment: str | None,
    actor: str,
    at: datetime,
    ctx: Context | None = None,
) -> dict[str, Any]:
    """A citizen's rating (1–5), given at ``at``, of a resolved or closed incident; a resolved
    one closes. When several reports of one incident are rated, the incident keeps the latest
    rating."""
    if not 1 <= rating <= 5:
        raise StepError("rating must be 1 to 5")
    who = Who(Actor.CITIZEN, actor)
    async with conn.cursor(row_factory=dict_row) as cur:
        row = await _fetch(cur, incident_id, lock=True)
        if row["status"] not in (Status.RESOLVED, Status.CLOSED):
            raise StepError(f"incident {incident_id} is {row['status']}: rate it once resolved")
        await cur.execute(
            f"""UPDATE incidents i SET rating = %s, rating_comment = %s, status = 'closed',
                   closed_at = COALESCE(closed_at, %s), version = version + 1, updated_at = now()
                WHERE id = %s RETURNING {COLUMNS}""",
            (rating, comment, at, incident_id),
        )
        new = await cur.fetchone()
        assert new is not None
        await record_event(
            cur, incident_id, "rated", who, at=at, from_status=row["status"],
            to_status="closed", note=comment, data={"rating": rating},
        )  # fmt: skip
    if ctx is not None and row["status"] == Status.RESOLVED:
        await _announce(conn, ctx, new, "incident.closed", at=at)  # the agency's case is done
    else:
        await append(conn, [feed_event(new, at)])
    return new


async def join_report(
    conn: psycopg.AsyncConnection,
    incident_id: int,
    report_id: int,
    who: Who,
    distance_m: float,
    *,
    at: datetime,
) -> int | None:
    """Add a report to an open incident; follows a merge to the incident that stays. Returns
    the incident joined, or None when it is no longer open (resolved or closed meanwhile by an
    operator): the caller opens a new one."""
    async with conn.cursor(row_factory=dict_row) as cur:
        for _ in range(10):  # merge chains are short; the bound only guards against a cycle
            row = await _fetch(cur, incident_id, lock=True)
            if row["merged_into"] is None:
                break
            incident_id = row["merged_into"]
        if row["merged_into"] is not None or row["status"] not in OPEN:
            return None
        await cur.execute(
            "UPDATE reports SET incident_id = %s, routed_at = now() WHERE id = %s",
            (incident_id, report_id),
        )
        await cur.execute(
            "UPDATE incidents SET updated_at = now(), version = version + 1 WHERE id = %s",
            (incident_id,),
        )
        await record_event(
            cur, incident_id, "report_joined", who, at=at,
            data={"report": report_id, "distance_m": round(distance_m, 1)},
        )  # fmt: skip
    return incident_id


def distance_sql(lat: str, lon: str) -> str:
    """Great-circle distance in metres between incident ``i`` and the point ``(lat, lon)``
    (SQL parameter names); haversine, exact enough at city scale."""
    return (
        f"{EARTH_RADIUS_M} * 2 * asin(sqrt(power(sin(radians(%({lat})s - i.lat) / 2), 2)"
        f" + cos(radians(i.lat)) * cos(radians(%({lat})s))"
        f" * power(sin(radians(%({lon})s - i.lon) / 2), 2)))"
    )


async def nearest_open(
    conn: psycopg.AsyncConnection,
    *,
    category: str,
    lat: float,
    lon: float,
    radius_m: float,
    since: datetime,
) -> tuple[int, float] | None:
    """The nearest open incident of ``category`` opened after ``since`` within ``radius_m``."""
    dist = distance_sql("lat", "lon")
    async with conn.cursor() as cur:
        await cur.execute(
            f"""SELECT i.id, {dist} AS d FROM incidents i
                WHERE {OPEN_SQL} AND i.category = %(cat)s AND i.opened_at >= %(since)s
                  AND i.lat IS NOT NULL AND {dist} <= %(r)s
                ORDER BY d LIMIT 1""",
            {"lat": lat, "lon": lon, "cat": category, "since": since, "r": radius_m},
        )
        row = await cur.fetchone()
    return (int(row[0]), float(row[1])) if row else None


async def merge(
    conn: psycopg.AsyncConnection,
    ctx: Context,
    source_id: int,
    into_id: int,
    who: Who,
    note: str,
    *,
    at: datetime,
) -> dict[str, Any]:
    """Fold ``source`` into ``into`` (the same problem opened twice): its reports and alerts move
    over, it closes as merged, and its agency is told the work is withdrawn if it differs."""
    if source_id == into_id:
        raise StepError("an incident cannot be merged into itself")
    async with conn.cursor(row_factory=dict_row) as cur:
        # lock both in id order: two operators merging the same pair the other way round must
        # not deadlock
        rows = {i: await _fetch(cur, i, lock=True) for i in sorted((source_id, into_id))}
        src, dst = rows[source_id], rows[into_id]
        for r in (src, dst):
            if r["merged_into"] is not None or r["status"] not in OPEN:
                raise StepError(f"incident {r['id']} is {r['status']}: only open ones merge")
        await cur.execute("UPDATE reports SET incident_id = %s WHERE incident_id = %s",
                          (into_id, source_id))  # fmt: skip
        await cur.execute(
            """INSERT INTO incident_alerts (alert_id, incident_id)
               SELECT alert_id, %s FROM incident_alerts WHERE incident_id = %s
               UNION SELECT %s::bigint, %s WHERE %s::bigint IS NOT NULL
               ON CONFLICT (alert_id) DO UPDATE SET incident_id = EXCLUDED.incident_id""",
            (into_id, source_id, src["source_alert_id"], into_id, src["source_alert_id"]),
        )
        await cur.execute(
            f"""UPDATE incidents i SET merged_into = %s, status = 'closed', closed_at = %s,
                   version = version + 1, updated_at = now() WHERE id = %s RETURNING {COLUMNS}""",
            (into_id, at, source_id),
        )
        closed = await cur.fetchone()
        await cur.execute(
            f"""UPDATE incidents i SET version = version + 1, updated_at = now(),
                   severity = CASE WHEN %s = 'critical' THEN 'critical' ELSE severity END
                WHERE id = %s RETURNING {COLUMNS}""",
            (src["severity"], into_id),
        )
        merged = await cur.fetchone()
        assert closed is not None and merged is not None
        if src["deadline_at"] is not None and (
            merged["deadline_at"] is None or src["deadline_at"] < merged["deadline_at"]
        ):
            # the problem was first known through the source: its clock is the one that counts
            # (an overdue source makes the survivor overdue on the worker's next pass)
            await cur.execute(
                f"""UPDATE incidents i SET deadline_at = %s WHERE id = %s
                    RETURNING {COLUMNS}""",
                (src["deadline_at"], into_id),
            )
            merged = await cur.fetchone()
            assert merged is not None
        await record_event(cur, source_id, "merged", who, at=at, from_status=src["status"],
                      to_status="closed", note=note, data={"into": into_id})  # fmt: skip
        await record_event(cur, into_id, "merged", who, at=at, note=note, data={"from": source_id})
    await _resolve_overdue_alert(conn, src, at)  # the source is closed; the survivor carries on
    if src["agency_id"] and src["status"] != Status.NEW:
        # even when the survivor is with the same agency: it holds the source as a job of its
        # own and must close it there (the survivor's next message carries the moved reports)
        await _enqueue(
            conn, ctx, incident_id=source_id, agency_id=src["agency_id"], kind="incident.withdrawn",
            payload=incident_json(closed, at),
        )  # fmt: skip
    await append(conn, [feed_event(closed, at), feed_event(merged, at)])
    return merged


async def split(
    conn: psycopg.AsyncConnection,
    ctx: Context,
    incident_id: int,
    report_ids: Sequence[int],
    who: Who,
    note: str,
    *,
    at: datetime,
) -> dict[str, Any]:
    """Move some reports of an incident into a new incident (they were a different problem);
    the new one is routed and dispatched like any other."""
    if not report_ids:
        raise StepError("name the reports to split off (report_ids)")
    async with conn.cursor(row_factory=dict_row) as cur:
        src = await _fetch(cur, incident_id, lock=True)
        if src["merged_into"] is not None or src["status"] not in OPEN:
            raise StepError(f"incident {incident_id} is {src['status']}: only open ones split")
        await cur.execute(
            """SELECT id, service_code, lat, lon, city, ward, description FROM reports
               WHERE incident_id = %s AND id = ANY(%s) ORDER BY id""",
            (incident_id, list(report_ids)),
        )
        moving = await cur.fetchall()
        missing = sorted(set(report_ids) - {r["id"] for r in moving})
        if missing:
            raise StepError(f"reports {missing} are not part of incident {incident_id}")
        await cur.execute("SELECT count(*) AS n FROM reports WHERE incident_id = %s",
                          (incident_id,))  # fmt: skip
        total = await cur.fetchone()
        if total and total["n"] == len(moving) and src["source_alert_id"] is None:
            raise StepError("that would leave the incident with nothing; close it instead")
    first = moving[0]
    new = await open_incident(
        conn, ctx, category=first["service_code"], severity=src["severity"],
        title=_report_title(ctx, first["service_code"], first["ward"]),
        description=first["description"], city=first["city"], ward=first["ward"],
        lat=first["lat"], lon=first["lon"], who=who, note=f"Tách từ sự cố #{incident_id}: {note}",
        dispatch=False, source="report", at=at,  # the reports moved are citizens'
    )  # fmt: skip
    async with conn.cursor(row_factory=dict_row) as cur:
        # reports move before the dispatch, so the agency's message carries them
        await cur.execute("UPDATE reports SET incident_id = %s WHERE id = ANY(%s)",
                          (new["id"], [r["id"] for r in moving]))  # fmt: skip
        await record_event(
            cur, incident_id, "split", who, at=at, note=note,
            data={"reports": [r["id"] for r in moving], "to": new["id"]},
        )  # fmt: skip
    if new["agency_id"]:
        new = await take_step(conn, ctx, new["id"], "dispatch", who, note=None, at=at)
    return new


def _report_title(ctx: Context, category: str, ward: str | None) -> str:
    name = ctx.routing.category(category).name_vi
    if ward:
        try:
            return f"{name} – {ctx.site.ward(ward).name}"
        except KeyError:
            pass
    return name


report_title = _report_title


async def get(conn: psycopg.AsyncConnection, incident_id: int) -> dict[str, Any] | None:
    async with conn.cursor(row_factory=dict_row) as cur:
        try:
            return await _fetch(cur, incident_id, lock=False)
        except IncidentNotFound:
            return None


async def history(conn: psycopg.AsyncConnection, incident_id: int) -> list[dict[str, Any]]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            """SELECT time, kind, actor, from_status, to_status, note, data FROM incident_events
               WHERE incident_id = %s ORDER BY time, id""",
            (incident_id,),
        )
        return [{k: iso_value(v) for k, v in r.items()} for r in await cur.fetchall()]


async def list_incidents(
    conn: psycopg.AsyncConnection,
    *,
    status: Sequence[str] = (),
    agency: str | Sequence[str] | None = None,
    category: str | None = None,
    city: str | None = None,
    ward: str | Sequence[str] | None = None,
    overdue: bool | None = None,
    open_only: bool = False,
    limit: int = 200,
    before_id: int | None = None,
) -> list[dict[str, Any]]:
    """``agency`` and ``ward`` may be several ids (a unit and its former ids, an agency and its
    aliases: :meth:`Site.ward_ids`, :meth:`Site.agency_ids`)."""
    where = ["TRUE"]
    params: dict[str, Any] = {"limit": limit}
    if status:
        where.append("i.status = ANY(%(status)s)")
        params["status"] = list(status)
    for name, value in (("agency_id", agency), ("category", category), ("city", city),
                        ("ward", ward)):  # fmt: skip
        if isinstance(value, str):
            where.append(f"i.{name} = %({name})s")
            params[name] = value
        elif value is not None:
            where.append(f"i.{name} = ANY(%({name})s)")
            params[name] = list(value)
    if open_only or overdue:
        where.append(OPEN_SQL)
    # as incident_json: overdue once marked, or past the deadline with the clock running
    overdue_sql = (
        "(i.overdue_at IS NOT NULL"
        " OR (i.paused_since IS NULL AND COALESCE(i.deadline_at < now(), false)))"
    )
    if overdue is True:
        where.append(overdue_sql)
    elif overdue is False:
        where.append(f"NOT {overdue_sql}")
    if before_id is not None:
        where.append("i.id < %(before)s")
        params["before"] = before_id
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"""SELECT {COLUMNS} FROM incidents i WHERE {" AND ".join(where)}
                ORDER BY i.id DESC LIMIT %(limit)s""",
            params,
        )
        return await cur.fetchall()


async def reports_of(conn: psycopg.AsyncConnection, incident_id: int) -> list[dict[str, Any]]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            """SELECT id, source, external_id, service_code, lat, lon, address, description,
                      media_url, reported_at, rating, rating_comment
               FROM reports WHERE incident_id = %s ORDER BY id""",
            (incident_id,),
        )
        return [{k: iso_value(v) for k, v in r.items()} for r in await cur.fetchall()]


async def mark_overdue(
    conn: psycopg.AsyncConnection, ctx: Context, now: datetime
) -> list[dict[str, Any]]:
    """Open incidents past their deadline not yet marked: mark them, record it, raise an
    ``ioc.incident-overdue`` alert for each and push both to the feed."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"""UPDATE incidents i SET overdue_at = %(now)s, updated_at = now()
                WHERE {OPEN_SQL} AND i.overdue_at IS NULL AND i.paused_since IS NULL
                  AND i.deadline_at < %(now)s
                RETURNING {COLUMNS}""",
            {"now": now},
        )
        rows = await cur.fetchall()
        for row in rows:
            await record_event(cur, row["id"], "overdue", SYSTEM, at=now,
                          data={"deadline": iso_value(row["deadline_at"])})  # fmt: skip
    events = [feed_event(r, now) for r in rows]
    for row in rows:
        alert = await alert_store.raise_internal(
            conn,
            rule=OVERDUE_RULE,
            fingerprint=f"{OVERDUE_RULE}:{row['id']}",
            severity="critical" if row["severity"] == "critical" else "warning",
            labels={
                "alertname": OVERDUE_RULE, "incident": str(row["id"]),
                "category": row["category"], "agency": row["agency_id"] or "",
                "city": row["city"] or "", "ward": row["ward"] or "", "domain": "incidents",
            },
            annotations={
                "summary_vi": f"Sự cố #{row['id']} quá hạn xử lý ({row['title']})",
                "summary_en": f"Incident #{row['id']} is past its deadline ({row['title']})",
            },
            at=now,
        )  # fmt: skip
        if alert is not None:
            events.append(alert_frame(alert))
    await append(conn, events)
    return rows


async def _resolve_overdue_alert(
    conn: psycopg.AsyncConnection, row: Mapping[str, Any], at: datetime
) -> None:
    if row["overdue_at"] is None:
        return
    alert = await alert_store.resolve_internal(conn, f"{OVERDUE_RULE}:{row['id']}", at)
    if alert is not None:
        await append(conn, [alert_frame(alert)])


async def extend_deadline(
    conn: psycopg.AsyncConnection,
    ctx: Context,
    incident_id: int,
    who: Who,
    *,
    reason: str,
    until: datetime | None = None,
    working_days: float | None = None,
    hours: float | None = None,
    at: datetime,
    expected_version: int | None = None,
) -> dict[str, Any]:
    """The case's one formal extension: its deadline moves to ``until``, or later by
    ``working_days`` (in the working calendar) or ``hours``, counted from the current deadline.
    Recorded in the history (``extended``: from, to, reason) and told to the agency
    (``incident.deadline_extended``). A second extension raises :class:`ExtensionRefused`."""
    if sum(x is not None for x in (until, working_days, hours)) != 1:
        raise StepError("give exactly one of deadline, working_days, hours")
    async with conn.cursor(row_factory=dict_row) as cur:
        row = await _fetch(cur, incident_id, lock=True)
        if row["merged_into"] is not None:
            raise StepError(f"incident {incident_id} was merged into {row['merged_into']}")
        _check_version(row, expected_version)
        check_extension(
            row["status"], who.kind, reason, extended_at=iso_value(row["extended_at"]),
            previous=row["extension_reason"],
        )  # fmt: skip
        old = row["deadline_at"]
        if old is None:
            raise StepError(f"incident {incident_id} has no deadline to extend")
        if until is not None:
            if until.tzinfo is None:
                raise StepError("deadline: needs an offset, e.g. +07:00")
            new_deadline = until
        elif working_days is not None:
            cal = ctx.routing.calendar
            new_deadline = cal.add_working_time(old, working_days * cal.hours_per_day)
        else:
            assert hours is not None
            new_deadline = old + timedelta(hours=hours)
        if new_deadline <= old:
            raise StepError(
                f"the new deadline {iso_local(new_deadline)} is not after the current one "
                f"{iso_local(old)}"
            )
        await cur.execute(
            f"""UPDATE incidents i SET deadline_at = %(new)s, deadline_before_extension = %(old)s,
                   extended_at = %(at)s, extension_reason = %(reason)s,
                   overdue_at = CASE WHEN %(new)s > %(at)s THEN NULL ELSE overdue_at END,
                   version = version + 1, updated_at = now()
                WHERE id = %(id)s RETURNING {COLUMNS}""",
            {"new": new_deadline, "old": old, "at": at, "reason": reason.strip(),
             "id": incident_id},
        )  # fmt: skip
        new = await cur.fetchone()
        assert new is not None
        await record_event(
            cur, incident_id, "extended", who, at=at, from_status=row["status"],
            to_status=row["status"], note=reason.strip(),
            data={"from": iso_value(old), "to": iso_value(new_deadline)},
        )  # fmt: skip
    if row["overdue_at"] is not None and new["overdue_at"] is None:
        await _resolve_overdue_alert(conn, row, at)
    # the agency working on it hears of its new deadline; a new or rejected case has none yet
    kind = "incident.deadline_extended" if row["status"] in AGENCY_ACTIVE else None
    await _announce(conn, ctx, new, kind, at=at)
    return new
