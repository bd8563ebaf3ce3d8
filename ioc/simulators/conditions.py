"""What a scenario imposes on the simulated world at one moment.

Scenario timelines (``ioc/simulators/scenario.py``) produce a ``Conditions`` for any simulated time;
device models (one module per kind) read it. Everything defaults to "a normal day".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType


def _empty() -> Mapping[str, float]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Conditions:
    # Extra rain intensity (mm/h) on top of the season's own showers, by city id.
    rain_mm_h: Mapping[str, float] = field(default_factory=_empty)
    # Extra water level (m) from upstream flow or surge, by flood device id or city id.
    water_offset_m: Mapping[str, float] = field(default_factory=_empty)
    # Multiplies the tidal amplitude (spring-tide scenarios > 1).
    tide_factor: float = 1.0
    # Cabinets without supply (a power-company outage, planned or not): no voltage at the cabinet,
    # its lamps read zero and go offline.
    cabinet_power_loss: frozenset[str] = frozenset()
    # Cabinets whose outgoing lighting cable is cut (cable theft, downstream of the cabinet): the
    # cabinet still has supply (phase voltages normal) but its feeder carries nothing; its lamps
    # read zero and go offline.
    feeder_cut: frozenset[str] = frozenset()
    # Lamps with a forced fault: lamp id -> fault type (lamp_failure, day_burner, ...).
    lamp_faults: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    # Road capacity left at a detector (0..1; an accident upstream lowers it), by device id.
    traffic_capacity: Mapping[str, float] = field(default_factory=_empty)
    # Camera events to raise now: camera id -> event type (accident, wrong_way, ...).
    camera_events: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    # Devices that publish nothing (dead battery, stolen, network down).
    silent_devices: frozenset[str] = frozenset()
    # Citizen-report rate multiplier by "city/category".
    report_boost: Mapping[str, float] = field(default_factory=_empty)
    # Dry-season salt intrusion multiplier (low Mekong flow, strong sea tides), by salinity
    # device id or city id; 1 = an ordinary dry season (ioc/simulators/salinity.py).
    salinity_factor: Mapping[str, float] = field(default_factory=_empty)


NORMAL = Conditions()
