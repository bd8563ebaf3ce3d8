"""Stage *notify*: alerts that leave the IOC. After announce, in the same transaction, one
outbox row per receiver whose route matches an alert that started firing or resolved in this
pass — unless the alert is muted (silence, maintenance window, planned cut, inhibition: what
:mod:`~ioc.alerting.mute` decided this pass). The dispatch worker (:mod:`ioc.dispatch`) delivers
them with the agencies' guarantees: at least once, retried with backoff, signed, with an
idempotency key.

The message is the Prometheus Alertmanager webhook payload (``version`` "4"), one alert per
message (group by every label), so an on-call tool that takes Alertmanager takes the IOC.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg

from ioc.alerting.pipeline import Pass
from ioc.dispatch import outbox
from ioc.dispatch.notification_routes import Receiver, Routes

# Alertmanager's endsAt for an alert still firing (Go's zero time)
_ZERO_TIME = "0001-01-01T00:00:00Z"


def _rfc3339(value: Any) -> str:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return _ZERO_TIME


def alertmanager_labels(row: Mapping[str, Any]) -> dict[str, str]:
    """The alert's labels as Alertmanager shows them: ``alertname`` (the rule) and
    ``severity`` with the rule's own labels."""
    return {"alertname": row["rule"], "severity": row["severity"], **(row["labels"] or {})}


def alertmanager_message(row: Mapping[str, Any], receiver: Receiver) -> dict[str, Any]:
    """The Alertmanager webhook body (version 4) for one alert row."""
    labels = alertmanager_labels(row)
    status = "resolved" if row["state"] == "resolved" else "firing"
    annotations = dict(row.get("annotations") or {})
    group = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return {
        "version": "4",
        "groupKey": f'{{}}:{{{group}}}/{{receiver="{receiver.name}"}}',
        "truncatedAlerts": 0,
        "status": status,
        "receiver": receiver.name,
        "groupLabels": labels,
        "commonLabels": labels,
        "commonAnnotations": annotations,
        "externalURL": "",
        "alerts": [
            {
                "status": status,
                "labels": labels,
                "annotations": annotations,
                "startsAt": _rfc3339(row.get("started_at") or row.get("active_at")),
                "endsAt": _rfc3339(row.get("resolved_at")) if status == "resolved" else _ZERO_TIME,
                "generatorURL": "",
                "fingerprint": row["fingerprint"],
            }
        ],
    }


@dataclass(frozen=True)
class Notify:
    routes: Routes

    async def __call__(self, conn: psycopg.AsyncConnection, p: Pass) -> None:
        if not self.routes.routes:
            return
        for row in p.moved:
            if row["state"] not in ("firing", "resolved") or row.get("started_at") is None:
                continue  # pending, or resolved without ever firing: nothing was announced
            if self._muted(row, p):
                continue
            for receiver in self.routes.receivers_for(alertmanager_labels(row)):
                if row["state"] == "resolved" and not receiver.send_resolved:
                    continue
                await outbox.insert(
                    conn,
                    incident_id=None,
                    agency_id=receiver.outbox_id,
                    kind=f"alert.{row['state']}",
                    payload=alertmanager_message(row, receiver),
                    channels=[(receiver.channel, receiver.target)],
                )

    @staticmethod
    def _muted(row: Mapping[str, Any], p: Pass) -> bool:
        """Muted as mute left it this pass (the book holds open alerts); a resolved alert as it
        was when it resolved."""
        open_alert = p.book.by_fingerprint.get(row["fingerprint"])
        if open_alert is not None and open_alert.id == row["id"]:
            return open_alert.suppressed_by is not None
        return row.get("suppressed_by") is not None
