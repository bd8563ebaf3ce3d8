"""The alert path as stages, in the order Alertmanager runs them:

    evaluate → persist → mute → escalate → announce → notify

``evaluate`` (:mod:`ioc.alerting.evaluate`) is the pure engine in memory: records and the clock
in, transitions out. The four stages after it share one signature, :data:`Stage` — ``(conn,
Pass) -> None`` — and run in one transaction, so what the wall screen and the incident worker
hear of is exactly what committed:

- :mod:`~ioc.alerting.persist` stores the pass's transitions (``alerts`` + history) and keeps
  the book of open alerts;
- :mod:`~ioc.alerting.mute` stores why each open alert is muted (silences, maintenance windows,
  planned outages, inhibition) when that changed;
- :mod:`~ioc.alerting.escalate` raises the level of critical alerts nobody acknowledged;
- :mod:`~ioc.alerting.announce` appends an ``alert`` feed frame per changed row and signals the
  incident worker;
- :mod:`~ioc.alerting.notify` enqueues the Alertmanager-format notifications of unmuted state
  changes to the receivers whose routes match, in the dispatch outbox.

A stage's own inputs (the silences in force, the escalation policy) are the fields of the stage
object; everything that varies per run — the time included — is in the :class:`Pass`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg

from ioc.rules.engine import Transition
from ioc.rules.suppression import AlertView


@dataclass
class OpenAlert:
    id: int  # 0 until the row is known (restored from the engine before the ids are read)
    labels: dict[str, str]
    state: str
    suppressed_by: dict[str, Any] | None


class OpenAlerts:
    """The open (pending or firing) alerts by fingerprint, as stored: what mute decides on.
    Bounded by the number of open alerts (rows leave when they resolve)."""

    def __init__(self) -> None:
        self.by_fingerprint: dict[str, OpenAlert] = {}

    def track(self, rows: Iterable[dict[str, Any]]) -> None:
        """Follow stored alert rows (resolved ones leave the book)."""
        for r in rows:
            if r["state"] == "resolved":
                self.by_fingerprint.pop(r["fingerprint"], None)
            else:
                self.by_fingerprint[r["fingerprint"]] = OpenAlert(
                    r["id"], r["labels"], r["state"], r["suppressed_by"]
                )

    def forget(self, fingerprint: str) -> None:
        self.by_fingerprint.pop(fingerprint, None)

    def views(self) -> list[AlertView]:
        return [
            AlertView(fp, o.labels, o.state == "firing") for fp, o in self.by_fingerprint.items()
        ]

    def count(self, state: str) -> int:
        return sum(1 for o in self.by_fingerprint.values() if o.state == state)

    def __len__(self) -> int:
        return len(self.by_fingerprint)


@dataclass
class Pass:
    """One run of the stages. ``now``: the alerting clock (wall time, or in stream mode the
    newest reading's time); ``changed``: the alert rows changed so far, in order; ``moved``: those
    of them that are state changes (what notify sends)."""

    now: float
    book: OpenAlerts
    transitions: Sequence[Transition] = ()
    changed: list[dict[str, Any]] = field(default_factory=list)
    moved: list[dict[str, Any]] = field(default_factory=list)  # rows of state changes (persist)


Stage = Callable[[psycopg.AsyncConnection, Pass], Awaitable[None]]


async def run(conn: psycopg.AsyncConnection, p: Pass, stages: Sequence[Stage]) -> None:
    """The stages in order, in one transaction."""
    async with conn.transaction():
        for stage in stages:
            await stage(conn, p)
