"""What every long-running command does: stop in order on a signal, expose /metrics."""

from __future__ import annotations

import asyncio
import contextlib
import gc
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


# The cyclic collector's first-generation threshold for the services (CPython's default: 700
# allocations). Ingest allocates a few container objects per message (the record, its metric
# pairs, the delivery) and holds up to IOC_INGEST_QUEUE_CAPACITY messages' worth alive, so at the
# default the collector ran ~1,900 times in a 100,000-message drain and took a quarter of the
# process's CPU; at 10,000 it ran ~110 times (docs/benchmarks.md, "The collector"). Garbage
# cycles are rare here (records are tuples of atomic values), and what does wait is bounded by
# the threshold.
GC_THRESHOLDS = (10_000, 10, 10)


def tune_collector() -> None:
    """Call once the service is up: what startup built (modules, settings, rules, the registry)
    moves to the permanent generation, so no full collection walks it again, and the first
    generation is collected every :data:`GC_THRESHOLDS` allocations instead of every 700."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


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
