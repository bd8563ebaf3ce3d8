"""What is running: ``ioc_build_info{version, commit} 1`` for Prometheus (the usual build-info
gauge: join it on ``instance`` to see which build a process runs, alert on a mixed fleet).

The commit comes from ``IOC_BUILD_COMMIT`` (the image bakes it in from its build argument), else
from git when the code runs from a checkout, else ``unknown``.
"""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

from prometheus_client import Gauge

import ioc

BUILD_INFO = Gauge(
    "ioc_build_info",
    "1, labelled with the version and git commit of the running code",
    ["version", "commit"],
)
UNKNOWN = "unknown"


@functools.cache
def checkout_commit() -> str | None:
    """HEAD of the git checkout this code runs from, or None (installed wheel, no git)."""
    root = Path(ioc.__file__).resolve().parents[1]
    if not (root / ".git").exists():
        return None
    try:
        done = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=5, check=False,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    commit = done.stdout.strip()
    return commit if done.returncode == 0 and commit else None


def publish(commit: str | None) -> None:
    """Set the gauge (idempotent); ``commit`` is the ``IOC_BUILD_COMMIT`` setting."""
    BUILD_INFO.clear()
    BUILD_INFO.labels(ioc.__version__, commit or checkout_commit() or UNKNOWN).set(1)
