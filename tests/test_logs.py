"""Structured logs and correlation ids (ioc.core.logs)."""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from pathlib import Path

import httpx
import orjson
import pytest

from ioc.core.logs import JsonFormatter, request_id
from ioc.core.settings import Settings
from ioc.embedded.ports import free_port
from tests.conftest import TOKEN, eventually, running_service
from tests.test_scale_out import Proc


def test_json_lines_carry_the_request_id() -> None:
    record = logging.LogRecord("ioc.x", logging.WARNING, __file__, 1, "trạm %s mất kết nối",
                               ("vt-flood-01",), None)  # fmt: skip
    token = request_id.set("req-7")
    try:
        line = JsonFormatter().format(record)
    finally:
        request_id.reset(token)
    doc = orjson.loads(line)
    assert doc["message"] == "trạm vt-flood-01 mất kết nối" and doc["request_id"] == "req-7"
    assert (doc["level"], doc["logger"]) == ("WARNING", "ioc.x") and doc["time"].endswith("+00:00")
    assert "request_id" not in orjson.loads(JsonFormatter().format(record))  # outside a request


async def test_every_answer_has_a_request_id_and_a_given_one_is_kept(settings: Settings) -> None:
    async with running_service(settings) as (_, http):
        auth = {"Authorization": f"Bearer {TOKEN}"}
        made = (await http.get("/api/v1/alerts", headers=auth)).headers["x-request-id"]
        assert len(made) == 32
        kept = await http.get("/api/v1/alerts", headers={**auth, "X-Request-ID": "wall-1/42"})
        assert kept.headers["x-request-id"] == "wall-1/42"
        refused = await http.get("/api/v1/alerts", headers={"X-Request-ID": "no-token"})
        assert refused.status_code == 401 and refused.headers["x-request-id"] == "no-token"


def test_extra_fields_are_kept_and_odd_values_written_as_text() -> None:
    log = logging.getLogger("ioc.test")
    record = log.makeRecord(
        "ioc.test", logging.INFO, __file__, 1, "batch committed", (), None,
        extra={"device_id": "vt-flood-01", "rows": 12, "path": Path("/x"), "color_message": "c"},
    )  # fmt: skip
    doc = orjson.loads(JsonFormatter().format(record))
    assert (doc["device_id"], doc["rows"], doc["path"]) == ("vt-flood-01", 12, "/x")
    assert "color_message" not in doc  # uvicorn's coloured restatement of the message


async def test_every_line_of_a_real_serve_run_is_one_json_object(
    database_url: str, mqtt_url: str, topic_prefix: str, tmp_path: Path
) -> None:
    """`ioc serve` as a subprocess under IOC_LOG_FORMAT=json: its own lines, uvicorn's access
    and error lines (and any Python warning: PYTHONWARNINGS=always) — each line of stderr one
    JSON object."""
    http_port, metrics_port = free_port(), free_port()
    env = {
        **os.environ,
        "IOC_DATABASE_URL": database_url,
        "IOC_MQTT_URL": mqtt_url,
        "IOC_MQTT_TOPIC_PREFIX": topic_prefix,
        "IOC_MQTT_CLIENT_ID": f"logs-{uuid.uuid4().hex[:8]}",
        "IOC_ADMIN_TOKEN": TOKEN,
        "IOC_HTTP_PORT": str(http_port),
        "IOC_METRICS_PORT": str(metrics_port),
        "IOC_DATA_DIR": str(tmp_path),
        "IOC_LOG_FORMAT": "json",
        "IOC_HTTP_ACCESS_LOG": "true",
        "IOC_MAINTENANCE_INTERVAL_S": "3600",
        "PYTHONWARNINGS": "always",
    }
    proc = Proc("serve", env, "serve")
    await proc.start()
    try:
        await eventually(lambda: proc.logged("API on http://"), timeout=60)
        base = f"http://127.0.0.1:{http_port}"
        async with httpx.AsyncClient() as http:
            ok = await http.get(f"{base}/api/v1/alerts", headers={"X-Request-ID": "logs-1",
                                "Authorization": f"Bearer {TOKEN}"})  # fmt: skip
            assert ok.status_code == 200
            assert (await http.get(f"{base}/api/v1/alerts")).status_code == 401
            # a credential in the query string is masked in the access line
            await http.get(f"{base}/api/v1/alerts?state=firing&api_key=S3CRET-in-url")
            # Prometheus' listener: no token (the API's own /metrics needs the admin token)
            scraped = await http.get(f"http://127.0.0.1:{metrics_port}/metrics")
            assert scraped.status_code == 200 and "ioc_http_requests_total" in scraped.text
            assert "ioc_build_info{" in scraped.text
        # a request uvicorn cannot parse: uvicorn.error warns
        reader, writer = await asyncio.open_connection("127.0.0.1", http_port)
        writer.write(b"NOT HTTP AT ALL\r\n\r\n")
        await writer.drain()
        await reader.read()
        writer.close()
        await eventually(lambda: proc.logged("Invalid HTTP request"), timeout=30)
        await eventually(lambda: proc.logged('"status":401'), timeout=30)
    finally:
        code = await proc.stop()
    assert code == 0, proc.log_tail()
    assert len(proc.lines) >= 5
    docs = []
    for line in proc.lines:
        try:
            doc = orjson.loads(line)
        except orjson.JSONDecodeError:
            pytest.fail(f"not one JSON object: {line!r}\n{proc.log_tail()}")
        assert isinstance(doc, dict) and {"time", "level", "logger", "message"} <= doc.keys()
        docs.append(doc)
    by_logger = {d["logger"] for d in docs}
    assert {"uvicorn.access", "uvicorn.error"} <= by_logger and any(
        name.startswith("ioc") for name in by_logger
    ), by_logger
    access = [d for d in docs if d["logger"] == "uvicorn.access"]
    mine = next(d for d in access if d.get("request_id") == "logs-1")
    assert (mine["method"], mine["path"], mine["status"]) == ("GET", "/api/v1/alerts", 200)
    assert any(d["status"] == 401 for d in access)
    assert not any("S3CRET" in line for line in proc.lines)
    assert any(d["path"] == "/api/v1/alerts?state=firing&api_key=***" for d in access)
    invalid = next(d for d in docs if d["logger"] == "uvicorn.error")
    assert invalid["level"] == "WARNING" and "Invalid HTTP request" in invalid["message"]
