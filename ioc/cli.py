"""The ``ioc`` command: demo, serve, ingest, simulate, db migrate."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator

from pydantic import SecretStr, ValidationError

from ioc.settings import Settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ioc", description="Hậu Giang IOC backend")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="everything embedded: database, broker, simulators, API")
    demo.add_argument("--no-simulators", action="store_true", help="do not publish demo telemetry")
    demo.add_argument("--interval", type=float, default=5.0, help="seconds between demo readings")
    demo.add_argument(
        "--duration", type=float, default=None, help="stop after this many seconds (smoke runs)"
    )
    sub.add_parser("serve", help="production: external database and broker (IOC_* settings)")
    sub.add_parser("ingest", help="MQTT ingest worker only (no HTTP); run several for scale-out")
    sim = sub.add_parser("simulate", help="publish telemetry for the site's devices")
    sim.add_argument("--interval", type=float, default=5.0)
    sim.add_argument("--duration", type=float, default=None)
    sim.add_argument("--seed", type=int, default=7)
    db = sub.add_parser("db", help="database administration")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    db_sub.add_parser("migrate", help="apply pending migrations and report the storage flavour")
    args = parser.parse_args(argv)

    try:
        settings = Settings()
    except ValidationError as exc:
        print(f"ioc: invalid configuration:\n{exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        if args.command == "demo":
            return _demo(settings, args)
        if args.command == "serve":
            _require(settings, "database_url", "mqtt_url", "admin_token")
            return asyncio.run(_serve(settings, with_http=True))
        if args.command == "ingest":
            _require(settings, "database_url", "mqtt_url")
            return asyncio.run(_serve(settings, with_http=False))
        if args.command == "simulate":
            _require(settings, "mqtt_url")
            return _simulate(settings, args.interval, args.duration, args.seed)
        if args.command == "db":
            _require(settings, "database_url")
            from ioc.storage import migrate

            assert settings.database_url is not None
            print(f"storage flavour: {migrate(settings.database_url)}")
            return 0
    except _ConfigMissing as exc:
        print(f"ioc: {exc}", file=sys.stderr)
        return 2
    return 0


class _ConfigMissing(Exception):
    pass


def _require(settings: Settings, *names: str) -> None:
    missing = [f"IOC_{n.upper()}" for n in names if getattr(settings, n) is None]
    if missing:
        raise _ConfigMissing(f"set {', '.join(missing)} (or use `ioc demo` for embedded services)")


async def _wait_for_stop_signal(duration: float | None) -> None:
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


async def _serve(settings: Settings, *, with_http: bool, duration: float | None = None) -> int:
    from ioc.app import run_service

    async with run_service(settings, with_http=with_http) as runtime:
        if runtime.http_port is not None:
            logging.getLogger("ioc").info(
                "API on http://%s:%d", settings.http_host, runtime.http_port
            )
        await _wait_for_stop_signal(duration)
    return 0


@contextlib.contextmanager
def embedded_services(settings: Settings) -> Iterator[Settings]:
    """Start an embedded PostgreSQL and/or broker for whichever URL is unset."""
    from ioc.embedded import EmbeddedMosquitto, EmbeddedPostgres

    with contextlib.ExitStack() as stack:
        updates: dict[str, object] = {}
        data_dir = settings.data_dir.resolve()
        if settings.database_url is None:
            pg = stack.enter_context(EmbeddedPostgres(data_dir / "postgres"))
            updates["database_url"] = pg.url
        if settings.mqtt_url is None:
            broker = stack.enter_context(EmbeddedMosquitto(data_dir / "mosquitto"))
            updates["mqtt_url"] = broker.url
        yield settings.model_copy(update=updates)


def _demo(settings: Settings, args: argparse.Namespace) -> int:
    import secrets

    # SIGTERM before the event loop runs (while the embedded servers start) must unwind too.
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    if settings.admin_token is None:
        settings = settings.model_copy(update={"admin_token": SecretStr(secrets.token_urlsafe(18))})
    try:
        with embedded_services(settings) as settings:
            return asyncio.run(_demo_async(settings, args))
    except KeyboardInterrupt:
        return 0


def _raise_keyboard_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


async def _demo_async(settings: Settings, args: argparse.Namespace) -> int:
    from ioc.app import run_service
    from simulators.publisher import Publisher

    async with run_service(settings) as runtime:
        url = f"http://{settings.http_host}:{runtime.http_port}"
        token = runtime.admin_token
        publisher = None
        if not args.no_simulators:
            publisher = Publisher(
                settings.mqtt,
                runtime.site.devices,
                topic_prefix=settings.mqtt_topic_prefix,
                interval_s=args.interval,
                client_id="ioc-demo-publisher",
            )
            publisher.start()
            thread = threading.Thread(target=publisher.run, name="demo-publisher", daemon=True)
            thread.start()
        example = runtime.site.devices[0].id if runtime.site.devices else "vt-flood-01"
        print(
            "\n".join(
                [
                    "",
                    "Hậu Giang IOC demo is running.",
                    f"  API:          {url}   (OpenAPI: {url}/docs)",
                    f"  Admin token:  {token}",
                    f"  Database:     {settings.database_url}",
                    f"  MQTT broker:  {settings.mqtt_url}"
                    f"   (topics {settings.mqtt_topic_prefix}/...)",
                    "  Try:",
                    f"    curl -H 'Authorization: Bearer {token}' {url}/api/v1/devices/{example}",
                    f"    curl -H 'Authorization: Bearer {token}' "
                    f"'{url}/api/v1/devices/{example}/readings?metric=water_level_m&from=2026-01-01T00:00:00%2B07:00'",
                    "  Stop with Ctrl+C.",
                    "",
                ]
            ),
            flush=True,
        )
        try:
            await _wait_for_stop_signal(args.duration)
        finally:
            if publisher is not None:
                publisher.stop()
    return 0


def _simulate(settings: Settings, interval: float, duration: float | None, seed: int) -> int:
    from ioc.site import load_site
    from simulators.publisher import Publisher

    site = load_site(settings.site_path())
    publisher = Publisher(
        settings.mqtt,
        site.devices,
        topic_prefix=settings.mqtt_topic_prefix,
        interval_s=interval,
        seed=seed,
        client_id=f"ioc-simulate-{os.getpid()}",
    )
    publisher.start()
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        publisher.run(duration)
    except KeyboardInterrupt:
        pass
    finally:
        publisher.stop()
    print(f"published {publisher.published} readings from {len(site.devices)} devices")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
