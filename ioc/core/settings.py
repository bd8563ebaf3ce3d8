"""Typed configuration, read once from the environment (prefix ``IOC_``) and passed down.

Nothing else in the code base reads ``os.environ``. The names marked *contract* are part of the
v1 external contract (the README's configuration table lists them all); the rest are tuning
knobs with safe defaults.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ioc.core.packaged import SITE_DATA

DISPLAY_TIMEZONE = "Asia/Ho_Chi_Minh"


class MqttAddress:
    """A parsed ``mqtt://user:pass@host:port`` (or ``mqtts://…``, TLS) URL, with TLS files."""

    __slots__ = (
        "_ssl",
        "ca_file",
        "cert_file",
        "host",
        "key_file",
        "password",
        "port",
        "tls",
        "username",
    )

    def __init__(
        self,
        url: str,
        *,
        ca_file: Path | None = None,
        cert_file: Path | None = None,
        key_file: Path | None = None,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "tcp", "mqtts", "ssl"):
            raise ValueError(f"IOC_MQTT_URL must start with mqtt:// or mqtts://, got {url!r}")
        if not parts.hostname:
            raise ValueError(f"IOC_MQTT_URL has no host: {url!r}")
        if key_file is not None and cert_file is None:
            raise ValueError("IOC_MQTT_KEY_FILE is set without IOC_MQTT_CERT_FILE")
        # TLS: an mqtts:// URL, or a CA file or client certificate given (either implies TLS)
        self.tls: bool = (
            parts.scheme in ("mqtts", "ssl") or ca_file is not None or cert_file is not None
        )
        self.host: str = parts.hostname
        self.port: int = parts.port or (8883 if self.tls else 1883)
        self.username: str | None = unquote(parts.username) if parts.username else None
        self.password: str | None = unquote(parts.password) if parts.password else None
        self.ca_file = ca_file
        self.cert_file = cert_file
        self.key_file = key_file
        self._ssl: ssl.SSLContext | None = None

    def ssl_context(self) -> ssl.SSLContext:
        """Verifies the broker's certificate and host name against ``ca_file`` (else the
        system's CAs); presents ``cert_file``/``key_file`` when the broker asks for one (the
        key may be in ``cert_file``)."""
        try:
            ctx = ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"IOC_MQTT_CA_FILE {self.ca_file}: cannot load it: {exc}") from exc
        if self.cert_file is not None:
            try:
                ctx.load_cert_chain(self.cert_file, self.key_file)
            except (OSError, ssl.SSLError) as exc:
                raise ValueError(
                    f"IOC_MQTT_CERT_FILE {self.cert_file} / IOC_MQTT_KEY_FILE {self.key_file}: "
                    f"cannot load the client certificate and key: {exc}"
                ) from exc
        return ctx

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments for :class:`mqttclient.Client`: address, credentials, TLS context."""
        if self.tls and self._ssl is None:
            # one context for every client of this address (the simulators open thousands)
            self._ssl = self.ssl_context()
        return {
            "host": self.host,
            "port": self.port,
            "username": self.username,
            "password": self.password,
            "ssl": self._ssl if self.tls else None,
        }


# `ioc serve` refuses an admin token shorter than this or containing a placeholder word (the
# default of an example file copied as is): the API faces field networks and the citizens' app.
MIN_ADMIN_TOKEN = 16
PLACEHOLDER_WORDS = ("change", "example", "default", "secret", "password", "xxxx")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="IOC_", extra="ignore", frozen=True)

    # --- contract v1 ---
    database_url: str | None = Field(
        None, description="PostgreSQL URL; unset = start an embedded server (demo, tests)"
    )
    mqtt_url: str | None = Field(
        None, description="mqtt://user:pass@host:port; unset = start an embedded broker"
    )
    http_host: str = Field("127.0.0.1", description="address the HTTP API listens on")
    http_port: int = Field(8000, ge=0, le=65535, description="HTTP API port")
    http_max_body: int = Field(
        1_048_576, ge=1024, description="largest HTTP request body accepted (bytes); larger: 413"
    )
    http_rate_per_s: float = Field(
        50.0,
        gt=0,
        description="requests per second allowed per token (or per client address "
        "without one), per API process; over it: 429 with Retry-After",
    )
    http_rate_burst: int = Field(
        200, ge=1, description="requests a token may make at once before the rate applies"
    )
    admin_token: SecretStr | None = Field(
        None, description="bootstrap admin bearer token; `ioc demo` generates one when unset"
    )
    site: Path | None = Field(
        None, description="site data file; unset = the packaged Hậu Giang site"
    )
    rules_dir: Path | None = Field(
        None,
        description="directory of rule files (*.yaml); unset: the default pack shipped in the "
        "package. Files are re-read when they change; a file with problems is refused",
    )
    rules_tick_s: float = Field(
        1.0, gt=0, description="how often time-driven rule steps run (for, absence, expiry)"
    )
    alert_escalate_after_s: float = Field(
        900, gt=0, description="a critical alert unacknowledged this long escalates (repeats)"
    )
    alert_escalate_max: int = Field(3, ge=0, description="escalation levels at most")
    rules_in_ingest: bool = Field(
        True,
        description="evaluate rules in the ingest process (ioc serve, ioc ingest); false: "
        "ingest only stores, and `ioc rules run` evaluates from its own MQTT session",
    )
    planned_outages_file: Path | None = Field(
        None,
        description="the power company's planned cuts (CSV or YAML; docs/operations.md): a "
        "cabinet power loss during one is muted; re-read when it changes",
    )
    planned_outages_mqtt: bool = Field(
        True,
        description="also take the planned cuts from the retained MQTT message on "
        "{prefix}/power/planned-outages (docs/asyncapi.yaml)",
    )
    notification_routes_file: Path | None = Field(
        None,
        description="notification receivers and routes (YAML; docs/operations.md, "
        "Notifications); unset: ioc/site_data/notifications.yaml, which sends nothing",
    )
    rules_clock: Literal["wall", "stream"] = Field(
        "wall",
        description="time for time-driven rule steps: the wall clock, or the newest reading "
        "time seen (event time; the demo uses it for its accelerated replay of a past night)",
    )

    basemap_file: Path | None = Field(
        None,
        description="the city's own basemap for the wall screen: a .geojson FeatureCollection "
        "in lon/lat (properties kind: water, river, canal, road, building, town; name) or a "
        ".pmtiles archive (vector or raster tiles), drawn under the shipped base layer "
        "(docs/wall.md); unset = the shipped base layer alone",
    )
    wall_map: Literal["maplibre", "canvas"] = Field(
        "maplibre",
        description="the wall screen's map: MapLibre GL (WebGL; software rendering measured "
        "in docs/benchmarks.md) or the 2D-canvas fallback (no PMTiles basemap); a page may "
        "override it with /wall/?map=canvas",
    )

    # --- local state ---
    data_dir: Path = Field(Path(".ioc"), description="embedded servers' data and logs")

    # --- MQTT intake ---
    mqtt_topic_prefix: str = Field("hg", description="root level of the topic scheme")
    mqtt_client_id: str = Field("ioc-ingest", description="client id of the persistent session")
    mqtt_session_expiry_s: int = Field(
        7 * 24 * 3600, ge=0, description="how long the broker keeps our session while we are away"
    )
    metrics_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="`ioc serve`, `ioc ingest` and `ioc rules run` serve "
        "Prometheus /metrics on this port, without auth (Prometheus holds no API token): bind it "
        "to an internal network",
    )
    metrics_host: str = Field("127.0.0.1", description="address of that /metrics listener")
    serve_ingest: bool = Field(
        True,
        description="`ioc serve` also runs ingest; false: API, live feed, incidents and "
        "dispatch only, with `ioc ingest` workers taking the telemetry (scale-out)",
    )
    mqtt_shared_group: str | None = Field(
        None, description="MQTT v5 shared-subscription group for several ingest workers"
    )
    mqtt_keepalive_s: int = Field(30, ge=5)
    mqtt_ca_file: Path | None = Field(
        None,
        description="CA certificate (PEM) that signed the broker's: implies TLS; with "
        "mqtts:// and no CA file the system's CAs are used",
    )
    mqtt_cert_file: Path | None = Field(
        None, description="client certificate (PEM) when the broker requires one; implies TLS"
    )
    mqtt_key_file: Path | None = Field(None, description="its private key (PEM)")

    # --- ingest pipeline ---
    ingest_queue_capacity: int = Field(
        30_000,
        ge=10,
        le=65_535,
        description="messages received but not yet committed; also our MQTT v5 Receive Maximum",
    )
    ingest_batch_max: int = Field(
        10_000,
        ge=1,
        description="messages per database transaction (a backlog's; at a steady rate batches "
        "close after IOC_INGEST_LINGER_MS): larger batches share the newest-value upserts and "
        "the commit (5,000 → 10,000 with IOC_INGEST_QUEUE_CAPACITY 30,000: a backlog drained "
        "1.7 → 2.0–2.1 × a paho client, ~100 MB more peak RSS; docs/benchmarks.md)",
    )
    ingest_writers: int = Field(
        2,
        ge=1,
        le=8,
        description="database connections writing batches; consecutive batches' transactions "
        "overlap on them, acknowledged in arrival order (docs/architecture.md)",
    )
    ingest_linger_ms: float = Field(
        5.0,
        ge=0,
        description="how long a batch waits to fill before it is written (alert latency: "
        "publish → alert frame p99 67 ms at 5 ms, 114 ms at 20 ms; benchmarks/bench_live.py)",
    )
    max_payload_bytes: int = Field(16_384, ge=256, description="larger payloads are dead-lettered")
    ingest_device_rate_per_s: float = Field(
        20.0,
        gt=0,
        description="messages per second one device may publish, sustained, per "
        "ingest process; beyond it (and its burst) messages are dead-lettered `rate_limited`",
    )
    ingest_device_burst: int = Field(
        5_000,
        ge=1,
        description="messages one device may publish at once (a buffer emptied "
        "after an outage) before its rate applies",
    )
    reading_max_age_s: int = Field(
        7 * 24 * 3600, ge=60, description="older timestamps are dead-lettered as absurd"
    )
    reading_max_future_s: int = Field(
        300, ge=0, description="tolerated device clock skew into the future"
    )

    # --- storage ---
    storage_flavour: Literal["auto", "plain", "timescale"] = Field(
        "auto",
        description="storage of a database migrated for the first time: timescale (TimescaleDB "
        "required), plain (never TimescaleDB) or auto (TimescaleDB when the server has it; a "
        "server with the extension installed but unusable is refused, naming the fix)",
    )
    retention_days: int = Field(400, ge=1, description="raw readings older than this are dropped")
    rollup_1m_retention_days: int | None = Field(
        None,
        ge=1,
        description="1-minute rollups older than this are dropped; at least, and by default, "
        "IOC_RETENTION_DAYS",
    )
    rollup_1h_retention_days: int = Field(
        3650, ge=1, description="1-hour rollups, the long-term history, older than this are dropped"
    )
    dead_letter_limit: int = Field(100_000, ge=100, description="dead letters kept; oldest pruned")
    maintenance_interval_s: float = Field(
        30.0, gt=0, description="rollup refresh, partitions, retention"
    )
    db_pool_max: int = Field(10, ge=2)

    # --- live feed (/ws) ---
    feed_buffer: int = Field(
        10_000, ge=0, description="recent feed frames kept in memory per API process (/ws resume)"
    )
    feed_buffer_bytes: int = Field(
        32 * 2**20,
        ge=0,
        description="…and at most this many bytes of them (a readings frame of "
        "a large batch is big): the oldest go first; resume reads older frames from the database",
    )
    ws_client_queue: int = Field(
        1_000, ge=1, description="frames queued per /ws client before readings are coalesced"
    )
    ws_heartbeat_s: float = Field(15.0, gt=0, description="heartbeat frame interval on /ws")
    feed_retention_hours: float = Field(
        48.0, gt=0, description="live-feed rows kept in the database for resume"
    )

    # --- incidents and dispatch ---
    routing: Path | None = Field(
        None,
        description="routing file (categories, agency per category and ward, deadlines, "
        "working calendar); unset = the packaged ioc/site_data/routing.yaml",
    )
    incident_join_radius_m: float | None = Field(
        None,
        gt=0,
        description="a report this close to an open incident of its category joins "
        "it (unset: the routing file's join.radius_m)",
    )
    incident_join_window_h: float | None = Field(
        None,
        gt=0,
        description="…if that incident opened less than this long ago (unset: the "
        "routing file's join.window_h)",
    )
    incident_tick_s: float = Field(
        5.0,
        gt=0,
        description="how often the incident worker routes new reports and alerts "
        "and checks deadlines (it also wakes on NOTIFY)",
    )
    agency_webhooks: dict[str, dict[str, str]] = Field(
        default_factory=dict,
        description='agency webhooks as JSON: {"urban-works": {"url": "https://…", '
        '"secret": "…"}}; HMAC-SHA256 signs each delivery with the secret',
    )
    dispatch_max_attempts: int = Field(
        12, ge=1, description="webhook attempts before a delivery is marked failed"
    )
    dispatch_backoff_base_s: float = Field(
        2.0, gt=0, description="first retry delay; doubles each attempt, with full jitter"
    )
    dispatch_backoff_max_s: float = Field(600.0, gt=0, description="longest retry delay")
    dispatch_timeout_s: float = Field(10.0, gt=0, description="webhook request timeout")
    dispatch_mqtt_prefix: str = Field(
        "ioc/dispatch", description="agency dispatch topics: {prefix}/{agency}, QoS 1"
    )
    delivered_retention_days: float = Field(
        90.0, gt=0, description="delivered outbox rows and their attempt logs kept this long"
    )
    kpi_interval_s: float = Field(
        60.0,
        gt=0,
        description="how often the programme KPIs are recomputed and, when they "
        "changed, pushed on the live feed",
    )
    open311_max_description: int = Field(
        4000, ge=1, le=4000, description="longest Open311 description accepted"
    )

    log_level: str = Field("INFO")
    log_format: Literal["plain", "json"] = Field(
        "plain",
        description="plain lines, or one JSON object per line (every logger, uvicorn's "
        "included) with the request id and the record's extra fields",
    )
    http_access_log: bool = Field(
        False,
        description="one log line per HTTP request (uvicorn.access; JSON under "
        "IOC_LOG_FORMAT=json); off by default: the request metrics count them already",
    )
    build_commit: str | None = Field(
        None,
        description="git commit the running code was built from, for the ioc_build_info "
        "metric (the image sets it from its build argument; a git checkout is asked otherwise)",
    )

    @field_validator("mqtt_url")
    @classmethod
    def _check_mqtt_url(cls, v: str | None) -> str | None:
        if v is not None:
            MqttAddress(v)
        return v

    @model_validator(mode="after")
    def _check_mqtt_tls_files(self) -> Settings:
        if self.mqtt_url is not None:
            _ = self.mqtt  # refuses a key without its certificate
        return self

    @field_validator("mqtt_topic_prefix")
    @classmethod
    def _check_prefix(cls, v: str) -> str:
        if not v or v.startswith("/") or v.endswith("/") or any(c in v for c in "+#"):
            raise ValueError(
                "IOC_MQTT_TOPIC_PREFIX must be topic levels without wildcards or edge /"
            )
        return v

    @model_validator(mode="after")
    def _retention_covers_late_readings(self) -> Settings:
        # A reading up to IOC_READING_MAX_AGE_S old is accepted; its day must not be dropped yet.
        if self.retention_days * 86_400 < self.reading_max_age_s + 86_400:
            raise ValueError(
                "IOC_RETENTION_DAYS must exceed IOC_READING_MAX_AGE_S by at least a day "
                f"(retention {self.retention_days} d, max age {self.reading_max_age_s} s)"
            )
        return self

    @property
    def rollup_1m_days(self) -> int:
        return self.rollup_1m_retention_days or self.retention_days

    @model_validator(mode="after")
    def _rollups_outlive_their_sources(self) -> Settings:
        # A query picks raw or rollup rows by its bucket width, not by age: a rollup kept for
        # less time than the raw readings would answer "no data" where raw data exists. The
        # hourly rollup is rebuilt from the 1-minute one.
        if self.rollup_1m_days < self.retention_days:
            raise ValueError(
                "IOC_ROLLUP_1M_RETENTION_DAYS must be at least IOC_RETENTION_DAYS "
                f"({self.rollup_1m_days} d < {self.retention_days} d)"
            )
        if self.rollup_1h_retention_days < self.rollup_1m_days:
            raise ValueError(
                "IOC_ROLLUP_1H_RETENTION_DAYS must be at least the 1-minute rollups' retention "
                f"({self.rollup_1h_retention_days} d < {self.rollup_1m_days} d)"
            )
        return self

    @model_validator(mode="after")
    def _rules_see_whole_streams(self) -> Settings:
        # A shared subscription gives each worker part of every device's readings; rules in
        # each worker would judge half a tide. One `ioc rules run` must see everything.
        if self.mqtt_shared_group and self.rules_in_ingest:
            raise ValueError(
                "IOC_MQTT_SHARED_GROUP splits each device's readings between workers, so rules "
                "cannot run inside them: set IOC_RULES_IN_INGEST=false and run one "
                "`ioc rules run`"
            )
        return self

    def weak_admin_token(self) -> str | None:
        """Why the admin token is unfit for `ioc serve` (a network-facing API), or None."""
        if self.admin_token is None:
            return "IOC_ADMIN_TOKEN is unset"
        token = self.admin_token.get_secret_value()
        if len(token) < MIN_ADMIN_TOKEN:
            return f"IOC_ADMIN_TOKEN has {len(token)} characters; use at least {MIN_ADMIN_TOKEN}"
        if any(word in token.lower() for word in PLACEHOLDER_WORDS):
            return "IOC_ADMIN_TOKEN is a placeholder; generate one: openssl rand -base64 32"
        return None

    @property
    def mqtt(self) -> MqttAddress:
        if self.mqtt_url is None:
            raise RuntimeError("no broker configured (IOC_MQTT_URL is unset)")
        return MqttAddress(
            self.mqtt_url,
            ca_file=self.mqtt_ca_file,
            cert_file=self.mqtt_cert_file,
            key_file=self.mqtt_key_file,
        )

    def site_path(self) -> Path:
        return self.site or SITE_DATA / "hau-giang.yaml"

    def routing_path(self) -> Path:
        return self.routing or SITE_DATA / "routing.yaml"
