"""Notification routes as data: which alerts go to which receiver (``notifications.yaml``).

The file (``IOC_NOTIFICATION_ROUTES_FILE``, default ``ioc/site_data/notifications.yaml``) names
*receivers* — a signed webhook (an on-call tool, the SMS/Zalo gateway) or an MQTT topic — and
*routes*: label matches (severity, domain, city, any label; a list means any of) to a receiver,
like Alertmanager's ``route`` with one level. Every route that matches gets the alert (no
``continue``: there is no tree to stop in). Secrets are not in the file: a webhook names the
environment variable that holds its secret (``secret_env``), as 12-factor asks.

A bad file refuses to load: :class:`NotificationConfigError` names the file and the field.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ioc.core import yamlfile
from ioc.core.packaged import SITE_DATA
from ioc.core.yamlfile import DataFileError

DEFAULT_FILE = SITE_DATA / "notifications.yaml"
RECEIVER_PREFIX = "receiver:"  # outbox.agency_id of a notification: receiver:{name}
_TOPIC_FORBIDDEN = ("+", "#")


class NotificationConfigError(DataFileError):
    """A notification routes file that cannot be used; ``where`` names the field."""


@dataclass(frozen=True, slots=True)
class Receiver:
    name: str
    channel: str  # webhook | mqtt (the outbox channels)
    target: str  # URL or topic
    secret: str | None = None  # webhooks only
    send_resolved: bool = True

    @property
    def outbox_id(self) -> str:
        return RECEIVER_PREFIX + self.name


@dataclass(frozen=True, slots=True)
class Route:
    receiver: Receiver
    match: Mapping[str, frozenset[str]]

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(labels.get(k, "") in values for k, values in self.match.items())


@dataclass(frozen=True, slots=True)
class Routes:
    receivers: Mapping[str, Receiver]
    routes: tuple[Route, ...]

    def receivers_for(self, labels: Mapping[str, str]) -> list[Receiver]:
        """Every receiver a matching route names, once each, in file order."""
        out: dict[str, Receiver] = {}
        for r in self.routes:
            if r.matches(labels):
                out.setdefault(r.receiver.name, r.receiver)
        return list(out.values())


EMPTY = Routes({}, ())


def routes_file(setting: Path | None) -> Path:
    return setting if setting is not None else DEFAULT_FILE


def load_routes(path: Path, environ: Mapping[str, str] | None = None) -> Routes:
    env = os.environ if environ is None else environ
    doc = yamlfile.read(path, NotificationConfigError) or {}
    if not isinstance(doc, dict):
        raise NotificationConfigError(path, "(file)", "must be a mapping")
    receivers: dict[str, Receiver] = {}
    for i, entry in enumerate(_list(path, "receivers", doc.get("receivers"))):
        receiver = _receiver(path, f"receivers[{i}]", entry, env)
        if receiver.name in receivers:
            raise NotificationConfigError(path, f"receivers[{i}].name", "duplicate")
        receivers[receiver.name] = receiver
    routes = []
    for i, entry in enumerate(_list(path, "routes", doc.get("routes"))):
        where = f"routes[{i}]"
        if not isinstance(entry, dict):
            raise NotificationConfigError(path, where, "must be a mapping")
        name = entry.get("receiver")
        if name not in receivers:
            raise NotificationConfigError(
                path, f"{where}.receiver", f"{name!r} is not one of the receivers"
            )
        match = entry.get("match") or {}
        if not isinstance(match, dict):
            raise NotificationConfigError(path, f"{where}.match", "must be a mapping of labels")
        matchers: dict[str, frozenset[str]] = {}
        for label, values in match.items():
            vals = values if isinstance(values, list) else [values]
            if not vals or not all(isinstance(v, str) and v for v in vals):
                raise NotificationConfigError(
                    path, f"{where}.match.{label}", "must be a label value or a list of them"
                )
            matchers[str(label)] = frozenset(vals)
        routes.append(Route(receivers[name], matchers))
    return Routes(receivers, tuple(routes))


def _list(path: Path, field: str, value: Any) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise NotificationConfigError(path, field, "must be a list")
    return value


def _receiver(path: Path, where: str, entry: Any, env: Mapping[str, str]) -> Receiver:
    if not isinstance(entry, dict):
        raise NotificationConfigError(path, where, "must be a mapping")
    name = entry.get("name")
    if not isinstance(name, str) or not name or "/" in name:
        raise NotificationConfigError(path, f"{where}.name", f"{name!r} is not a receiver name")
    send_resolved = entry.get("send_resolved", True)
    if not isinstance(send_resolved, bool):
        raise NotificationConfigError(path, f"{where}.send_resolved", "must be true or false")
    if ("webhook" in entry) == ("mqtt" in entry):
        raise NotificationConfigError(path, where, "needs exactly one of webhook, mqtt")
    if "webhook" in entry:
        hook = entry["webhook"] or {}
        url = hook.get("url", "") if isinstance(hook, dict) else ""
        parts = urlsplit(url)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise NotificationConfigError(
                path, f"{where}.webhook.url", f"{url!r} is not an http(s):// URL"
            )
        var = hook.get("secret_env", "")
        if not var:
            raise NotificationConfigError(
                path, f"{where}.webhook.secret_env", "missing (every webhook is signed)"
            )
        secret = env.get(var, "")
        if not secret:
            raise NotificationConfigError(
                path, f"{where}.webhook.secret_env", f"environment variable {var} is unset"
            )
        return Receiver(name, "webhook", url, secret, send_resolved)
    mq = entry["mqtt"] or {}
    topic = mq.get("topic", "") if isinstance(mq, dict) else ""
    if not isinstance(topic, str) or not topic or any(c in topic for c in _TOPIC_FORBIDDEN):
        raise NotificationConfigError(
            path, f"{where}.mqtt.topic", f"{topic!r} is not a topic to publish to"
        )
    return Receiver(name, "mqtt", topic, None, send_resolved)
