"""Smoke run of the embedded demo: start `ioc demo`, read telemetry back over REST, stop it,
and check that no embedded server outlived it. Run by .ci/run; exits non-zero on any failure."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

TOKEN = "smoke-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str) -> object:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.loads(r.read())


def leftovers(data_dir: Path) -> list[str]:
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if str(data_dir) in line and "smoke_demo" not in line]


def main() -> int:
    data_dir = Path(tempfile.mkdtemp(prefix="ioc-smoke-"))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("IOC_")}
    env |= {"IOC_DATA_DIR": str(data_dir), "IOC_HTTP_PORT": str(port), "IOC_ADMIN_TOKEN": TOKEN}
    ioc = Path(sys.executable).with_name("ioc")
    proc = subprocess.Popen([str(ioc), "demo"], env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        points: list[object] = []
        while time.monotonic() < deadline and not points:
            if proc.poll() is not None:
                print(f"smoke: demo exited early with {proc.returncode}", file=sys.stderr)
                return 1
            try:
                devices = get(f"{base}/api/v1/devices?kind=cabinet")
                assert isinstance(devices, list) and devices
                dev = devices[0]["id"]
                frm = "2000-01-01T00:00:00%2B07:00"
                body = get(f"{base}/api/v1/devices/{dev}/readings?metric=power_w&from={frm}")
                assert isinstance(body, dict)
                points = body["points"]
            except (OSError, AssertionError, KeyError):
                time.sleep(1)
        if not points:
            print("smoke: no readings came back within 180 s", file=sys.stderr)
            return 1
        print(f"smoke: {len(points)} readings of {dev} came back over REST")
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
    if code != 0:
        print(f"smoke: demo exited with {code} after SIGTERM", file=sys.stderr)
        return 1
    deadline = time.monotonic() + 30
    while leftovers(data_dir) and time.monotonic() < deadline:
        time.sleep(0.5)
    if left := leftovers(data_dir):
        print("smoke: embedded servers left running:\n" + "\n".join(left), file=sys.stderr)
        return 1
    print("smoke: demo stopped cleanly, no embedded server left behind")
    return 0


if __name__ == "__main__":
    sys.exit(main())
