"""Metric and event catalogue per device kind: the names, units and valid ranges devices must use.

Decoding checks every telemetry value against this table; simulators publish from it and
``docs/asyncapi.yaml`` documents it. A device that sends a name not listed here, or a value outside
its range, gets its message dead-lettered with a reason naming the metric.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final


@dataclass(frozen=True, slots=True)
class Metric:
    name: str
    unit: str
    minimum: float
    maximum: float
    description: str


def _table(*metrics: Metric) -> Mapping[str, Metric]:
    return MappingProxyType({m.name: m for m in metrics})


_BATTERY = Metric("battery_v", "V", 0.0, 30.0, "supply or battery voltage of the data logger")

METRICS: Final[Mapping[str, Mapping[str, Metric]]] = MappingProxyType(
    {
        "flood": _table(
            # Water level against the station's datum; the delta sits near sea level, so levels
            # below zero at low tide are normal.
            Metric("water_level_m", "m", -5.0, 15.0, "water level above the station datum"),
            _BATTERY,
        ),
        # Salinity station at an intake (dry-season salt intrusion, docs/salinity.md). Salinity
        # in parts per thousand (‰ = g/kg, practical salinity ≈ g/L in brackish water); fresh
        # river water reads ~0.1‰, sea water ~35‰, a logger above 45‰ is a fault.
        "salinity": _table(
            Metric("salinity_ppt", "‰", 0.0, 45.0, "salinity of the water at the intake"),
            Metric("water_temp_c", "°C", 0.0, 45.0, "water temperature (for conductivity)"),
            _BATTERY,
        ),
        "rain": _table(
            Metric("rain_rate_mm_h", "mm/h", 0.0, 500.0, "rain intensity over the interval"),
            Metric("rain_mm", "mm", 0.0, 500.0, "rain fallen during the reporting interval"),
            Metric("rain_24h_mm", "mm", 0.0, 2000.0, "rain fallen in the last 24 hours"),
            _BATTERY,
        ),
        # Outdoor lamp controller; names follow uCIFI LwM2M object 3416 resources.
        "lighting": _table(
            Metric("dim_level_pct", "%", 0.0, 100.0, "commanded dimming level (3416/3)"),
            Metric("power_w", "W", 0.0, 2000.0, "active power (3416/46)"),
            Metric("voltage_v", "V", 0.0, 400.0, "supply voltage (3416/44)"),
            Metric("current_a", "A", 0.0, 20.0, "current (3416/45)"),
            Metric("energy_kwh", "kWh", 0.0, 1e7, "active energy counter (3416/47)"),
            Metric("power_factor", "", 0.0, 1.0, "power factor"),
            Metric("operating_hours", "h", 0.0, 1e6, "lamp operating hours (3416/15)"),
            Metric("gear_temperature_c", "°C", -40.0, 150.0, "control gear temperature (3416/21)"),
        ),
        # Lighting cabinet (tủ điện): three-phase supply feeding lamp circuits.
        "cabinet": _table(
            Metric("voltage_l1_v", "V", 0.0, 400.0, "phase L1 voltage"),
            Metric("voltage_l2_v", "V", 0.0, 400.0, "phase L2 voltage"),
            Metric("voltage_l3_v", "V", 0.0, 400.0, "phase L3 voltage"),
            Metric("current_l1_a", "A", 0.0, 1000.0, "phase L1 current"),
            Metric("current_l2_a", "A", 0.0, 1000.0, "phase L2 current"),
            Metric("current_l3_a", "A", 0.0, 1000.0, "phase L3 current"),
            Metric("power_w", "W", 0.0, 500_000.0, "feeder active power"),
            Metric("energy_kwh", "kWh", 0.0, 1e9, "feeder active energy counter"),
            Metric("door_open", "bool", 0.0, 1.0, "cabinet door switch, 1 = open"),
        ),
        # Traffic detector: one reading per counting interval (30 s to 5 min).
        "traffic": _table(
            Metric("count_motorbike", "veh", 0.0, 20_000.0, "motorbikes in the interval"),
            Metric("count_car", "veh", 0.0, 10_000.0, "cars in the interval"),
            Metric("count_truck", "veh", 0.0, 5_000.0, "trucks in the interval"),
            Metric("count_bus", "veh", 0.0, 2_000.0, "buses in the interval"),
            Metric("speed_kmh", "km/h", 0.0, 200.0, "mean speed in the interval"),
            Metric("occupancy_pct", "%", 0.0, 100.0, "share of the interval the zone was occupied"),
            Metric("interval_s", "s", 1.0, 3600.0, "length of the counting interval"),
        ),
    }
)

KINDS: Final[frozenset[str]] = frozenset(METRICS)

# The one range check, two uses: ingest refuses a value outside its metric's range (BOUNDS,
# name -> (minimum, maximum) per kind, the decoder's hot-loop view of METRICS); the simulators
# clip what they publish into it (clip), so a simulated device is never refused for it.
BOUNDS: Final[Mapping[str, Mapping[str, tuple[float, float]]]] = MappingProxyType(
    {kind: {name: (m.minimum, m.maximum) for name, m in table.items()}
     for kind, table in METRICS.items()}
)


def clip(kind: str, values: Mapping[str, float]) -> dict[str, float]:
    """The values clipped into their metrics' ranges (non-finite → the minimum): a simulator's
    last guard, not a model."""
    bounds = BOUNDS[kind]
    out: dict[str, float] = {}
    for name, value in values.items():
        low, high = bounds[name]
        out[name] = min(high, max(low, value)) if math.isfinite(value) else low
    return out


EVENT_TYPES: Final[Mapping[str, frozenset[str]]] = MappingProxyType(
    {
        "flood": frozenset({"sensor_fault", "tamper", "low_battery"}),
        "rain": frozenset({"sensor_fault", "tamper", "low_battery"}),
        "salinity": frozenset({"sensor_fault", "tamper", "low_battery"}),
        "lighting": frozenset(
            {
                "lamp_failure",
                "relay_failure",
                "day_burner",
                "cycling",
                "control_gear_failure",
                "connection_lost",
                "thermal_derating",
            }
        ),
        "cabinet": frozenset({"power_loss", "power_restored", "phase_loss", "door_open"}),
        "traffic": frozenset({"accident", "wrong_way", "stopped_vehicle", "flooded_road"}),
    }
)
