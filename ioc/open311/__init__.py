"""Open311 GeoReport v2 for citizen reports: the spec's resources, formats and errors.

:mod:`ioc.open311.render` writes JSON and XML as the spec shows them, :mod:`~ioc.open311.resources`
turns categories and stored reports into Open311 services and service requests (with the status
mapping), :mod:`~ioc.open311.submission` checks a posted request. The HTTP routes are
``ioc/api/open311.py``; the guide is ``docs/open311.md``.
"""

from ioc.open311.errors import Open311Error
from ioc.open311.render import FORMATS, error_response, parse_format, respond

__all__ = ["FORMATS", "Open311Error", "error_response", "parse_format", "respond"]
