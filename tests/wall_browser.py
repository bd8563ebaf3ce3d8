"""Debian's Chromium for the wall's browser tests: started once per test module, each test
connects to it over the DevTools protocol (a launch costs seconds; a connection, milliseconds).

``playwright install`` cannot download a browser on the closed IOC network, so the tests drive
/usr/bin/chromium (installed by scripts/bootstrap). Also the screenshot comparison: a page against
a reviewed reference image, with a tolerance (fonts and antialiasing are not promised to be
identical from one Chromium build to the next, and live values are masked).
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
needs_chromium = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="needs Debian's chromium at /usr/bin/chromium (apt-get install chromium)",
)
# Without these, Chromium phones Google hosts the closed network refuses, and waits on them.
ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--hide-scrollbars", "--font-render-hinting=none",
]  # fmt: skip
REFERENCES = Path(__file__).resolve().parent / "wall_reference"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
LAUNCH_S = 60  # hang guard while Chromium starts


@contextlib.contextmanager
def chromium_process() -> Iterator[str]:
    """Chromium listening for DevTools on a free port; yields its websocket endpoint."""
    with tempfile.TemporaryDirectory(prefix="ioc-chromium-") as profile:
        proc = subprocess.Popen(
            [str(CHROMIUM), *ARGS, "--remote-debugging-port=0", f"--user-data-dir={profile}",
             "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert proc.stderr is not None
            for line in proc.stderr:  # "DevTools listening on ws://127.0.0.1:PORT/devtools/…"
                found = re.search(r"DevTools listening on (ws://\S+)", line)
                if found:
                    break
            else:
                raise RuntimeError(f"chromium exited with {proc.wait(LAUNCH_S)} before listening")
            yield found.group(1)
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture(scope="module")
def chromium_endpoint() -> Iterator[str]:
    with chromium_process() as endpoint:
        yield endpoint


@pytest.fixture
async def browser(chromium_endpoint: str) -> AsyncIterator[Any]:
    """The module's Chromium; ``new_page`` opens each page in a context of its own (no cookies
    or storage shared between pages or tests)."""
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        b = await pw.chromium.connect_over_cdp(chromium_endpoint)
        try:
            yield b
        finally:
            for context in b.contexts[1:]:  # the first is Chromium's default one
                await context.close()
            await b.close()  # disconnects; the module's Chromium keeps running


def image_difference(shot: Path, reference: Path) -> float:
    """The share of pixels that differ noticeably (any channel by more than 48 of 255), both
    images first halved in size so a glyph's antialiasing does not count as a change."""
    import numpy as np
    from PIL import Image

    a, b = (Image.open(p).convert("RGB") for p in (shot, reference))
    if a.size != b.size:
        return 1.0
    half = (a.width // 2, a.height // 2)
    x = np.asarray(a.resize(half, Image.Resampling.BOX), dtype=np.int16)
    y = np.asarray(b.resize(half, Image.Resampling.BOX), dtype=np.int16)
    return float((np.abs(x - y).max(axis=2) > 48).mean())
