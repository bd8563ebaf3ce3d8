"""Structured logs and correlation ids (ioc.logs)."""

from __future__ import annotations

import logging

import orjson

from ioc.logs import JsonFormatter, request_id
from ioc.settings import Settings
from tests.conftest import TOKEN, running_service


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
