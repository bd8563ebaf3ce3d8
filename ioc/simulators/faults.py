"""Fault injection: break outgoing telemetry on purpose, and keep the books on what was broken.

Each fault has a rate per telemetry message (0..1; one draw per message picks at most one fault,
so the rates must add up to at most 1). Every injected bad message carries the dead-letter
reason the IOC must record for it, and every message carries the number of readings the IOC
must store for it, so a test can compare what was sent with what the IOC recorded:

=================  ==========================================  ============================
fault              what is sent                                 the IOC should
=================  ==========================================  ============================
malformed          the JSON cut short                           dead-letter malformed_json
wrong_type         one metric value as a string ("0.82")        dead-letter wrong_type
duplicate          the message, then the same bytes again       store it once
out_of_order       held back, sent after the device's next one  store it
clock_skew         ``ts`` moved ``skew_s`` into the future      dead-letter
                                                                timestamp_out_of_bounds
oversize           padded past ``oversize_bytes``               dead-letter oversize
silence            nothing from the device for ``silence_s``    store nothing (gap)
reconnect_storm    a share of the connections dropped at once   store everything (QoS 1)
=================  ==========================================  ============================

Faults touch telemetry only: events and statuses carry the scenario's story (an accident, a
cabinet's power loss) and citizen reports are not device messages. Deterministic for a seed, given
the same sequence of messages.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import Any, ClassVar

import orjson

FAULTS = (
    "malformed",
    "wrong_type",
    "duplicate",
    "out_of_order",
    "clock_skew",
    "oversize",
    "silence",
    "reconnect_storm",
)

# Dead-letter reasons, spelled as ioc/ingest/errors.py spells them (simulators do not import ingest:
# the reason strings are the contract between the two).
_REASON = {
    "malformed": "malformed_json",
    "wrong_type": "wrong_type",
    "clock_skew": "timestamp_out_of_bounds",
    "oversize": "oversize",
}


class FaultConfigError(ValueError):
    """A fault specification that cannot be used (unknown name, rate outside 0..1, …)."""


@dataclass(frozen=True, slots=True)
class FaultConfig:
    """Rates per telemetry message for each fault, and the faults' parameters."""

    malformed: float = 0.0
    wrong_type: float = 0.0
    duplicate: float = 0.0
    out_of_order: float = 0.0
    clock_skew: float = 0.0
    oversize: float = 0.0
    silence: float = 0.0
    reconnect_storm: float = 0.0
    # Parameters. skew_s far beyond any IOC's tolerance (ingest accepts minutes into the future).
    silence_s: float = 600.0
    skew_s: float = 400 * 86_400.0
    # Above the IOC's payload limit (IOC_MAX_PAYLOAD_BYTES, 16 KiB by default).
    oversize_bytes: int = 65_536
    # Share of the connections a storm drops at once (at least one).
    storm_fraction: float = 0.25

    PARAMETERS: ClassVar[frozenset[str]] = frozenset(
        {"silence_s", "skew_s", "oversize_bytes", "storm_fraction"}
    )

    def __post_init__(self) -> None:
        for name in FAULTS:
            rate = getattr(self, name)
            if not 0.0 <= rate <= 1.0:
                raise FaultConfigError(f"{name}: rate {rate} is outside 0..1")
        if self.total_rate > 1.0 + 1e-9:
            raise FaultConfigError(f"the fault rates add up to {self.total_rate:.3f}, above 1")
        if not 0.0 < self.storm_fraction <= 1.0:
            raise FaultConfigError(f"storm_fraction {self.storm_fraction} is outside (0, 1]")
        if self.silence_s < 0 or self.skew_s <= 0 or self.oversize_bytes <= 0:
            raise FaultConfigError("silence_s, skew_s and oversize_bytes must be positive")

    @property
    def total_rate(self) -> float:
        return sum(getattr(self, name) for name in FAULTS)

    @property
    def enabled(self) -> bool:
        return self.total_rate > 0

    def rates(self) -> dict[str, float]:
        return {name: getattr(self, name) for name in FAULTS}

    @classmethod
    def parse(cls, spec: str, **defaults: Any) -> FaultConfig:
        """``"all=0.01"``, ``"malformed=0.02,duplicate=0.05,silence_s=300"`` or ``""`` (none).

        ``all`` sets every per-message fault except ``reconnect_storm`` (storms are costly;
        name them explicitly). ``defaults`` are applied first (e.g. ``oversize_bytes``).
        """
        values: dict[str, Any] = dict(defaults)
        known = {f.name for f in fields(cls)}
        for part in filter(None, (p.strip() for p in spec.split(","))):
            name, sep, raw = part.partition("=")
            name = name.strip()
            if not sep:
                raise FaultConfigError(f"{part!r}: expected name=value")
            if name != "all" and name not in known:
                raise FaultConfigError(f"{name!r} is not one of all, {', '.join(sorted(known))}")
            try:
                number = float(raw)
            except ValueError:
                raise FaultConfigError(f"{name}: {raw!r} is not a number") from None
            if name == "all":
                values.update({f: number for f in FAULTS if f != "reconnect_storm"})
            elif name == "oversize_bytes":
                values[name] = int(number)
            else:
                values[name] = number
        return cls(**values)


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One telemetry message as the device would send it, before any fault."""

    topic: str
    device_id: str
    t: datetime
    doc: Mapping[str, Any]  # {"ts": …, "seq": …, "metrics": {…}}


@dataclass(frozen=True, slots=True)
class Message:
    """A message to publish and what the IOC should make of it."""

    topic: str
    payload: bytes
    device_id: str
    readings: int  # (device, metric, time) triples it adds to the store; 0 if it adds none
    dead_letter: str | None = None  # the reason the IOC records instead of storing it
    fault: str | None = None


class FaultInjector:
    """Applies a :class:`FaultConfig` to outgoing telemetry; counts every fault it injects.

    ``counts`` is faults by name (plus ``suppressed``: messages withheld by silences);
    ``dead_letters`` is the expected dead letters by reason. A reconnect storm is a request to
    the runner (``take_storms()``): the injector knows messages, not connections.
    """

    def __init__(self, config: FaultConfig, seed: int) -> None:
        self.config = config
        self._rng = random.Random(f"faults/{seed}")
        self._thresholds: list[tuple[float, str]] = []
        acc = 0.0
        for name, rate in config.rates().items():
            if rate > 0:
                acc += rate
                self._thresholds.append((acc, name))
        self._held: dict[str, Message] = {}
        self._silent_until: dict[str, datetime] = {}
        self._storms = 0
        self.counts: Counter[str] = Counter()
        self.dead_letters: Counter[str] = Counter()

    def apply(self, out: Outgoing) -> list[Message]:
        """The message(s) to publish now for ``out`` (possibly none, possibly a held one too)."""
        until = self._silent_until.get(out.device_id)
        if until is not None:
            if out.t < until:
                self.counts["suppressed"] += 1
                return []
            del self._silent_until[out.device_id]
        fault = self._draw()
        if fault == "out_of_order" and out.device_id in self._held:
            fault = None  # this message is the later one the held message waits for
        payload = orjson.dumps(out.doc)
        readings = len(out.doc["metrics"])
        good = Message(out.topic, payload, out.device_id, readings)
        if fault is None:
            return self._with_held(out.device_id, [good])
        if fault != "out_of_order":  # counted when it actually goes out behind a later one
            self.counts[fault] += 1
        if fault == "silence":
            self._silent_until[out.device_id] = out.t + timedelta(seconds=self.config.silence_s)
            self.counts["suppressed"] += 1
            return self._flush_device(out.device_id)
        if fault == "reconnect_storm":
            self._storms += 1
            return self._with_held(out.device_id, [good])
        if fault == "duplicate":
            again = Message(out.topic, payload, out.device_id, 0, fault="duplicate")
            return self._with_held(out.device_id, [good, again])
        if fault == "out_of_order":
            # Sent after the device's next message, so the IOC sees its timestamps go backwards.
            self._held[out.device_id] = Message(
                out.topic, payload, out.device_id, readings, fault="out_of_order"
            )
            return []
        bad = Message(
            out.topic,
            self._break(fault, out.doc, payload),
            out.device_id,
            0,
            dead_letter=_REASON[fault],
            fault=fault,
        )
        self.dead_letters[_REASON[fault]] += 1
        return self._with_held(out.device_id, [bad])

    def flush(self, device_id: str | None = None) -> list[Message]:
        """Held (out-of-order) messages, of one device or all: call before going quiet.

        A flushed message had no later one to follow, so it is not counted as out of order.
        """
        if device_id is not None:
            return self._flush_device(device_id)
        held = list(self._held.values())
        self._held.clear()
        return held

    def take_storms(self) -> int:
        """Reconnect storms requested since the last call."""
        n, self._storms = self._storms, 0
        return n

    def _draw(self) -> str | None:
        if not self._thresholds:
            return None
        r = self._rng.random()
        for threshold, name in self._thresholds:
            if r < threshold:
                return name
        return None

    def _with_held(self, device_id: str, messages: list[Message]) -> list[Message]:
        held = self._held.pop(device_id, None)
        if held is None:
            return messages
        self.counts["out_of_order"] += 1
        return [*messages, held]

    def _flush_device(self, device_id: str) -> list[Message]:
        held = self._held.pop(device_id, None)
        return [] if held is None else [held]

    def _break(self, fault: str, doc: Mapping[str, Any], payload: bytes) -> bytes:
        if fault == "malformed":
            # Cut inside the metrics object: the prefix still holds ts and seq, so every broken
            # payload is distinct (the IOC folds identical dead letters into one row).
            return payload[: len(payload) - self._rng.randint(2, 6)]
        if fault == "wrong_type":
            metrics = dict(doc["metrics"])
            name = self._rng.choice(sorted(metrics))
            metrics[name] = str(metrics[name])  # what a firmware with a printf bug sends
            return orjson.dumps({**doc, "metrics": metrics})
        if fault == "clock_skew":
            ts = doc["ts"]
            skew = timedelta(seconds=self.config.skew_s)
            if isinstance(ts, str):
                moved: str | int = (datetime.fromisoformat(ts) + skew).isoformat(
                    timespec="milliseconds"
                )
            else:
                moved = int(ts + skew.total_seconds() * 1000)
            return orjson.dumps({**doc, "ts": moved})
        # oversize: valid JSON, just far too large (a firmware dumping its log buffer).
        pad = "x" * self.config.oversize_bytes
        return orjson.dumps({**doc, "debug": pad})
