"""What ingest checks citizen reports against, from the routing file: the site's wards and the
categories the routing file offers citizens (its public ones). Built here, above ingest, because
ingest must not know the routing file (tests/test_layers.py)."""

from __future__ import annotations

from ioc.core.settings import Settings
from ioc.core.site import load_site
from ioc.ingest.decoding import ReportVocabulary
from ioc.routing.table import load_routing


def report_vocabulary(settings: Settings) -> ReportVocabulary:
    """Read once at start, like the device registry."""
    routing = load_routing(settings.routing_path())
    return ReportVocabulary(
        site=load_site(settings.site_path()),
        categories=frozenset(c.code for c in routing.public_categories()),
        max_description=settings.open311_max_description,
    )
