"""Hậu Giang IOC backend: shared vocabulary, storage, API and the composition root.

Packages beside this one: ``ingest`` (MQTT intake), ``rules`` (the pure rule engine) and
``simulators`` (field-device models). Data flows one way: nothing in those packages imports
``ioc.app`` (the composition root) or ``ioc.api``.
"""

__version__ = "0.1.0"
