"""The one error type of the Open311 routes; rendered as the spec's error list."""

from __future__ import annotations


class Open311Error(Exception):
    """An answer in Open311's error format: ``status`` is both the HTTP status and the ``code``
    (400 missing or invalid field, 403 bad api_key, 404 unknown service, request or token);
    ``description`` names the field first (``"lat: …"``)."""

    def __init__(self, status: int, description: str) -> None:
        super().__init__(f"{status}: {description}")
        self.status = status
        self.description = description
