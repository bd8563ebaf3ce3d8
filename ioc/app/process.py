"""What every long-running command does: stop in order on a signal, expose /metrics."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from ioc.core.settings import Settings


async def wait_for_stop_signal(duration: float | None) -> None:
    """Return on SIGINT/SIGTERM (or after ``duration``), so every block unwinds in order."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    assert main is not None

    def first_signal() -> None:
        stop.set()
        # A second signal means "now": cancel the orderly drain (e.g. stuck on a dead database;
        # nothing is lost, un-acknowledged messages stay with the broker).
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, main.cancel)

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, first_signal)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), duration)


def start_metrics_listener(settings: Settings) -> None:
    """Prometheus /metrics without auth on an internal port (``IOC_METRICS_PORT``), for every
    long-running role (the API's own /metrics needs the admin token); a daemon thread of
    prometheus_client, gone with the process."""
    if settings.metrics_port is None:
        return
    from prometheus_client import start_http_server

    start_http_server(settings.metrics_port, addr=settings.metrics_host)
    logging.getLogger("ioc").info(
        "metrics on http://%s:%d/metrics", settings.metrics_host, settings.metrics_port
    )
