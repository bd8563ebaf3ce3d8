"""Stage *escalate*: a firing critical alert nobody acknowledged (and nothing mutes) goes up one
escalation level every ``after_s``, up to ``max_level`` (``IOC_ALERT_ESCALATE_AFTER_S``,
``IOC_ALERT_ESCALATE_MAX``)."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

from ioc.alerting import store
from ioc.alerting.pipeline import Pass


@dataclass(frozen=True)
class Escalate:
    max_level: int
    after_s: float

    async def __call__(self, conn: psycopg.AsyncConnection, p: Pass) -> None:
        p.changed.extend(
            await store.escalate(conn, p.now, max_level=self.max_level, after_s=self.after_s)
        )
