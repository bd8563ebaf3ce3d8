"""Stage *persist*: the pass's transitions into ``alerts`` and their history, in order.

While the database is away the transitions wait in a :class:`Backlog` (bounded, see there) and
are stored by the first pass that reaches it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

import psycopg
from prometheus_client import Counter

from ioc.alerting import store
from ioc.alerting.pipeline import Pass
from ioc.rules.engine import Transition

MAX_BACKLOG = 100_000

LOST = Counter("ioc_alert_transitions_dropped_total", "Transitions dropped: backlog full")


async def persist(conn: psycopg.AsyncConnection, p: Pass) -> None:
    rows = await store.apply_transitions(conn, p.transitions)
    p.book.track(rows)
    p.changed.extend(rows)
    p.moved.extend(rows)


class Backlog:
    """Transitions not yet stored, oldest first. Past ``limit`` it is compacted
    (:func:`compact_backlog`: per alert only the first, the last and the last row-opening
    transition stay, so every stored alert still ends in its true state; the history in between
    is lost and counted); only if that is not enough are the oldest dropped (counted)."""

    def __init__(self, limit: int = MAX_BACKLOG) -> None:
        self.limit = limit
        self._items: deque[Transition] = deque()

    def add(self, transitions: Sequence[Transition]) -> None:
        self._items.extend(transitions)
        if len(self._items) > self.limit:
            kept = compact_backlog(self._items)
            LOST.inc(len(self._items) - len(kept))
            self._items = deque(kept)
        while len(self._items) > self.limit:
            self._items.popleft()
            LOST.inc()

    def items(self) -> list[Transition]:
        return list(self._items)

    def clear(self) -> None:
        self._items.clear()

    def __len__(self) -> int:
        return len(self._items)


def _opens_row(tr: Transition) -> bool:
    return tr.to == "pending" or (tr.to == "firing" and tr.started_at == tr.active_at)


def compact_backlog(transitions: Sequence[Transition]) -> list[Transition]:
    """The transitions that keep stored alerts right when the backlog is too long: per alert
    (fingerprint) the first, the last and the last one that opens a row, in their order."""
    keep: set[int] = set()
    first: dict[str, int] = {}
    last: dict[str, int] = {}
    last_open: dict[str, int] = {}
    for i, tr in enumerate(transitions):
        first.setdefault(tr.fingerprint, i)
        last[tr.fingerprint] = i
        if _opens_row(tr):
            last_open[tr.fingerprint] = i
    keep.update(first.values(), last.values(), last_open.values())
    return [tr for i, tr in enumerate(transitions) if i in keep]
