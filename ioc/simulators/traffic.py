"""Traffic: junction detectors (counts by class, speed, occupancy) and AI cameras (events).

Demand at a detector is its capacity × a diurnal profile × a per-approach scale. The profile has
the morning (06:30–08:00) and evening (16:30–18:30) peaks of Vietnamese provincial towns, a
lunchtime bump, a quiet night; weekends are lighter and flatter. Counts per interval are Poisson
by class: motorbikes 80–85 %, cars ~10 %, trucks and buses a few per cent.

Speed follows the BPR volume-delay curve, ``v = v_ff / (1 + 0.15 x⁴)`` with ``x`` = demand over
the capacity left (``capacity_veh_h × Conditions.traffic_capacity``): an accident that halves
capacity at the peak drops speed below half of free flow, the "congested" class. The detector
counts what gets through (at most the capacity left). Occupancy is the share of time the zone is
covered: density (flow / speed, per lane) × effective vehicle length; motorbikes, riding several
abreast, count for a fraction of a lane.
"""

from __future__ import annotations

import itertools
import random
from datetime import datetime

from ioc.core.catalogue import clip
from ioc.core.devices import Device
from ioc.simulators.conditions import Conditions
from ioc.simulators.model import (
    LOCAL_TZ,
    device_key,
    device_rng,
    epoch_s,
    noise,
    poisson,
)

CLASSES = ("motorbike", "car", "truck", "bus")
# Effective length (m) each class covers in one lane, detection zone included.
_OCCUPYING_M = {"motorbike": 1.6, "car": 5.5, "truck": 11.0, "bus": 13.0}

# Demand as a share of capacity by local hour (piecewise linear, weekday / weekend). The rush
# hours exceed capacity (x ≈ 1.2: speed ≈ 0.77 of free flow, "moderate" congestion), as the
# main junctions of both towns do at school and office times.
_WEEKDAY = (
    (0.0, 0.04), (4.5, 0.04), (5.5, 0.15), (6.5, 0.6), (7.25, 1.2), (8.0, 0.7), (9.0, 0.42),
    (11.0, 0.45), (11.75, 0.58), (12.5, 0.45), (14.0, 0.4), (16.0, 0.55), (17.25, 1.2),
    (18.5, 0.65), (20.0, 0.42), (22.0, 0.18), (24.0, 0.04),
)  # fmt: skip
_WEEKEND = (
    (0.0, 0.05), (5.0, 0.05), (6.5, 0.2), (8.0, 0.4), (10.0, 0.5), (12.0, 0.45), (15.0, 0.45),
    (17.5, 0.6), (19.5, 0.55), (22.0, 0.22), (24.0, 0.05),
)  # fmt: skip

RANDOM_CAMERA_EVENTS = ("wrong_way", "stopped_vehicle", "accident")
_CAMERA_EVENT_P_PER_DAY = (0.03, 0.03, 0.005)  # per camera, per type
_BPR_ALPHA, _BPR_BETA = 0.15, 4.0


def demand_share(t: datetime) -> float:
    """Demand as a share of capacity at ``t`` (weekday or weekend profile, local time)."""
    local = t.astimezone(LOCAL_TZ)
    h = local.hour + local.minute / 60.0 + local.second / 3600.0
    table = _WEEKEND if local.weekday() >= 5 else _WEEKDAY
    for (h0, v0), (h1, v1) in itertools.pairwise(table):
        if h0 <= h <= h1:
            return v0 + (v1 - v0) * (h - h0) / (h1 - h0)
    return table[-1][1]


def bpr_speed(free_flow_kmh: float, x: float) -> float:
    """BPR mean speed (km/h) at volume/capacity ratio ``x``, never below walking pace."""
    return max(3.0, free_flow_kmh / (1.0 + _BPR_ALPHA * x**_BPR_BETA))


class _Counter:
    """Demand and class mix of one approach, shared by detectors and camera counters."""

    def __init__(self, device: Device, seed: int, capacity_veh_h: float) -> None:
        self.device = device
        self.capacity_veh_h = capacity_veh_h
        self._key = device_key(seed, device.id)
        rng = device_rng(seed, device.id)
        self.scale = rng.uniform(0.8, 1.0)  # how busy this approach is at its peak
        road = str(device.attributes.get("road", ""))
        trucks = 0.05 if "Quốc lộ" in road else 0.03  # national highways carry more freight
        motorbike = rng.uniform(0.80, 0.85)
        bus = 0.015
        self.mix = {
            "motorbike": motorbike,
            "car": 1.0 - motorbike - trucks - bus,
            "truck": trucks,
            "bus": bus,
        }

    def demand_veh_h(self, t: datetime) -> float:
        return self.capacity_veh_h * self.scale * demand_share(t)

    def counts(self, t: datetime, flow_veh_h: float, interval_s: float) -> dict[str, int]:
        # Counts depend only on (device, t): the same reading whoever asks and how often.
        rng = random.Random(self._key ^ int(epoch_s(t)))
        mean = flow_veh_h * interval_s / 3600.0
        return {c: poisson(rng, mean * self.mix[c]) for c in CLASSES}


class DetectorModel:
    """A counting zone on one junction approach (radar or video detector)."""

    def __init__(self, device: Device, seed: int) -> None:
        self.device = device
        self.interval_s = 60.0
        a = device.attributes
        self.free_flow_kmh = float(a.get("free_flow_kmh", 40.0))
        self.lanes = float(a.get("lanes", 2))
        self._counter = _Counter(device, seed, float(a.get("capacity_veh_h", 1800.0)))
        self._key = device_key(seed, device.id)

    def capacity_veh_h(self, cond: Conditions) -> float:
        """Capacity left at the detector under the scenario (an accident lowers it)."""
        share = max(0.0, cond.traffic_capacity.get(self.device.id, 1.0))
        return self._counter.capacity_veh_h * share

    def state(self, t: datetime, cond: Conditions) -> tuple[float, float]:
        """(flow through the detector veh/h, mean speed km/h) at ``t``, noise-free."""
        demand = self._counter.demand_veh_h(t)
        capacity = max(1e-6, self.capacity_veh_h(cond))
        x = demand / capacity
        return min(demand, capacity), bpr_speed(self.free_flow_kmh, x)

    def online(self, t: datetime, cond: Conditions) -> bool:
        """Online unless the scenario silences it."""
        return self.device.id not in cond.silent_devices

    def telemetry(self, t: datetime, cond: Conditions) -> dict[str, float] | None:
        """Counts by class, mean speed and occupancy over the last interval."""
        if self.device.id in cond.silent_devices:
            return None
        flow, speed = self.state(t, cond)
        counts = self._counter.counts(t, flow, self.interval_s)
        speed = max(3.0, speed * (1.0 + 0.03 * noise(self._key, int(epoch_s(t)), 7)))
        # Occupancy = Σ density_c × length_c per lane, with density = flow / speed (veh/km).
        per_h = 3600.0 / self.interval_s
        covered_m = sum(counts[c] * per_h * _OCCUPYING_M[c] for c in CLASSES) / speed
        occupancy = 100.0 * covered_m / (1000.0 * self.lanes)
        x = self._counter.demand_veh_h(t) / max(1e-6, self.capacity_veh_h(cond))
        if x > 1.0:  # over capacity the queue backs up over the zone: stopped vehicles cover it
            occupancy = max(occupancy, 95.0 * (1.0 - 1.0 / x))
        occupancy = min(98.0, occupancy)
        values: dict[str, float] = {f"count_{c}": float(n) for c, n in counts.items()}
        values.update(
            speed_kmh=round(speed, 1),
            occupancy_pct=round(occupancy, 1),
            interval_s=self.interval_s,
        )
        return clip("traffic", values)

    def events(self, t: datetime, cond: Conditions) -> list[dict[str, object]]:
        """Detectors raise no events; cameras do."""
        return []


class CameraModel:
    """An AI camera at a junction: scenario events, rare random ones, and a 5-minute count."""

    def __init__(self, device: Device, seed: int) -> None:
        self.device = device
        self.interval_s = 300.0
        self._seed = seed
        self._counter = _Counter(device, seed, float(device.attributes.get("capacity_veh_h", 2400)))
        self._last_forced: str | None = None
        self._last_t: float | None = None
        self._days: dict[int, list[tuple[float, str]]] = {}

    def _random_events(self, day: int) -> list[tuple[float, str]]:
        """(epoch s, type) of the random events of local day ordinal ``day``."""
        if day not in self._days:
            if len(self._days) > 16:
                self._days.clear()
            rng = device_rng(self._seed, self.device.id, salt=day)
            start = datetime.fromordinal(day).replace(tzinfo=LOCAL_TZ).timestamp()
            self._days[day] = sorted(
                (start + rng.uniform(0.0, 86_400.0), kind)
                for kind, p in zip(RANDOM_CAMERA_EVENTS, _CAMERA_EVENT_P_PER_DAY, strict=True)
                if rng.random() < p
            )
        return self._days[day]

    def online(self, t: datetime, cond: Conditions) -> bool:
        """Online unless the scenario silences it."""
        return self.device.id not in cond.silent_devices

    def telemetry(self, t: datetime, cond: Conditions) -> dict[str, float] | None:
        """Vehicles the camera counted in the last 5 minutes, by class."""
        if self.device.id in cond.silent_devices:
            return None
        counts = self._counter.counts(t, self._counter.demand_veh_h(t), self.interval_s)
        values: dict[str, float] = {f"count_{c}": float(n) for c, n in counts.items()}
        values["interval_s"] = self.interval_s
        return clip("traffic", values)

    def events(self, t: datetime, cond: Conditions) -> list[dict[str, object]]:
        """The scenario's event for this camera once when it appears, plus rare random ones."""
        ts = epoch_s(t)
        out: list[dict[str, object]] = []
        forced = cond.camera_events.get(self.device.id)
        if forced is not None and forced != self._last_forced:
            out.append({"type": forced, "junction": self.device.attributes.get("junction")})
        self._last_forced = forced
        if self._last_t is not None and ts > self._last_t:
            first = datetime.fromtimestamp(self._last_t, LOCAL_TZ).date().toordinal()
            last = t.astimezone(LOCAL_TZ).date().toordinal()
            for day in range(max(first, last - 2), last + 1):
                for at, kind in self._random_events(day):
                    if self._last_t < at <= ts:
                        out.append(
                            {"type": kind, "junction": self.device.attributes.get("junction")}
                        )
        if self._last_t is None or ts > self._last_t:
            self._last_t = ts
        if self.device.id in cond.silent_devices:
            return []
        return out
