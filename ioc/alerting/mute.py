"""Stage *mute*: why each open alert is muted — a silence, a maintenance window, a planned power
cut, or inhibition by another firing alert (:func:`ioc.rules.suppression.suppressions`, pure) — and
the changes of it stored with their history.

Silences and windows are few: :func:`load` re-reads them every tick, so one created in any API
process takes effect within a tick.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import time as dtime

import psycopg

from ioc.alerting import store
from ioc.alerting.pipeline import Pass
from ioc.rules.language import InhibitRule
from ioc.rules.matchers import parse_matcher
from ioc.rules.suppression import MaintenanceWindow, PlannedOutage, Silence, suppressions


@dataclass(frozen=True)
class Mute:
    silences: Sequence[Silence] = ()
    windows: Sequence[MaintenanceWindow] = ()
    inhibit_rules: Sequence[InhibitRule] = ()
    outages: Sequence[PlannedOutage] = ()

    async def __call__(self, conn: psycopg.AsyncConnection, p: Pass) -> None:
        why = suppressions(
            p.book.views(),
            p.now,
            silences=self.silences,
            windows=self.windows,
            inhibit_rules=self.inhibit_rules,
            outages=self.outages,
        )
        for fp, reason in why.items():
            o = p.book.by_fingerprint[fp]
            if reason == o.suppressed_by or not o.id:
                continue
            row = await store.set_suppression(conn, o.id, reason, p.now)
            if row is None:
                continue
            o.suppressed_by = reason
            p.changed.append(row)


async def load(
    conn: psycopg.AsyncConnection,
) -> tuple[list[Silence], list[MaintenanceWindow]]:
    """The silences in force and the maintenance windows stored now."""
    silences = []
    for sid, matchers, start, end in await store.silences_in_force(conn):
        try:
            ms = tuple(parse_matcher(m) for m in matchers)
        except ValueError:
            continue  # validated on creation; never let one row stop the rest
        silences.append(Silence(sid, ms, float(start), float(end)))
    windows = []
    for wid, name, matchers, days, start, dur, vf, vt in await store.maintenance_windows(conn):
        try:
            ms = tuple(parse_matcher(m) for m in matchers)
        except ValueError:
            continue
        windows.append(
            MaintenanceWindow(
                wid, name, ms, frozenset(days), start if isinstance(start, dtime) else dtime(0),
                float(dur), float(vf) if vf else None, float(vt) if vt else None,
            )
        )  # fmt: skip
    return silences, windows
