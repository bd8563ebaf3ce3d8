"""WebSocket clients for benchmarks/bench_live.py, in their own process (their JSON parsing must not
share a GIL with the publisher or the service).

    python ws_clients.py WS_URL N SECONDS OUT.json

Each client subscribes to everything and records, for every alert frame that reports a probe
alert firing, the probe number (encoded in the value: 10 + k / 1000) and the receive time.
Readings frames are skipped without parsing (a substring test), as a wall screen that only
counts alerts would do.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import websockets


async def client(url: str, idx: int, until: float, out: dict[str, object]) -> None:
    got: dict[int, float] = {}
    frames = resyncs = 0
    async with websockets.connect(url, max_size=None, ping_interval=None) as ws:
        while time.time() < until:
            try:
                raw = await asyncio.wait_for(ws.recv(), timeout=max(0.1, until - time.time()))
            except TimeoutError:
                break
            now = time.time()
            frames += 1
            text = raw if isinstance(raw, str) else raw.decode()
            if '"resync"' in text[:40]:
                resyncs += 1
                continue
            if '"alert"' not in text[:40]:
                continue
            frame = json.loads(text)
            data = frame.get("data", {})
            if data.get("state") == "firing" and str(data.get("rule")) == "probe":
                k = round((float(data["value"]) - 10.0) * 1000)
                got.setdefault(k, now)
    out[str(idx)] = {"received": got, "frames": frames, "resyncs": resyncs}


async def run(url: str, n: int, seconds: float) -> dict[str, object]:
    until = time.time() + seconds
    out: dict[str, object] = {}
    await asyncio.gather(*(client(url, i, until, out) for i in range(n)))
    return out


if __name__ == "__main__":
    result = asyncio.run(run(sys.argv[1], int(sys.argv[2]), float(sys.argv[3])))
    with open(sys.argv[4], "w") as f:
        json.dump(result, f)
