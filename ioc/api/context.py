"""What the HTTP API needs of the running process, typed: the composition root's ``Runtime``
(ioc.app.runtime) has these attributes; the API may not import it (the roof), so it names them
here and every handler reaches them through :func:`runtime_of`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, cast

from starlette.requests import HTTPConnection

if TYPE_CHECKING:
    from psycopg_pool import AsyncConnectionPool

    from ioc.alerting.service import RulesService
    from ioc.core.settings import Settings
    from ioc.core.site import Site
    from ioc.ingest.service import IngestService
    from ioc.live.hub import LiveHub
    from ioc.routing.table import Routing
    from ioc.storage import Flavour


class ApiRuntime(Protocol):
    settings: Settings
    conninfo: str
    flavour: Flavour
    pool: AsyncConnectionPool
    site: Site
    routing: Routing
    admin_token: str
    ingest: IngestService | None  # None where this process runs no ingest
    rules: RulesService | None  # None where the rules run elsewhere
    live: LiveHub | None


def runtime_of(connection: HTTPConnection) -> ApiRuntime:
    """The runtime ``create_app`` was given, for a request or a websocket."""
    return cast("ApiRuntime", connection.app.state.runtime)
