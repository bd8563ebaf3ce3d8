"""Agency dispatch: a transactional outbox delivered to each agency's webhook and MQTT topic.

Incidents code calls :func:`enqueue` inside its own transaction; :class:`DispatchWorker` (run by
the HTTP process, see ``ioc.app.runtime``) delivers.
docs/dispatch.md describes the contract agencies see.
"""

from ioc.dispatch.delivery import Attempt, Delivery, Outcome
from ioc.dispatch.outbox import OUTBOX_CHANNEL, enqueue, mqtt_topic
from ioc.dispatch.signature import sign, verify
from ioc.dispatch.webhook import DispatchConfigError, webhook_targets
from ioc.dispatch.worker import DispatchWorker

__all__ = [
    "OUTBOX_CHANNEL",
    "Attempt",
    "Delivery",
    "DispatchConfigError",
    "DispatchWorker",
    "Outcome",
    "enqueue",
    "mqtt_topic",
    "sign",
    "verify",
    "webhook_targets",
]
