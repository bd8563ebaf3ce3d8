"""Real PostgreSQL and MQTT servers started on demand, for ``ioc demo`` and the test suite.

Used when no ``IOC_DATABASE_URL`` / ``IOC_MQTT_URL`` is given. Each launcher is a context
manager that returns a URL, runs its server as an unprivileged account on 127.0.0.1 and stops it
on every exit path (including the death of the launching process).
"""

from ioc.embedded.mosquitto import EmbeddedMosquitto
from ioc.embedded.postgres import EmbeddedPostgres
from ioc.embedded.process import EmbeddedServerError

__all__ = ["EmbeddedMosquitto", "EmbeddedPostgres", "EmbeddedServerError"]
