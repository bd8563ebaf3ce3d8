"""Lighting cabinets (tủ điện): three-phase supply, feeder power = the sum of the lamps it feeds.

The cabinet meter reads the same phase voltages its lamps see (:func:`lighting.phase_voltage`),
the feeder's active power is the sum of its lamps' reported power at that instant, and each
phase current is the sum of the currents of the lamps on that phase (lamps are spread over the
phases in feeder order). Energy integrates the feeder power between readings.

Loss of supply (a power-company outage) zeroes voltages, currents and power; the cabinet's
battery-backed RTU stays online and reports ``power_loss`` once, then ``power_restored`` when supply
returns. It is the source alarm: the IOC suppresses the alarms of the lamps that went silent on the
same cabinet. Cable theft is downstream of the cabinet (``Conditions.feeder_cut``): the supply
stays (phase voltages normal, no ``power_loss``) while the feeder power drops to zero at night,
which is the cabinet's own evidence the ``cabinet-feeder-cut`` rule looks for.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from ioc.core.catalogue import clip
from ioc.core.devices import Device
from ioc.simulators.conditions import Conditions
from ioc.simulators.lighting import phase_voltage
from ioc.simulators.model import device_rng, epoch_s

if TYPE_CHECKING:
    from ioc.simulators.lighting import LampModel


class CabinetModel:
    """The meter/RTU of one lighting cabinet, fed by the models of its lamps."""

    def __init__(self, device: Device, seed: int, lamps: list[LampModel]) -> None:
        self.device = device
        self.interval_s = 60.0
        self.lamps = lamps
        self.phases = max(1, min(3, int(device.attributes.get("phases", 3) or 3)))
        self._seed = seed
        # The feeder meter has run as long as its lamps: their energy plus 1–3 % cable losses.
        rng = device_rng(seed, device.id)
        self._energy_kwh = sum(lamp.energy_kwh for lamp in lamps) * rng.uniform(1.01, 1.03)
        self._last_t: float | None = None
        self._last_p = 0.0
        # Supplied before the run, so a run that starts in an outage reports it.
        self._had_supply = True
        self._pending: list[dict[str, object]] = []

    def has_supply(self, cond: Conditions) -> bool:
        """Whether the cabinet is energised."""
        return self.device.id not in cond.cabinet_power_loss

    def _reading(self, t: datetime, cond: Conditions) -> dict[str, float]:
        volts = [0.0, 0.0, 0.0]
        amps = [0.0, 0.0, 0.0]
        power = 0.0
        if self.has_supply(cond):
            for phase in range(self.phases):
                volts[phase] = round(phase_voltage(self._seed, self.device.id, phase, t), 1)
            for lamp in self.lamps:
                reading = lamp.electrical(t, cond)
                if reading is not None:
                    power += reading.power_w
                    amps[lamp.phase % self.phases] += reading.current_a
        return {
            "voltage_l1_v": volts[0],
            "voltage_l2_v": volts[1],
            "voltage_l3_v": volts[2],
            "current_l1_a": round(amps[0], 3),
            "current_l2_a": round(amps[1], 3),
            "current_l3_a": round(amps[2], 3),
            "power_w": round(power, 1),
        }  # a cut feeder (cable theft): voltages stay, the lamps draw nothing (lighting.powered)

    def _advance(self, t: datetime, cond: Conditions) -> dict[str, float]:
        reading = self._reading(t, cond)
        supply = self.has_supply(cond)
        if supply != self._had_supply:
            self._pending.append({"type": "power_restored" if supply else "power_loss"})
        self._had_supply = supply
        ts = epoch_s(t)
        if self._last_t is not None and ts > self._last_t:
            mean_w = (self._last_p + reading["power_w"]) / 2.0
            self._energy_kwh += mean_w * (ts - self._last_t) / 3.6e6
        if self._last_t is None or ts >= self._last_t:
            self._last_t, self._last_p = ts, reading["power_w"]
        return reading

    def online(self, t: datetime, cond: Conditions) -> bool:
        """The RTU has a battery: offline only when silenced."""
        self._advance(t, cond)
        return self.device.id not in cond.silent_devices

    def telemetry(self, t: datetime, cond: Conditions) -> dict[str, float] | None:
        """Phase voltages and currents, feeder power and energy, door switch."""
        reading = self._advance(t, cond)
        if self.device.id in cond.silent_devices:
            return None
        reading["energy_kwh"] = round(self._energy_kwh, 3)
        reading["door_open"] = 0.0
        return clip("cabinet", reading)

    def events(self, t: datetime, cond: Conditions) -> list[dict[str, object]]:
        """``power_loss`` when supply goes, ``power_restored`` when it returns (each once)."""
        self._advance(t, cond)
        if self.device.id in cond.silent_devices:
            return []
        out, self._pending = self._pending, []
        return out
