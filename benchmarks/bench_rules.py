"""Rule engine throughput: 500 rules over 10,000 devices, readings evaluated per second.

    .venv/bin/python benchmarks/bench_rules.py [--devices 10000] [--rules 500] [--messages 200000]

Pure CPU, no database or broker: the engine is what the ingest commit listener runs per batch.
Beside it, in the same run, the machine's own limit for the same work: a bare Python loop that
does, per message and matching rule, only the unavoidable part (dictionary look-ups, one float
comparison) — what any Python rule engine must at least spend. Prints a table and writes
benchmarks/results/rules-<time>.json.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from report import save  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

from ioc.core.devices import Device  # noqa: E402
from ioc.rules.engine import Engine  # noqa: E402
from ioc.rules.language import check_rules  # noqa: E402

CITIES = {"vi-thanh": [f"vt-w{i}" for i in range(9)], "nga-bay": [f"nb-w{i}" for i in range(6)]}
KINDS = {
    # kind: (share of devices, [(metric, typical value)])
    "lighting": (0.80, [("power_w", 150.0), ("voltage_v", 225.0), ("dim_level_pct", 100.0)]),
    "traffic": (0.10, [("speed_kmh", 35.0), ("occupancy_pct", 20.0)]),
    "flood": (0.05, [("water_level_m", 0.4)]),
    "cabinet": (0.05, [("voltage_l1_v", 225.0), ("power_w", 20000.0)]),
}


def make_devices(n: int, rng: random.Random) -> list[Device]:
    out = []
    for i in range(n):
        r = rng.random()
        acc = 0.0
        kind = "lighting"
        for k, (share, _) in KINDS.items():
            acc += share
            if r < acc:
                kind = k
                break
        city = "vi-thanh" if i % 3 else "nga-bay"
        ward = rng.choice(CITIES[city])
        attrs = {
            "nominal_w": 150, "bd1": 0.55, "bd2": 0.65, "bd3": 0.75, "free_flow_kmh": 40,
            "cabinet": f"cab-{i // 30}", "role": "detector",
        }  # fmt: skip
        out.append(Device(f"d{i:05d}", kind, city, ward, f"Device {i}", 9.78, 105.47, attrs))
    return out


def make_rules(n: int, rng: random.Random) -> str:
    """n rules spread over kinds, metrics, cities and wards (as a real province would have:
    per-ward thresholds, a few city-wide rules), in the rule language."""
    lines = ["rules:"]
    templates = [
        ("threshold", "lighting", "power_w", '{op: "<", threshold: device.nominal_w * 0.2}'),
        ("threshold", "lighting", "voltage_v", '{op: ">", threshold: 242, clear: 237}'),
        ("aggregate", "traffic", "speed_kmh", '{op: "<", threshold: 0.5, clear: 0.6}'),
        (
            "threshold",
            "flood",
            "water_level_m",
            '{op: ">=", threshold: device.bd3, clear: device.bd3 - 0.05}',
        ),
        ("rate", "flood", "water_level_m", '{op: ">", threshold: 0.3, clear: 0.2}'),
        ("threshold", "cabinet", "voltage_l1_v", '{op: "<", threshold: 198, clear: 203}'),
    ]
    wards = [(c, w) for c, ws in CITIES.items() for w in ws]
    for i in range(n):
        rtype, kind, metric, when = templates[i % len(templates)]
        city, ward = wards[(i // len(templates)) % len(wards)]
        extra = ""
        if rtype == "aggregate":
            extra = (
                "\n    value: {divide_by: device.free_flow_kmh}\n    function: mean"
                "\n    window: 10m"
            )
        if rtype == "rate":
            extra = "\n    window: 30m"
        lines.append(
            f"""  - id: r{i:04d}
    type: {rtype}
    select: {{kind: {kind}, metric: {metric}, city: {city}, ward: {ward}}}
    when: {when}{extra}
    for: 5m
    labels: {{severity: warning}}
    annotations: {{summary_vi: "{{device.name}} {{value:.2f}}", summary_en: "{{value:.2f}}"}}"""
        )
    return "\n".join(lines) + "\n"


def make_messages(
    devices: list[Device], n: int, rng: random.Random, excursion: float
) -> list[tuple[str, float, tuple[tuple[str, float], ...]]]:
    """Values within ±5 % of typical; with probability ``excursion`` far off (×0.1 or ×1.5),
    which crosses the thresholds and makes transitions."""
    t0 = datetime(2026, 11, 20, 20, 0, tzinfo=UTC).timestamp()
    out = []
    for i in range(n):
        d = devices[i % len(devices)]
        metrics = tuple(
            (
                m,
                v
                * (rng.choice((0.1, 1.5)) if rng.random() < excursion else rng.uniform(0.95, 1.05)),
            )
            for m, v in KINDS[d.kind][1]
        )
        out.append((d.id, t0 + i * 0.01, metrics))
    return out


def bare_loop(
    index: dict[tuple[str, str], list[float]],
    kinds: dict[str, str],
    messages: list[tuple[str, float, tuple[tuple[str, float], ...]]],
) -> tuple[float, int]:
    """The floor: per message and metric, find the rules and compare once each."""
    hits = 0
    started = time.perf_counter()
    for device_id, _t, metrics in messages:
        kind = kinds[device_id]
        for name, value in metrics:
            for limit in index.get((device_id, name), ()):
                if value > limit:
                    hits += 1
    _ = kind
    return time.perf_counter() - started, hits


def run_phase(
    ruleset: object,
    devices: list[Device],
    messages: list[tuple[str, float, tuple[tuple[str, float], ...]]],
) -> dict[str, object]:
    engine = Engine(ruleset, devices)  # type: ignore[arg-type]
    engine.advance(messages[0][1])
    # warm-up: the first message of each device builds its series (a one-off per device)
    warm = messages[: len(devices)]
    started = time.perf_counter()
    for device_id, t, metrics in warm:
        engine.observe_telemetry(device_id, t, metrics)
    warm_s = time.perf_counter() - started
    engine.drain()
    run = messages[len(devices) :]
    transitions = 0
    started = time.perf_counter()
    for i, (device_id, t, metrics) in enumerate(run):
        engine.observe_telemetry(device_id, t, metrics)
        if i % 500 == 0:  # as the service: a batch, then time passes
            engine.advance(t)
            transitions += len(engine.drain())
    engine_s = time.perf_counter() - started
    run_readings = sum(len(m[2]) for m in run)
    # the floor, over the same matching (device, metric) → rules
    index: dict[tuple[str, str], list[float]] = {}
    for device_id, per_device in engine._device_series.items():
        for metric, series in per_device.items():
            index[(device_id, metric)] = [s.threshold or 0.0 for s in series]
    kinds = {d.id: d.kind for d in devices}
    floor_s, _ = bare_loop(index, kinds, run)
    pairs = [len(v) for v in index.values()]
    return {
        "messages": len(run),
        "readings": run_readings,
        "series": sum(pairs),
        "rules_per_reading": round(sum(pairs) / max(1, len(pairs)), 2),
        "warmup_s": round(warm_s, 3),
        "engine_s": round(engine_s, 3),
        "engine_messages_per_s": round(len(run) / engine_s),
        "engine_readings_per_s": round(run_readings / engine_s),
        "floor_readings_per_s": round(run_readings / floor_s),
        "ratio_to_floor": round(floor_s / engine_s, 3),
        "transitions": transitions,
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--devices", type=int, default=10_000)
    ap.add_argument("--rules", type=int, default=500)
    ap.add_argument("--messages", type=int, default=200_000)
    args = ap.parse_args()
    rng = random.Random(7)
    devices = make_devices(args.devices, rng)
    ruleset, problems = check_rules([("bench.yaml", make_rules(args.rules, rng))])
    assert not problems, problems[:3]
    result: dict[str, object] = {
        "time": datetime.now(UTC).isoformat(),
        "devices": args.devices,
        "rules": len(ruleset.rules),
    }
    for phase, excursion in (("steady", 0.002), ("storm", 0.3)):
        messages = make_messages(devices, args.messages, rng, excursion)
        result[phase] = run_phase(ruleset, devices, messages)
    print(json.dumps(result, indent=2))
    print(f"written {save('rules', result)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
