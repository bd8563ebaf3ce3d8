"""The ``ioc`` command: demo, serve, ingest, simulate, rules check/backtest, db migrate/backup/
restore, tokens, devices; ``ioc --version``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

import psycopg
from pydantic import SecretStr, ValidationError

from ioc.app.process import start_metrics_listener, tune_collector, wait_for_stop_signal
from ioc.core.settings import DISPLAY_TIMEZONE, Settings
from ioc.storage.migrations import FlavourError

if TYPE_CHECKING:
    from ioc.app.runtime import Runtime
    from ioc.core.site import Site
    from ioc.provision.lifecycle import Registered
    from ioc.simulators.scenario import Scenario


def main(argv: list[str] | None = None) -> int:
    from ioc import __version__

    parser = argparse.ArgumentParser(prog="ioc", description="Hậu Giang IOC backend")
    parser.add_argument("--version", action="version", version=f"ioc {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="everything embedded: database, broker, simulators, API")
    demo.add_argument("--no-simulators", action="store_true", help="do not run the simulators")
    demo.add_argument(
        "--scenario",
        default="vi-thanh-spring-tide",
        help="scenario replayed first, on its time of day yesterday or today, accelerated; the "
        "normal day then goes on in real time (scenarios: `ioc simulate --help`)",
    )
    demo.add_argument(
        "--speed", type=float, default=180.0, help="acceleration of the replayed scenario"
    )
    demo.add_argument(
        "--duration", type=float, default=None, help="stop after this many seconds (smoke runs)"
    )
    demo.add_argument(
        "--report-factor",
        type=float,
        default=None,
        help="multiply the simulated citizen reports' real volume (~20 a month a city) so the "
        "demo shows some within minutes (default: demo_factor in ioc/simulators/reports.yaml, 30)",
    )
    sub.add_parser("serve", help="production: external database and broker (IOC_* settings)")
    sub.add_parser("ingest", help="MQTT ingest worker only (no HTTP); run several for scale-out")
    sim = sub.add_parser(
        "simulate", help="run a scenario of simulated field devices against IOC_MQTT_URL"
    )
    from ioc.simulators.runner import add_simulate_arguments

    add_simulate_arguments(sim)
    rules = sub.add_parser("rules", help="rule files: check, backtest")
    from ioc.app.rules_cli import add_rules_arguments, run_rules_command

    add_rules_arguments(rules)
    db = sub.add_parser("db", help="database administration")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    db_sub.add_parser("migrate", help="apply pending migrations and report the storage flavour")
    backup = db_sub.add_parser(
        "backup", help="dump the database (pg_dump, custom format) to an archive file"
    )
    backup.add_argument(
        "file",
        nargs="?",
        type=Path,
        help="archive to write (default ioc-<UTC date and time>.dump here); never overwritten",
    )
    restore = db_sub.add_parser(
        "restore",
        help="restore an archive of `ioc db backup` into IOC_DATABASE_URL, which must be a new, "
        "empty database (TimescaleDB: timescaledb_pre_restore()/post_restore() around it)",
    )
    restore.add_argument("file", type=Path, help="archive written by `ioc db backup`")
    tok = sub.add_parser("tokens", help="API tokens: create, list, revoke")
    tok_sub = tok.add_subparsers(dest="tokens_command", required=True)
    create = tok_sub.add_parser("create", help="issue a token (printed once; stored hashed)")
    create.add_argument(
        "--role",
        required=True,
        help="admin, operator, viewer, open311, device-provisioning or agency:{code}",
    )
    create.add_argument("--name", required=True, help="who holds it (person, system, app)")
    tok_sub.add_parser("list", help="tokens with role, name, created, revoked")
    revoke = tok_sub.add_parser("revoke", help="revoke a token by id")
    revoke.add_argument("id", type=int)
    dev = sub.add_parser(
        "devices", help="field devices: import, decommission, site diff, MQTT credentials and ACL"
    )
    dev_sub = dev.add_subparsers(dest="devices_command", required=True)
    prov = dev_sub.add_parser(
        "provision",
        help="write Mosquitto's password and ACL files and a credentials file (0600) for every "
        "device of the site and the service accounts; re-runs keep existing passwords",
    )
    prov.add_argument(
        "--passwords", type=Path, help="password file (default IOC_DATA_DIR/mosquitto/passwd)"
    )
    prov.add_argument("--acl", type=Path, help="ACL file (default IOC_DATA_DIR/mosquitto/acl)")
    prov.add_argument(
        "--credentials",
        type=Path,
        help="plain passwords for the field team (default IOC_DATA_DIR/mosquitto/credentials.csv)",
    )
    imp = dev_sub.add_parser(
        "import",
        help="register or update devices from a CSV or JSON file (IOC_DATABASE_URL): a result "
        "per row, the accepted rows in one transaction; exit 1 when a row was refused",
    )
    imp.add_argument("file", type=Path, help="a .csv or .json file (docs/devices.md)")
    imp.add_argument("--dry-run", action="store_true", help="check and report, write nothing")
    imp.add_argument("--format", choices=("csv", "json"), help="default: from the file name")
    dec = dev_sub.add_parser(
        "decommission",
        help="take a device out of service: readings kept, ingest refuses its messages, the "
        "next `ioc devices provision` revokes its MQTT account",
    )
    dec.add_argument("id")
    dec.add_argument("--reason", help="why (kept with the device)")
    dev_sub.add_parser(
        "diff",
        help="how the site file and the device registry differ (what the next start resets)",
    )
    args = parser.parse_args(argv)

    try:
        settings = Settings()
    except ValidationError as exc:
        print(f"ioc: invalid configuration:\n{exc}", file=sys.stderr)
        return 2
    from ioc.core.logs import configure

    configure(settings.log_level, settings.log_format)
    try:
        if args.command == "demo":
            return _demo(settings, args)
        if args.command == "serve":
            _require(settings, "database_url", "mqtt_url", "admin_token")
            weak = settings.weak_admin_token()
            if weak is not None:
                print(f"ioc serve: refusing to start: {weak}", file=sys.stderr)
                return 2
            return asyncio.run(_serve(settings, "serve"))
        if args.command == "ingest":
            _require(settings, "database_url", "mqtt_url")
            return asyncio.run(_serve(settings, "ingest"))
        if args.command == "simulate":
            _require(settings, "mqtt_url")
            return _simulate(settings, args)
        if args.command == "rules":
            return run_rules_command(settings, args)
        if args.command == "db":
            _require(settings, "database_url")
            return _db(settings, args)
        if args.command == "tokens":
            _require(settings, "database_url")
            return asyncio.run(_tokens(settings, args))
        if args.command == "devices":
            if args.devices_command == "provision":
                return _provision(settings, args)
            _require(settings, "database_url")
            return _device_lifecycle(settings, args)
    except _ConfigMissing as exc:
        print(f"ioc: {exc}", file=sys.stderr)
        return 2
    except FlavourError as exc:  # a server state the operator must settle: say what to set
        print(f"ioc: {exc}", file=sys.stderr)
        return 2
    return 0


def _db(settings: Settings, args: argparse.Namespace) -> int:
    from ioc.storage import backup, migrate

    assert settings.database_url is not None
    url = settings.database_url
    if args.db_command == "migrate":
        print(f"storage flavour: {migrate(url, choice=settings.storage_flavour)}")
        return 0
    try:
        if args.db_command == "backup":
            path = args.file or Path(f"ioc-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.dump")
            backup.dump(url, path)
            print(f"backup written: {path} ({path.stat().st_size:,} bytes)")
            return 0
        flavour = backup.restore(url, args.file)
    except backup.BackupError as exc:
        print(f"ioc db {args.db_command}: {exc}", file=sys.stderr)
        return 1
    print(f"restored {args.file} ({flavour} flavour); start the service on this database")
    return 0


async def _tokens(settings: Settings, args: argparse.Namespace) -> int:
    import psycopg

    from ioc.storage import migrate
    from ioc.storage import tokens as token_store

    assert settings.database_url is not None
    await asyncio.to_thread(migrate, settings.database_url, choice=settings.storage_flavour)
    async with await psycopg.AsyncConnection.connect(settings.database_url) as conn:
        if args.tokens_command == "create":
            try:
                token_store.check_role(args.role)
            except ValueError as exc:
                print(f"ioc: {exc}", file=sys.stderr)
                return 2
            record, secret = await token_store.create(conn, name=args.name, role=args.role)
            await conn.commit()
            print(f"token {record.id} ({record.role}, {record.name}) — shown once, keep it:")
            print(secret)
        elif args.tokens_command == "list":
            for t in await token_store.list_all(conn):
                state = f"revoked {t.revoked_at:%Y-%m-%d %H:%M}" if t.revoked_at else "active"
                print(f"{t.id:>5}  {t.role:<28} {t.name:<30} {t.created_at:%Y-%m-%d}  {state}")
        else:
            if not await token_store.revoke(conn, args.id):
                print(f"ioc: no active token {args.id}", file=sys.stderr)
                return 1
            await conn.commit()
            print(f"token {args.id} revoked")
    return 0


async def _registry(url: str) -> dict[str, Registered]:
    from ioc.provision.lifecycle import registry

    async with await psycopg.AsyncConnection.connect(url) as conn:
        return await registry(conn)


def _provision(settings: Settings, args: argparse.Namespace) -> int:
    from ioc.core.site import SiteError, load_site
    from ioc.provision.accounts import provision

    base = settings.data_dir / "mosquitto"
    try:
        site = load_site(settings.site_path())
        devices = None
        decommissioned: set[str] = set()
        if settings.database_url is not None:
            # the registry: the site file's devices and those registered through the API or
            # an import; decommissioned devices get no account (a re-run revokes theirs)
            found = asyncio.run(_registry(settings.database_url))
            devices = [r.device for r in found.values()]
            decommissioned = {i for i, r in found.items() if r.decommissioned_at is not None}
        result = provision(
            site,
            devices=devices,
            decommissioned=decommissioned,
            passwords=args.passwords or base / "passwd",
            acl=args.acl or base / "acl",
            credentials=args.credentials or base / "credentials.csv",
            prefix=settings.mqtt_topic_prefix,
            dispatch_prefix=settings.dispatch_mqtt_prefix,
        )
    except (SiteError, ValueError, OSError) as exc:
        print(f"ioc devices provision: {exc}", file=sys.stderr)
        return 2
    print(
        f"{result.accounts} MQTT accounts ({len(result.added)} new"
        + (
            f", {len(result.removed)} removed: {', '.join(result.removed)}"
            if result.removed
            else ""
        )
        + ")"
    )
    if result.decommissioned:
        print(f"  no account (decommissioned): {', '.join(result.decommissioned)}")
    print(f"  password file: {result.passwords}")
    print(f"  ACL file:      {result.acl}")
    print(f"  credentials:   {result.credentials} (0600; hand to the field team, keep secret)")
    print("  reload a running broker: kill -HUP <pid> (docker compose kill -s HUP mosquitto)")
    return 0


def _device_lifecycle(settings: Settings, args: argparse.Namespace) -> int:
    """``ioc devices import | decommission | diff`` against the registry (docs/devices.md)."""
    from ioc.core.site import SiteError, load_site
    from ioc.provision import lifecycle
    from ioc.storage import migrate

    assert settings.database_url is not None
    url = settings.database_url
    try:
        site = load_site(settings.site_path())
    except SiteError as exc:
        print(f"ioc devices {args.devices_command}: {exc}", file=sys.stderr)
        return 2
    if args.devices_command == "import":
        try:
            fmt = args.format or lifecycle.format_of(args.file.name)
            rows = lifecycle.parse_rows(args.file.read_bytes(), fmt)
        except (lifecycle.ImportFileError, OSError, UnicodeDecodeError) as exc:
            print(f"ioc devices import: {args.file}: {exc}", file=sys.stderr)
            return 2
    migrate(url)

    async def run() -> int:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            if args.devices_command == "import":
                report = await lifecycle.import_devices(conn, site, rows, dry_run=args.dry_run)
                for r in report.rows:
                    why = f"  {r.field}: {r.reason}" if r.result == "refused" else ""
                    print(f"row {r.row:>5}  {r.id or '-':<32} {r.result}{why}")
                print(("dry run, nothing written: " if args.dry_run else "") + report.summary())
                return 1 if report.count("refused") else 0
            if args.devices_command == "decommission":
                try:
                    state = await lifecycle.decommission(conn, args.id, args.reason)
                except lifecycle.DeviceNotFound as exc:
                    print(f"ioc devices decommission: {exc}", file=sys.stderr)
                    return 1
                assert state.decommissioned_at is not None
                print(
                    f"{args.id} decommissioned at {state.decommissioned_at.isoformat()}; run "
                    "`ioc devices provision` and reload the broker to revoke its MQTT account"
                )
                return 0
            differences = lifecycle.diff(site.devices, await lifecycle.registry(conn))
            for d in differences:
                print(d)
            print(
                f"{len(differences)} difference(s) between {settings.site_path().name} and the "
                "registry; at start the site file wins for its devices, devices added by the "
                "API or an import are kept, decommissioned devices stay decommissioned"
            )
            return 0

    return asyncio.run(run())


class _ConfigMissing(Exception):
    pass


def _require(settings: Settings, *names: str) -> None:
    missing = [f"IOC_{n.upper()}" for n in names if getattr(settings, n) is None]
    if missing:
        raise _ConfigMissing(f"set {', '.join(missing)} (or use `ioc demo` for embedded services)")


async def _serve(settings: Settings, command: str, duration: float | None = None) -> int:
    from ioc.app.runtime import roles_of, run_service

    start_metrics_listener(settings)
    async with run_service(settings, roles_of(command, settings)) as runtime:
        tune_collector()
        if runtime.http_port is not None:
            logging.getLogger("ioc").info(
                "API on http://%s:%d", settings.http_host, runtime.http_port
            )
        await wait_for_stop_signal(duration)
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
    from ioc.app.runtime import run_service

    if not args.no_simulators:
        # The replay publishes a past evening faster than real time: rules keep time by the
        # readings (event time), not by the wall clock.
        settings = settings.model_copy(update={"rules_clock": "stream"})
    async with run_service(settings) as runtime, asyncio.TaskGroup() as tasks:
        tune_collector()
        url = f"http://{settings.http_host}:{runtime.http_port}"
        token = runtime.admin_token
        simulation = None
        if not args.no_simulators:
            simulation = tasks.create_task(
                _demo_simulation(
                    settings, runtime.site, args.scenario, args.speed, args.report_factor
                )
            )
            agencies = tasks.create_task(_demo_agencies(settings, runtime, url))
        example = next((d for d in runtime.site.devices if d.kind == "traffic"), None)
        example_id = example.id if example else "vt-flood-01"
        metric = "speed_kmh" if example else "water_level_m"
        today = datetime.now(UTC).astimezone(ZoneInfo(DISPLAY_TIMEZONE)).date().isoformat()
        print(
            "\n".join(
                [
                    "",
                    "Hậu Giang IOC demo is running.",
                    f"  Wall screen:  {url}/wall/#token={token}",
                    f"  API:          {url}   (OpenAPI: {url}/docs)",
                    f"  Admin token:  {token}",
                    f"  Database:     {settings.database_url}",
                    f"  MQTT broker:  {settings.mqtt_url}"
                    f"   (topics {settings.mqtt_topic_prefix}/...)",
                    f"  Simulators:   {len(runtime.site.devices)} devices; scenario "
                    f"{args.scenario!r} replayed at {args.speed:g}x, then a normal day in "
                    "real time. Alerts fire within about a minute:"
                    if simulation
                    else "  Simulators:   off",
                    f"    curl -H 'Authorization: Bearer {token}' "
                    f"'{url}/api/v1/alerts?state=firing'",
                    "  Devices report on their own interval (traffic and cabinets every minute,",
                    "  flood, rain and lamps every 5 minutes). Try:",
                    f"    curl -H 'Authorization: Bearer {token}' "
                    f"{url}/api/v1/devices/{example_id}",
                    f"    curl -H 'Authorization: Bearer {token}' "
                    f"'{url}/api/v1/devices/{example_id}/readings?metric={metric}"
                    f"&from={today}T00:00:00%2B07:00&bucket=5m'",
                    f"  Citizens' reports (simulated at {_demo_report_factor(args):g}x their real "
                    "volume of about 20 a month a city) and alerts open incidents, dispatched to "
                    "the simulated",
                    "  agencies, who accept and resolve them within minutes; citizens rate them:",
                    f"    curl -H 'Authorization: Bearer {token}' "
                    f"'{url}/api/v1/incidents?open=true'",
                    f"    curl -H 'Authorization: Bearer {token}' '{url}/api/v1/kpis'",
                    f"    curl '{url}/open311/v2/requests.json'",
                    "  Stop with Ctrl+C.",
                    "",
                ]
            ),
            flush=True,
        )
        await wait_for_stop_signal(args.duration)
        if simulation is not None:
            simulation.cancel()
            agencies.cancel()
    return 0


def _demo_report_factor(args: argparse.Namespace) -> float:
    from ioc.simulators.reports import DEMO_FACTOR

    return DEMO_FACTOR if args.report_factor is None else float(args.report_factor)


async def _demo_agencies(settings: Settings, runtime: Runtime, url: str) -> None:
    """Every agency of the site as a simulated outside system: it hears of its incidents on
    its dispatch topic and works them through the agency API with its own token; reporters
    rate the fixes through Open311. Tokens are issued here, as an administrator would."""
    from ioc.simulators.agencies import AgencyDesk
    from ioc.storage import tokens

    try:
        async with runtime.pool.connection() as conn:
            issued = {
                a.id: (await tokens.create(conn, name=f"demo {a.id}", role=f"agency:{a.id}"))[1]
                for a in runtime.site.agencies
            }
            _, citizen_app = await tokens.create(conn, name="demo citizen app", role="open311")
            _, duty = await tokens.create(conn, name="demo duty operator", role="operator")
        mqtt_address = settings.mqtt
        await AgencyDesk(
            mqtt_host=mqtt_address.host, mqtt_port=mqtt_address.port,
            mqtt_username=mqtt_address.username, mqtt_password=mqtt_address.password,
            api_url=url, tokens=issued, citizen_key=citizen_app, operator_token=duty,
            dispatch_prefix=settings.dispatch_mqtt_prefix,
        ).run()  # fmt: skip
    except Exception:
        logging.getLogger("ioc").exception("demo agencies stopped; the IOC keeps running")


async def _demo_simulation(
    settings: Settings, site: Site, scenario_name: str, speed: float, report_factor: float | None
) -> None:
    """The simulators as the demo's field devices: the scenario replayed at ``speed`` on its
    time of day in the recent past (ending about now), then a normal day in real time. Citizen
    reports are amplified (``report_factor``, default the data file's ``demo_factor``): at the
    real ~20 a month a city a demo would show one a day."""
    from ioc.simulators.clock import recent_start
    from ioc.simulators.flood import highest_tide_start
    from ioc.simulators.reports import DEMO_FACTOR
    from ioc.simulators.runner import Simulation, amplified_reports
    from ioc.simulators.scenario import load_scenario

    reports = amplified_reports(DEMO_FACTOR if report_factor is None else report_factor)

    zone = ZoneInfo(DISPLAY_TIMEZONE)
    scenario = load_scenario(scenario_name)
    normal = load_scenario("normal-day")

    async def run(sc: Scenario, start: datetime, pace: float, duration: timedelta) -> None:
        sim = Simulation(
            site,
            sc,
            mqtt=settings.mqtt,
            speed=pace,
            start=start,
            duration=duration,
            topic_prefix=settings.mqtt_topic_prefix,
            final_offline=False,
            reports=reports,
        )
        await sim.arun()

    try:
        start = recent_start(scenario.start, scenario.duration, speed, datetime.now(zone))
        # The tide is the real prediction of the replayed day: replay on the recent day with
        # the highest tide, so that a spring tide in the window tells its story.
        start, margin = highest_tide_start(site, start, scenario.duration)
        logging.getLogger("ioc").info(
            "demo: scenario %s replayed from %s; predicted tide %+.2f m from BĐ III at its "
            "highest station",
            scenario.name,
            start.isoformat(),
            margin,
        )
        await run(scenario, start, speed, scenario.duration)
        # catch up from the scenario's end to now (no gap that would read as silent devices),
        # then go on in real time
        end = start + scenario.duration
        behind = datetime.now(zone) - end
        if behind > timedelta(minutes=1):
            await run(normal, end, max(speed, behind / timedelta(seconds=60)), behind)
        await run(normal, datetime.now(zone), 1.0, timedelta(days=365))
    except Exception:
        logging.getLogger("ioc").exception("demo simulators stopped; the IOC keeps running")


def _simulate(settings: Settings, args: argparse.Namespace) -> int:
    """``ioc simulate``; with IOC_DATABASE_URL set, registers the (scaled) devices first, since
    the simulators themselves only speak MQTT."""
    from ioc.simulators.runner import main_simulate, scale_site

    if settings.database_url is not None:
        from ioc.core.site import load_site
        from ioc.storage import devices as device_store
        from ioc.storage import migrate

        async def register() -> None:
            assert settings.database_url is not None
            site = scale_site(load_site(settings.site_path()), args.devices)
            async with await psycopg.AsyncConnection.connect(settings.database_url) as conn:
                await device_store.sync_site_devices(conn, site.devices)
                await conn.commit()

        migrate(settings.database_url, choice=settings.storage_flavour)
        asyncio.run(register())
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        return main_simulate(settings, args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
