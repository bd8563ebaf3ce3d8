"""The composition root: wires storage, ingest, upkeep and the HTTP API into one running service.

Nothing imports this module except the CLI and tests; it is the only place that knows every part.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum

import uvicorn
from psycopg.conninfo import make_conninfo
from psycopg_pool import AsyncConnectionPool

from ioc.alerting.service import RulesService
from ioc.api import create_app
from ioc.core import build_info
from ioc.core.settings import DISPLAY_TIMEZONE, Settings
from ioc.core.site import Site, load_site
from ioc.dispatch import DispatchWorker  # agency dispatch delivery (docs/dispatch.md)
from ioc.incidents.store import Context as IncidentContext
from ioc.incidents.worker import IncidentWorker
from ioc.ingest.service import IngestService
from ioc.kpi.figures import KpiPublisher
from ioc.live.hub import LiveHub
from ioc.provision import lifecycle as device_lifecycle
from ioc.routing.intake import report_vocabulary
from ioc.routing.table import Routing, load_routing
from ioc.storage import Flavour, migrate
from ioc.storage import devices as device_store
from ioc.storage.database import open_pool
from ioc.storage.maintenance import apply_policies, run_maintenance

log = logging.getLogger(__name__)


class Role(StrEnum):
    """What a process does; each command runs a set of them (``roles_of``)."""

    API = "api"  # HTTP API and /ws, with the live hub, the incident worker and KPI frames
    INGEST = "ingest"  # MQTT intake into storage (docs/architecture.md "The ingest path")
    RULES = "rules"  # the alert stages on ingest's committed batches (in the ingest process)
    DISPATCH = "dispatch"  # the outbox's delivery to agencies and notification receivers
    MAINTENANCE = "maintenance"  # rollups, partitions, retention


EVERY_ROLE: frozenset[Role] = frozenset(Role)


def roles_of(command: str, settings: Settings) -> frozenset[Role]:
    """The roles of ``ioc serve`` / ``ioc ingest`` under ``settings`` (``ioc rules run`` is
    :func:`run_rules_worker`: the rules role on an MQTT session of its own); ``all`` is one
    process doing everything (``ioc demo``, tests).

    ``serve`` is the API, dispatch and upkeep, and ingest unless ``IOC_SERVE_INGEST=false``
    (scale-out: ``ioc ingest`` workers take the telemetry); ``ingest`` never serves HTTP. The
    rules ride on ingest unless ``IOC_RULES_IN_INGEST=false`` (then ``ioc rules run`` has them).
    """
    if command == "serve":
        roles = {Role.API, Role.DISPATCH, Role.MAINTENANCE}
        if settings.serve_ingest:
            roles.add(Role.INGEST)
    elif command == "ingest":
        roles = {Role.INGEST, Role.MAINTENANCE}
    elif command == "all":
        roles = {Role.API, Role.INGEST, Role.DISPATCH, Role.MAINTENANCE}
    else:
        raise ValueError(f"no roles for command {command!r} (serve, ingest, all)")
    if Role.INGEST in roles and settings.rules_in_ingest:
        roles.add(Role.RULES)
    return frozenset(roles)


@dataclass
class Runtime:
    """What request handlers and background jobs share; built once by ``run_service``."""

    settings: Settings
    conninfo: str
    flavour: Flavour
    pool: AsyncConnectionPool
    site: Site
    routing: Routing
    admin_token: str
    roles: frozenset[Role] = EVERY_ROLE
    ingest: IngestService | None = None  # Role.INGEST
    rules: RulesService | None = None  # Role.RULES: the rule engine on ingest's batches
    live: LiveHub | None = None  # Role.API: the /ws feed hub
    incidents: IncidentWorker | None = None  # Role.API: reports/alerts → incidents
    kpis: KpiPublisher | None = None  # Role.API: programme KPIs on the live feed
    dispatch: DispatchWorker | None = None  # Role.DISPATCH: outbox → agency webhooks and MQTT
    http_port: int | None = None


SHUTDOWN_GRACE_S = 5  # in-flight HTTP requests and /ws streams get this long to finish


class _Server(uvicorn.Server):
    # The CLI owns SIGINT/SIGTERM and stops everything in order; uvicorn must not grab them.
    def capture_signals(self) -> contextlib.AbstractContextManager[None]:  # type: ignore[override]
        return contextlib.nullcontext()


def api_conninfo(conninfo: str) -> str:
    """Connections of the API pool answer in the operators' time zone (+07:00 offsets)."""
    return make_conninfo(conninfo, options=f"-c timezone={DISPLAY_TIMEZONE}")


@contextlib.asynccontextmanager
async def run_service(
    settings: Settings, roles: Iterable[Role] | None = None
) -> AsyncIterator[Runtime]:
    """Migrate, load the site, then run the ``roles`` (default: ``roles_of("all")``) until the
    block exits."""
    roles = frozenset(roles) if roles is not None else roles_of("all", settings)
    if Role.RULES in roles and Role.INGEST not in roles:
        raise ValueError("Role.RULES runs on ingest's batches; alone it is run_rules_worker")
    if settings.database_url is None:
        raise RuntimeError("IOC_DATABASE_URL is unset (the CLI starts an embedded server for demo)")
    conninfo = settings.database_url
    build_info.publish(settings.build_commit)
    flavour = await asyncio.to_thread(migrate, conninfo, choice=settings.storage_flavour)
    site = load_site(settings.site_path())
    routing = load_routing(settings.routing_path(), site)
    token = (
        settings.admin_token.get_secret_value()
        if settings.admin_token
        else secrets.token_urlsafe(24)
    )
    pool = await open_pool(api_conninfo(conninfo), max_size=settings.db_pool_max)
    try:
        async with pool.connection() as conn:
            # the site file wins for its devices; API/import devices and decommissions are kept
            before = await device_lifecycle.registry(conn)
            n = await device_store.sync_site_devices(conn, site.devices)
            device_lifecycle.log_differences(device_lifecycle.diff(site.devices, before))
            await apply_policies(
                conn,
                flavour,
                settings.retention_days,
                settings.reading_max_age_s,
                rollup_1m_days=settings.rollup_1m_days,
                rollup_1h_days=settings.rollup_1h_retention_days,
            )
        log.info("site %s: %d devices; storage flavour %s", settings.site_path().name, n, flavour)
        runtime = Runtime(settings, conninfo, flavour, pool, site, routing, token, roles)
        async with contextlib.AsyncExitStack() as stack:
            if Role.INGEST in roles:
                listeners = []
                if Role.RULES in roles:
                    # The rule engine runs where ingest runs, on each committed batch (before
                    # its acknowledgement); entered first so open alerts are restored before any
                    # batch, left last so the ingest drain still reaches it.
                    runtime.rules = await stack.enter_async_context(
                        RulesService(settings, conninfo)
                    )
                    listeners.append(runtime.rules.on_batch)
                runtime.ingest = await stack.enter_async_context(
                    IngestService(
                        settings, conninfo, flavour, listeners=listeners,
                        reports=report_vocabulary(settings),
                    )
                )
            if Role.API in roles:
                # Started before the HTTP server, stopped after it (and before ingest closes).
                runtime.live = await stack.enter_async_context(LiveHub(settings, conninfo, pool))
                # Incidents from reports and alerts; safe to run in several API processes
                # (rows are claimed with SKIP LOCKED).
                runtime.incidents = await stack.enter_async_context(
                    IncidentWorker(IncidentContext(routing, site, settings), conninfo, pool)
                )
                runtime.kpis = await stack.enter_async_context(
                    KpiPublisher(settings, pool, interval_s=settings.kpi_interval_s)
                )
            if Role.DISPATCH in roles:
                # Dispatch delivery (outbox → agencies); safe in several processes (SKIP LOCKED).
                # Left first: in-flight attempts finish or are released before the rest stops.
                runtime.dispatch = await stack.enter_async_context(
                    DispatchWorker(settings, conninfo)
                )
            async with asyncio.TaskGroup() as tg:
                stop = asyncio.Event()
                if Role.MAINTENANCE in roles:
                    tg.create_task(_maintenance_loop(runtime, stop), name="storage-maintenance")
                server: _Server | None = None
                if Role.API in roles:
                    server = _Server(
                        uvicorn.Config(
                            create_app(runtime),
                            host=settings.http_host,
                            port=settings.http_port,
                            lifespan="off",
                            # uvicorn's loggers go through the root handler set by
                            # ioc.core.logs.configure (JSON under IOC_LOG_FORMAT=json), at the
                            # levels set there: no handlers or levels of uvicorn's own.
                            log_config=None,
                            log_level=None,
                            access_log=settings.http_access_log,
                            # A /ws client that stops reading keeps its socket from draining;
                            # uvicorn would wait for it forever on shutdown.
                            timeout_graceful_shutdown=SHUTDOWN_GRACE_S,
                            # Wall screens sit on the control room's LAN: compressing every
                            # frame once per client cost more CPU than the whole fan-out
                            # (bench_live, py-spy) for bandwidth nobody is short of.
                            ws_per_message_deflate=False,
                        )
                    )
                    serving = tg.create_task(server.serve(), name="http-api")
                    while not server.started:
                        if serving.done():
                            serving.result()  # raises why it could not start (e.g. port in use)
                            raise RuntimeError("HTTP server stopped during start-up")
                        await asyncio.sleep(0.02)
                    runtime.http_port = server.servers[0].sockets[0].getsockname()[1]
                try:
                    yield runtime
                finally:
                    # Ordered shutdown: stop taking HTTP requests (uvicorn ends /ws streams), stop
                    # upkeep; the exit stack then stops the live hub, drains and closes ingest;
                    # the pool closes last.
                    if server is not None:
                        server.should_exit = True
                    stop.set()
    finally:
        await pool.close()


async def _maintenance_loop(runtime: Runtime, stop: asyncio.Event) -> None:
    s = runtime.settings
    while not stop.is_set():
        try:
            async with runtime.pool.connection() as conn:
                report = await run_maintenance(
                    conn,
                    runtime.flavour,
                    retention_days=s.retention_days,
                    dead_letter_limit=s.dead_letter_limit,
                    max_age_s=s.reading_max_age_s,
                    feed_retention=timedelta(hours=s.feed_retention_hours),
                    delivered_retention=timedelta(days=s.delivered_retention_days),
                    rollup_1m_days=s.rollup_1m_days,
                    rollup_1h_days=s.rollup_1h_retention_days,
                )
            log.debug("maintenance: %s", report)
        except Exception:
            # Upkeep failing (database down) must not take the service with it; next round retries.
            log.warning("storage maintenance failed; retrying next round", exc_info=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), s.maintenance_interval_s)


RULES_CLIENT_SUFFIX = "-rules"


@contextlib.asynccontextmanager
async def run_rules_worker(settings: Settings) -> AsyncIterator[RulesService]:
    """The rule engine as its own process (``ioc rules run``, with ``IOC_RULES_IN_INGEST=false``
    on the ingest workers): a persistent MQTT session of its own (client id + ``-rules``) whose
    batches go through the engine and are acknowledged after the alerts are stored; readings are
    stored by ingest, not here. One such worker per deployment: it must see every device."""
    if settings.database_url is None:
        raise RuntimeError("IOC_DATABASE_URL is unset")
    conninfo = settings.database_url
    build_info.publish(settings.build_commit)
    flavour = await asyncio.to_thread(migrate, conninfo, choice=settings.storage_flavour)
    async with RulesService(settings, conninfo) as rules:
        consumer = IngestService(
            settings.model_copy(update={"mqtt_shared_group": None}),
            conninfo,
            flavour,
            listeners=[rules.on_batch],
            store=False,
            client_id=settings.mqtt_client_id + RULES_CLIENT_SUFFIX,
        )
        async with consumer:
            await consumer.wait_connected(30)
            yield rules
