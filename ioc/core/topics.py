"""Every MQTT topic the IOC publishes or reads, shared by ingest (parsing), the outage feed,
dispatch and the simulators (formatting); docs/asyncapi.yaml has one channel for each
(:func:`every_topic`, checked by tests/test_asyncapi.py).

- ``{prefix}/{city}/{kind}/{device_id}/{telemetry|event|status}`` — field devices → ingest;
- ``{prefix}/{city}/reports/{app|hotline|zalo}`` — citizen reports → ingest;
- ``{prefix}/power/planned-outages`` — the power company's planned cuts (retained) → rules;
- ``{dispatch_prefix}/{agency}`` — the IOC's dispatches → each agency's system.

The prefix is ``hg`` in production and unique per test; the dispatch prefix is ``ioc/dispatch``
(``IOC_DISPATCH_MQTT_PREFIX``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum


class Channel(StrEnum):
    TELEMETRY = "telemetry"
    EVENT = "event"
    STATUS = "status"


@dataclass(frozen=True, slots=True)
class DeviceTopic:
    city: str
    kind: str
    device_id: str
    channel: Channel


@dataclass(frozen=True, slots=True)
class ReportTopic:
    city: str
    channel: str  # where the citizen report came in: one of REPORT_CHANNELS


class TopicError(ValueError):
    """A topic outside the scheme; the message names what is wrong."""


_CHANNELS = {c.value: c for c in Channel}
REPORTS = "reports"  # the third topic level of citizen reports
# Where citizen reports are relayed from (contract v1; also the reports' ``source``).
REPORT_CHANNELS = frozenset({"app", "hotline", "zalo"})


def device_topic(prefix: str, city: str, kind: str, device_id: str, channel: Channel | str) -> str:
    return f"{prefix}/{city}/{kind}/{device_id}/{Channel(channel).value}"


def report_topic(prefix: str, city: str, channel: str) -> str:
    return f"{prefix}/{city}/reports/{channel}"


def planned_outages_topic(prefix: str) -> str:
    """Not matched by the ingest filters (two levels, not four): only the outage feed reads it."""
    return f"{prefix}/power/planned-outages"


def dispatch_topic(dispatch_prefix: str, agency: str) -> str:
    """An agency's dispatches (QoS 1, not retained): published by ``ioc.dispatch``, read by the
    agency's own system (``ioc.simulators.agencies`` in the demo); its ACL lets it read only
    this."""
    return f"{dispatch_prefix}/{agency}"


def every_topic(prefix: str, dispatch_prefix: str, kinds: Iterable[str]) -> set[str]:
    """The address templates of every topic the system uses, ``{city}``-style parameters for the
    variable levels: the channels docs/asyncapi.yaml must have."""
    topics = {
        device_topic(prefix, "{city}", kind, "{device_id}", channel)
        for kind in kinds
        for channel in Channel
    }
    topics.add(report_topic(prefix, "{city}", "{channel}"))
    topics.add(planned_outages_topic(prefix))
    topics.add(dispatch_topic(dispatch_prefix, "{agency}"))
    return topics


def subscriptions(prefix: str, *, reports: bool = True) -> list[str]:
    """Filters the ingest service subscribes to (one per channel keeps stray topics out).

    The report filter has one level fewer than the device filters, so no topic matches both.
    """
    filters = [f"{prefix}/+/+/+/{c.value}" for c in Channel]
    if reports:
        filters.append(f"{prefix}/+/{REPORTS}/+")
    return filters


def _levels_after(prefix: str, topic: str) -> list[str]:
    """The topic's levels below ``prefix``; TopicError when it is not under it."""
    parts = topic.split("/")
    root = prefix.split("/")
    if parts[: len(root)] != root:
        raise TopicError(f"topic {topic!r} does not start with {prefix!r}")
    return parts[len(root) :]


def parse_device_topic(prefix: str, topic: str) -> DeviceTopic:
    rest = _levels_after(prefix, topic)
    if len(rest) != 4:
        raise TopicError(
            f"topic {topic!r} is not {prefix}/{{city}}/{{kind}}/{{device_id}}/{{channel}}"
        )
    city, kind, device_id, channel = rest
    if not city or not kind or not device_id:
        raise TopicError(f"topic {topic!r} has an empty level")
    ch = _CHANNELS.get(channel)
    if ch is None:
        raise TopicError(f"topic {topic!r}: unknown channel {channel!r}")
    return DeviceTopic(city, kind, device_id, ch)


def parse_report_topic(prefix: str, topic: str) -> ReportTopic:
    """``{prefix}/{city}/reports/{channel}``; the city is checked against the site by the caller."""
    rest = _levels_after(prefix, topic)
    if len(rest) != 3 or rest[1] != REPORTS:
        raise TopicError(f"topic {topic!r} is not {prefix}/{{city}}/{REPORTS}/{{channel}}")
    city, _, channel = rest
    if not city:
        raise TopicError(f"topic {topic!r} has an empty level")
    if channel not in REPORT_CHANNELS:
        raise TopicError(
            f"topic {topic!r}: unknown report channel {channel[:40]!r}"
            f" (one of {', '.join(sorted(REPORT_CHANNELS))})"
        )
    return ReportTopic(city, channel)
