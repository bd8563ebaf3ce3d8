"""Street-lamp controllers (uCIFI LwM2M object 3416): astronomical switching, dimming, faults.

A lamp switches on a few minutes after sunset and off a few minutes before sunrise at its own
coordinates (:mod:`ioc.simulators.sun`), and dims to its feeder's night level (50–60 %) from 00:00
to
04:30 local time, the usual energy-saving schedule of Vietnamese LED street lighting.

Electrical readings are consistent with each other: the LED driver draws roughly
``nominal_w × dim`` (drivers are close to linear), power factor is ≈ 0.95 at full output and falls
when dimmed, supply voltage is the cabinet's phase voltage less a small line drop, and
``current = P / (V · PF)``. Energy and operating hours accumulate between readings.

Faults (uCIFI 3416 flags 5, 7, 9, 10, 11) start as rare random events — a per-lamp draw each night
— or are forced by ``Conditions.lamp_faults``. Each is reported once on ``events()``, when the
controller can first see it (a dead lamp shows when it is switched on, a day burner in daylight).
A lamp whose cabinet has lost supply reads nothing and is offline: an unpowered controller cannot
say so itself, so it sends no event — the IOC sees it go silent (and its status will fire in
per-device runs).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from functools import lru_cache

from ioc.core.catalogue import clip
from ioc.core.devices import Device
from ioc.simulators.conditions import Conditions
from ioc.simulators.model import (
    LOCAL_TZ,
    device_key,
    device_rng,
    epoch_s,
    noise,
)
from ioc.simulators.sun import sun_times

FAULT_TYPES = ("lamp_failure", "relay_failure", "day_burner", "cycling", "control_gear_failure")
# A scenario may force any lighting event type of the catalogue: the random faults above, plus a
# thermally derated driver (70 % output) and a controller that lost its radio link.
FORCEABLE_FAULTS = (*FAULT_TYPES, "thermal_derating", "connection_lost")
_DERATED = 0.7
# Relative frequency of the random faults: dead light sources dominate in field statistics.
_FAULT_WEIGHTS = (0.45, 0.15, 0.15, 0.10, 0.15)
# Probability that a given lamp develops a fault on a given night: ≈ 7 % a year, a typical
# maintenance figure for LED street lighting (drivers, surge damage, water ingress).
FAULT_P_PER_NIGHT = 0.0002
# A random fault lasts until the crew repairs it, one to four days later.
_REPAIR_H = (24.0, 96.0)

DIM_FROM = time(0, 0)
DIM_UNTIL = time(4, 30)
_CYCLE_S, _CYCLE_ON_S = 600, 360  # a cycling lamp: 6 min on, 4 min off
_PF_FULL = 0.955  # LED driver power factor at full output
_PF_DIM_SLOPE = 0.15  # PF loss at zero output (so ≈ 0.88 at 50 %)
_GEAR_RISE_C = 25.0  # control-gear temperature rise over ambient at full load
_GEAR_TAU_S = 1200.0  # thermal time constant of the luminaire head


def phase_voltage(seed: int, cabinet_id: str, phase: int, t: datetime) -> float:
    """Supply voltage (V) of one cabinet phase at ``t``: 220 V nominal, dipping at evening peak.

    Shared by the cabinet meter and the lamps on that phase, so both read the same supply.
    """
    key, base, wander_phase = _phase_constants(seed, cabinet_id, phase)
    ts = epoch_s(t)
    local_h = (ts / 3600.0 + 7.0) % 24.0
    # The grid sags at the evening peak (18–22 h) and recovers late at night.
    evening = math.exp(-(((local_h - 19.5) / 2.0) ** 2))
    wander = 1.5 * math.sin(2 * math.pi * ts / 19_080.0 + wander_phase)
    jitter = 0.4 * noise(key, int(ts // 60), 300 + phase)
    return base - 4.0 * evening + wander + jitter


@lru_cache(maxsize=8192)
def _phase_constants(seed: int, cabinet_id: str, phase: int) -> tuple[int, float, float]:
    key = device_key(seed, cabinet_id)
    return key, 223.0 + 1.5 * noise(key, 0, 100 + phase), 3.0 * noise(key, 1, 200 + phase)


@dataclass(frozen=True, slots=True)
class Electrical:
    """The lamp's electrical state at one instant, already rounded as the controller reports it."""

    dim_level_pct: float
    power_w: float
    voltage_v: float
    current_a: float
    power_factor: float
    lit: bool


@dataclass(frozen=True, slots=True)
class _Episode:
    fault: str
    ident: tuple[object, ...]  # what makes two active faults "the same one"


class LampModel:
    """One street-lamp controller on a cabinet feeder (``phase``, ``feeder_position`` from 0)."""

    def __init__(self, device: Device, seed: int, *, phase: int = 0, feeder_position: int = 0):
        self.device = device
        self.interval_s = 300.0
        self.cabinet_id = str(device.attributes["cabinet"])
        self.nominal_w = float(device.attributes.get("nominal_w", 100.0))
        self.min_w = float(device.attributes.get("min_w", 0.3 * self.nominal_w))
        self.phase = phase
        self._seed = seed
        self._key = device_key(seed, device.id)
        rng = device_rng(seed, device.id)
        # Photocell/astro-clock tolerance: on 0–4 min after sunset, off 0–4 min before sunrise.
        self._on_delay = timedelta(seconds=rng.uniform(0, 240))
        self._off_advance = timedelta(seconds=rng.uniform(0, 240))
        # One dimming schedule per feeder: 50, 55 or 60 %.
        self.night_dim_pct = 50.0 + 5.0 * (device_key(0, self.cabinet_id) % 3)
        self._pf_full = _PF_FULL + rng.uniform(-0.01, 0.01)
        self._line_drop = min(0.012, 0.0005 * feeder_position)  # farther lamps see less voltage
        self._cycle_offset = rng.randrange(_CYCLE_S)
        # Installed 0.5–3.5 years ago at ~4,200 burning hours a year.
        self._hours = rng.uniform(2_000.0, 15_000.0)
        self._energy_kwh = self._hours * self.nominal_w * 0.85 / 1000.0
        self._gear_c: float | None = None
        self._last_t: float | None = None
        self._last_p = 0.0
        self._last_lit = False
        # Supplied before the run, so a run that starts in an outage reports it.
        self._powered = True
        self._episode: _Episode | None = None
        self._episode_reported = False
        self._pending: list[dict[str, object]] = []
        self._nights: dict[int, tuple[str, float, float] | None] = {}
        self._recent: tuple[int, tuple[tuple[int, tuple[str, float, float]], ...]] = (-1, ())
        self._memo: tuple[float, Conditions | None, Electrical | None] = (math.nan, None, None)

    # ------------------------------------------------------------------ schedule and faults

    def scheduled(self, t: datetime) -> tuple[bool, float]:
        """(switched on by schedule, commanded dim level %) at ``t``, faults aside."""
        local = t.astimezone(LOCAL_TZ)
        rise, set_ = sun_times(self.device.lat, self.device.lon, local.date())
        on = local >= set_ + self._on_delay or local < rise - self._off_advance
        if not on:
            return False, 0.0
        return True, self.night_dim_pct if DIM_FROM <= local.time() < DIM_UNTIL else 100.0

    def _night_fault(self, night: int) -> tuple[str, float, float] | None:
        """The random fault (type, start, end epoch s) drawn for the night starting on ``night``."""
        if night not in self._nights:
            rng = device_rng(self._seed, self.device.id, salt=night)
            drawn: tuple[str, float, float] | None = None
            if rng.random() < FAULT_P_PER_NIGHT:
                fault = rng.choices(FAULT_TYPES, weights=_FAULT_WEIGHTS)[0]
                day = date.fromordinal(night)
                _, set_ = sun_times(self.device.lat, self.device.lon, day)
                start = epoch_s(set_) + rng.uniform(0.0, 11.0 * 3600.0)
                drawn = (fault, start, start + rng.uniform(*_REPAIR_H) * 3600.0)
            if len(self._nights) > 64:
                self._nights.clear()
            self._nights[night] = drawn
        return self._nights[night]

    def active_fault(self, t: datetime, cond: Conditions) -> _Episode | None:
        """The fault in force at ``t``: a forced one wins over a random one."""
        forced = cond.lamp_faults.get(self.device.id)
        if forced is not None:
            if forced not in FORCEABLE_FAULTS:
                raise ValueError(
                    f"lamp_faults[{self.device.id!r}] = {forced!r} is not one of {FORCEABLE_FAULTS}"
                )
            return _Episode(forced, ("forced", forced))
        ts = epoch_s(t)
        for night, (fault, start, end) in self._recent_faults(t):
            if start <= ts < end:
                return _Episode(fault, ("random", night))
        return None

    def _recent_faults(self, t: datetime) -> tuple[tuple[int, tuple[str, float, float]], ...]:
        """The random faults drawn for the nights that can still be in force on ``t``'s day."""
        today = t.astimezone(LOCAL_TZ).date().toordinal()
        if self._recent[0] != today:
            found = []
            for night in range(today - 4, today + 1):  # repairs take at most 4 days
                drawn = self._night_fault(night)
                if drawn is not None:
                    found.append((night, drawn))
            self._recent = (today, tuple(found))
        return self._recent[1]

    # ----------------------------------------------------------------- electrical state

    def powered(self, cond: Conditions) -> bool:
        """Whether the lamp's cabinet has supply and the cable from it is whole."""
        return self.cabinet_id not in cond.cabinet_power_loss and (
            self.cabinet_id not in cond.feeder_cut
        )

    def electrical(self, t: datetime, cond: Conditions) -> Electrical | None:
        """The electrical reading at ``t`` (None without supply). Pure in (t, cond)."""
        ts = epoch_s(t)
        # The cabinet, telemetry() and events() all ask for the same instant: compute it once.
        if self._memo[0] == ts and self._memo[1] is cond:
            return self._memo[2]
        reading = self._electrical(t, cond)
        self._memo = (ts, cond, reading)
        return reading

    def _electrical(self, t: datetime, cond: Conditions) -> Electrical | None:
        if not self.powered(cond):
            return None
        on, dim = self.scheduled(t)
        episode = self.active_fault(t, cond)
        fault = episode.fault if episode else None
        level = dim / 100.0 if on else 0.0
        pf = self._pf_full - _PF_DIM_SLOPE * (1.0 - level)
        tick = int(epoch_s(t))
        if fault in ("lamp_failure", "relay_failure") and on:
            level = 0.0
        elif fault == "day_burner" and not on:
            level, pf = 1.0, self._pf_full
        elif fault == "cycling" and on and (tick + self._cycle_offset) % _CYCLE_S >= _CYCLE_ON_S:
            level = 0.0
        elif fault == "thermal_derating" and on:
            level *= _DERATED
        if fault == "control_gear_failure" and on:
            # A failing driver flickers at a fraction of the minimum wattage, poor power factor.
            power = 0.5 * self.min_w * (1.0 + 0.2 * noise(self._key, tick, 1))
            pf = 0.55 + 0.05 * noise(self._key, tick, 2)
        else:
            power = self.nominal_w * level * (1.0 + 0.01 * noise(self._key, tick, 1))
            pf += 0.003 * noise(self._key, tick, 2)
        volts = phase_voltage(self._seed, self.cabinet_id, self.phase, t) * (1.0 - self._line_drop)
        volts = round(volts + 0.3 * noise(self._key, tick, 3), 1)
        lit = power > 0.0
        if not lit:
            return Electrical(dim if on else 0.0, 0.0, volts, 0.0, 0.0, False)
        power = round(power, 1)
        pf = round(min(0.99, pf), 3)
        return Electrical(
            dim if on else 0.0, power, volts, round(power / (volts * pf), 4), pf, True
        )

    @property
    def energy_kwh(self) -> float:
        """The active-energy counter as of the last call."""
        return self._energy_kwh

    def power_w(self, t: datetime, cond: Conditions) -> float:
        """Active power at ``t`` as the controller reports it (0 without supply)."""
        reading = self.electrical(t, cond)
        return reading.power_w if reading else 0.0

    # --------------------------------------------------------------------- state in time

    def _ambient_c(self, t: datetime) -> float:
        local_h = (epoch_s(t) / 3600.0 + 7.0) % 24.0
        return 27.0 + 4.0 * math.cos(2 * math.pi * (local_h - 14.0) / 24.0)

    def _advance(self, t: datetime, cond: Conditions) -> Electrical | None:
        ts = epoch_s(t)
        reading = self.electrical(t, cond)
        powered = reading is not None
        self._powered = powered
        p_now = reading.power_w if reading else 0.0
        lit_now = reading.lit if reading else False
        if self._last_t is not None and ts > self._last_t:
            dt = ts - self._last_t
            self._energy_kwh += (self._last_p + p_now) / 2.0 * dt / 3.6e6
            self._hours += (self._last_lit + lit_now) / 2.0 * dt / 3600.0
            target = self._ambient_c(t) + _GEAR_RISE_C * p_now / self.nominal_w
            assert self._gear_c is not None
            self._gear_c += (target - self._gear_c) * (1.0 - math.exp(-dt / _GEAR_TAU_S))
        elif self._gear_c is None:
            self._gear_c = self._ambient_c(t) + _GEAR_RISE_C * p_now / self.nominal_w
        if self._last_t is None or ts >= self._last_t:
            self._last_t, self._last_p, self._last_lit = ts, p_now, lit_now
        self._track_fault(t, cond, reading)
        return reading

    def _track_fault(self, t: datetime, cond: Conditions, reading: Electrical | None) -> None:
        episode = self.active_fault(t, cond)
        if episode != self._episode:
            self._episode, self._episode_reported = episode, False
        if episode is None or self._episode_reported or reading is None:
            return
        on, _ = self.scheduled(t)
        # Reported when the controller can see it: in daylight for a day burner, at once for a
        # lost link (the management system notices), else at night when the lamp should burn.
        if episode.fault == "connection_lost" or on != (episode.fault == "day_burner"):
            forced = episode.ident[0] == "forced"
            self._pending.append(
                {"type": episode.fault, "cabinet": self.cabinet_id, "forced": forced}
            )
            self._episode_reported = True

    # ------------------------------------------------------------------ DeviceModel API

    def _reachable(self, cond: Conditions) -> bool:
        return (
            self.device.id not in cond.silent_devices
            and self.powered(cond)
            and cond.lamp_faults.get(self.device.id) != "connection_lost"
        )

    def online(self, t: datetime, cond: Conditions) -> bool:
        """False while silent, while the cabinet has no supply, or with its link forced down."""
        self._advance(t, cond)
        return self._reachable(cond)

    def telemetry(self, t: datetime, cond: Conditions) -> dict[str, float] | None:
        """One uCIFI-style reading; None while offline."""
        reading = self._advance(t, cond)
        if reading is None or not self._reachable(cond):
            return None
        assert self._gear_c is not None
        return clip(
            "lighting",
            {
                "dim_level_pct": reading.dim_level_pct,
                "power_w": reading.power_w,
                "voltage_v": reading.voltage_v,
                "current_a": reading.current_a,
                "power_factor": reading.power_factor,
                "energy_kwh": round(self._energy_kwh, 3),
                "operating_hours": round(self._hours, 2),
                "gear_temperature_c": round(self._gear_c, 1),
            },
        )

    def events(self, t: datetime, cond: Conditions) -> list[dict[str, object]]:
        """Faults that began since the last call (``connection_lost`` only when forced).

        Fault events wait while the controller is offline (it stores and forwards them);
        ``connection_lost`` comes from the management system and is delivered at once.
        """
        self._advance(t, cond)
        if not self._reachable(cond):
            out = [e for e in self._pending if e["type"] == "connection_lost"]
            self._pending = [e for e in self._pending if e["type"] != "connection_lost"]
            return out
        out, self._pending = self._pending, []
        return out
