"""The device-model interface the simulator runner drives, and the helpers the models share.

A model is pure and deterministic: given the site, the seed and the same sequence of calls
``(t, conditions)`` it produces the same readings and events. Randomness comes only from
:func:`device_rng` (stateful draws, e.g. when a fault begins) and :func:`noise` (a hash of the
device key and the time, so a reading at ``t`` is the same whoever asks for it first — the
cabinet that sums its lamps or the lamp itself). Never the global RNG nor ``hash()`` (salted per
process).

One module per kind builds its models: :mod:`ioc.simulators.flood`, :mod:`ioc.simulators.rain`,
:mod:`ioc.simulators.lighting`, :mod:`ioc.simulators.cabinet`, :mod:`ioc.simulators.traffic`,
:mod:`ioc.simulators.salinity`; :mod:`ioc.simulators.fleet` builds one per site device. Citizen
reports, which are not devices, are :class:`ioc.simulators.reports.ReportModel`.
"""

from __future__ import annotations

import math
import random
import zlib
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from ioc.core.devices import Device
from ioc.core.localtime import FIXED_OFFSET
from ioc.simulators.conditions import Conditions

__all__ = [
    "LOCAL_TZ",
    "DeviceModel",
    "Problems",
    "device_key",
    "device_rng",
    "noise",
]

# The site's +07:00 as a fixed offset (ioc.core.localtime: exact here, and cheaper than a zoneinfo
# lookup on every reading of 10,000 devices).
LOCAL_TZ = FIXED_OFFSET


class DeviceModel(Protocol):
    """One simulated field device. Calls come in non-decreasing simulated time ``t``."""

    device: Device
    interval_s: float  # nominal reporting interval, simulated seconds

    def telemetry(self, t: datetime, cond: Conditions) -> dict[str, float] | None:
        """Metrics of one reading at ``t``; None when there is nothing to send."""
        ...

    def events(self, t: datetime, cond: Conditions) -> list[dict[str, object]]:
        """Discrete events detected since the previous call: ``{"type": …, **extra}``."""
        ...

    def online(self, t: datetime, cond: Conditions) -> bool:
        """False while the device cannot talk (silent, or its cabinet lost power)."""
        ...


@dataclass(frozen=True)
class Problems:
    """What the runner saw going wrong; citizen reports cluster near these devices."""

    dark_lamps: tuple[Device, ...] = ()
    flooded_stations: tuple[Device, ...] = ()


# ------------------------------------------------------------------------ shared helpers


def device_key(seed: int, device_id: str) -> int:
    """The per-device integer that seeds every random choice of that device's model."""
    return (seed ^ zlib.crc32(device_id.encode("utf-8"))) & 0xFFFFFFFFFFFFFFFF


def device_rng(seed: int, device_id: str, salt: int = 0) -> random.Random:
    """A private RNG for one device (``salt`` separates independent streams, e.g. per night)."""
    return random.Random(device_key(seed, device_id) ^ (salt * 0x9E3779B97F4A7C15))


def _mix64(x: int) -> int:
    # splitmix64 finaliser: a fast, well-spread integer hash (stable across processes).
    x &= 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return x ^ (x >> 31)


def noise(key: int, tick: int, salt: int = 0) -> float:
    """A reproducible pseudo-random number in [-1, 1) for (device key, time tick, metric salt)."""
    h = _mix64(key ^ _mix64(tick * 0x9E3779B97F4A7C15 + salt))
    return (h >> 11) / float(1 << 52) - 1.0


def gauss_noise(key: int, tick: int, salt: int = 0) -> float:
    """Like :func:`noise` but roughly standard normal (sum of three uniforms, variance 1)."""
    return noise(key, tick, salt) + noise(key, tick, salt + 1) + noise(key, tick, salt + 2)


def epoch_s(t: datetime) -> float:
    """Seconds since the Unix epoch of an aware datetime."""
    return t.timestamp()


def poisson(rng: random.Random, lam: float) -> int:
    """A Poisson draw: exact (Knuth) for small means, normal approximation for large ones."""
    if lam <= 0.0:
        return 0
    if lam > 40.0:
        return max(0, round(rng.gauss(lam, math.sqrt(lam))))
    limit, k, p = math.exp(-lam), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k
