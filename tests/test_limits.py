"""Input limits at the HTTP edge (ioc.api.limits): body size and request rate per token."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

from ioc.api.limits import RateLimiter
from ioc.core.settings import Settings
from ioc.rules.language import check_rules
from tests.conftest import TOKEN, running_service

AUTH = {"Authorization": f"Bearer {TOKEN}"}


def test_bucket_allows_a_burst_then_the_rate() -> None:
    now = [100.0]
    limiter = RateLimiter(rate_per_s=2.0, burst=3, clock=lambda: now[0])
    assert [limiter.take(b"a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take(b"a") == 0.5  # empty: one more token in half a second
    assert limiter.take(b"b") == 0.0  # another caller has its own bucket
    now[0] += 0.5
    assert limiter.take(b"a") == 0.0
    now[0] += 60  # refills to the burst, not beyond
    assert [limiter.take(b"a") for _ in range(4)][-1] > 0


async def test_oversize_bodies_are_refused_with_413(settings: Settings) -> None:
    small = settings.model_copy(update={"http_max_body": 4096})
    async with running_service(small) as (_, http):
        r = await http.post("/api/v1/rules/validate", content=b"x" * 5000,
                            headers={**AUTH, "content-type": "application/yaml"})  # fmt: skip
        assert r.status_code == 413 and "5000 bytes is over 4096" in r.json()["message"]

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted on arrival
            for _ in range(5):
                yield b"y" * 1000

        r = await http.post("/api/v1/rules/validate", content=chunks(),
                            headers={**AUTH, "content-type": "application/yaml"})  # fmt: skip
        assert r.status_code == 413 and "over 4096 bytes" in r.json()["message"]
        ok = await http.post("/api/v1/rules/validate", content=b"rules: []\n",
                             headers={**AUTH, "content-type": "application/yaml"})  # fmt: skip
        assert ok.status_code == 200


async def test_a_token_over_its_rate_gets_429_with_retry_after(settings: Settings) -> None:
    slow = settings.model_copy(update={"http_rate_per_s": 0.5, "http_rate_burst": 3})
    async with running_service(slow) as (_, http):
        answers = [(await http.get("/api/v1/alerts", headers=AUTH)).status_code for _ in range(4)]
        assert answers == [200, 200, 200, 429]
        r = await http.get("/api/v1/alerts", headers=AUTH)
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        assert "requests/s for this token" in r.json()["message"]
        # another caller is not held back by it, and health checks are never limited
        assert (await http.get("/api/v1/alerts")).status_code == 401
        health = [(await http.get("/healthz")).status_code for _ in range(10)]
        assert health == [200] * 10


def test_a_rule_file_cannot_run_code(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    text = f"""rules:
  - id: x
    type: threshold
    select: {{kind: flood, metric: water_level_m}}
    when: !!python/object/apply:os.system ["touch {marker}"]
"""
    ruleset, problems = check_rules([("evil.yaml", text)])
    assert problems and not ruleset.rules
    assert "evil.yaml" in str(problems[0]) and not marker.exists()
