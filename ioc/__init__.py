"""Hậu Giang IOC backend, in layers (docs/architecture.md; tests/test_layers.py checks them):

- the floor, ``ioc.core``: shared vocabulary and time handling;
- infrastructure: ``ioc.storage`` (PostgreSQL/TimescaleDB), ``ioc.embedded`` (local services);
- the pipelines: ``ioc.ingest`` (MQTT intake), ``ioc.rules`` (the pure rule engine),
  ``ioc.alerting`` (the alert stages), ``ioc.live`` (the live feed);
- features: ``ioc.routing``, ``ioc.incidents``, ``ioc.dispatch``, ``ioc.cap``, ``ioc.kpi``,
  ``ioc.open311``, ``ioc.provision``; ``ioc.simulators`` stands in for the field;
- the HTTP surface ``ioc.api`` and the roof ``ioc.app`` (composition root and command line).
"""

__version__ = "0.1.0"
