"""Field devices: the record shared by the site file, storage, ingest and the API."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from ioc.core.catalogue import KINDS

# Ids are MQTT topic levels and COPY fields: keep them to a safe, readable alphabet.
DEVICE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")


class DeviceError(ValueError):
    """A device record that breaks a rule; ``field`` names the offending field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True, slots=True)
class Device:
    id: str
    kind: str
    city: str
    ward: str | None
    name: str
    lat: float
    lon: float
    attributes: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not DEVICE_ID.match(self.id):
            raise DeviceError(
                "id", f"{self.id!r} must be 1-128 letters, digits, '.', '_', ':' or '-'"
            )
        if self.kind not in KINDS:
            raise DeviceError("kind", f"{self.kind!r} is not one of {sorted(KINDS)}")
        if not -90.0 <= self.lat <= 90.0:
            raise DeviceError("lat", f"{self.lat} is outside -90..90")
        if not -180.0 <= self.lon <= 180.0:
            raise DeviceError("lon", f"{self.lon} is outside -180..180")
