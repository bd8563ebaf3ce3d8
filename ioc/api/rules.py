"""/api/v1/rules: the rules in force with their alert counts, validation, backtests."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from fastapi import APIRouter, Body, Depends, HTTPException, Request
from pydantic import BaseModel, Field

from ioc.alerting import store as alert_store
from ioc.alerting.backtest import run_backtest
from ioc.alerting.rule_files import rules_path
from ioc.alerting.store import iso_time
from ioc.alerting.tide_source import site_predictor
from ioc.api.auth import require_operator, require_viewer
from ioc.api.context import runtime_of
from ioc.rules.language import Problem, Rule, RuleErrors, RuleSet, check_rules, load_rules

# Viewers list the rules in force and their state; validating and backtesting (which replays
# stored readings: real work for the database) are for operators.
router = APIRouter(prefix="/api/v1/rules", tags=["rules"], dependencies=[Depends(require_viewer)])

MAX_BACKTEST_DAYS = 93


class ProblemOut(BaseModel):
    file: str
    line: int
    message: str


class ValidateOut(BaseModel):
    valid: bool
    rules: list[str]
    problems: list[ProblemOut]


def _problems(problems: list[Problem]) -> list[ProblemOut]:
    return [ProblemOut(file=p.file, line=p.line, message=p.message) for p in problems]


def _current(request: Request) -> RuleSet:
    runtime = runtime_of(request)
    if runtime.rules is not None and runtime.rules.engine is not None:
        ruleset: RuleSet = runtime.rules.engine.ruleset
        return ruleset
    try:
        return load_rules(rules_path(runtime.settings))
    except RuleErrors as exc:
        raise HTTPException(500, f"the rule files have problems: {exc}") from None


def _rule_json(r: Rule) -> dict[str, Any]:
    return {
        "id": r.id,
        "type": r.type,
        "enabled": r.enabled,
        "severity": r.severity,
        "labels": dict(r.labels),
        "annotations": dict(r.annotations),
        "select": {
            "kind": sorted(r.select.kinds),
            "metric": r.select.metric,
            "event": r.select.event,
            "city": sorted(r.select.cities),
            "ward": sorted(r.select.wards),
        },
        "for_s": r.for_s,
        "keep_firing_for_s": r.keep_firing_for_s,
        "source": f"{r.file}:{r.line}",
    }


@router.get("")
async def list_rules(request: Request) -> dict[str, Any]:
    """Every rule in force with its alerts now pending and firing."""
    runtime = runtime_of(request)
    ruleset = _current(request)
    async with runtime.pool.connection() as conn:
        counts = await alert_store.open_counts_by_rule(conn)
    status = runtime.rules.status if runtime.rules is not None else None
    out = []
    for r in ruleset.rules:
        doc = _rule_json(r)
        c = counts.get(r.id, {})
        doc["pending"] = c.get("pending", 0)
        doc["firing"] = c.get("firing", 0)
        doc["state"] = "firing" if doc["firing"] else "pending" if doc["pending"] else "inactive"
        out.append(doc)
    return {
        "source": str(rules_path(runtime.settings)),
        "loaded_at": iso_time(status.loaded_at) if status and status.loaded_at else None,
        "refused_reload_problems": _problems(status.problems) if status else [],
        "inhibit_rules": len(ruleset.inhibit_rules),
        "rules": out,
    }


@router.post("/validate", response_model=ValidateOut, dependencies=[Depends(require_operator)])
async def validate(
    text: str = Body(..., media_type="application/yaml", description="a rule file (YAML)"),
    name: str = "rules.yaml",
) -> ValidateOut:
    """Check a rule file: every problem with its line and a plain message. Nothing is saved."""
    ruleset, problems = check_rules([(name, text)])
    return ValidateOut(
        valid=not problems, rules=[r.id for r in ruleset.rules], problems=_problems(problems)
    )


class BacktestIn(BaseModel):
    rules: str | None = Field(
        None, description="a rule file (YAML) to try; default: the rules in force"
    )
    rule_ids: list[str] | None = Field(None, description="only these rules of the set")
    from_: datetime = Field(alias="from")
    to: datetime


@router.post("/backtest", dependencies=[Depends(require_operator)])
async def backtest(body: BacktestIn, request: Request) -> dict[str, Any]:
    """Replay stored readings between ``from`` and ``to`` through the engine; the alerts the
    rules would have raised, with counts per local day."""
    if body.to <= body.from_:
        raise HTTPException(422, "to: must be after from")
    if body.to - body.from_ > timedelta(days=MAX_BACKTEST_DAYS):
        raise HTTPException(422, f"to: a backtest covers at most {MAX_BACKTEST_DAYS} days")
    if body.rules is not None:
        ruleset, problems = check_rules([("backtest.yaml", body.rules)])
        if problems:
            raise HTTPException(422, "rules: " + "; ".join(str(p) for p in problems))
    else:
        ruleset = _current(request)
    if body.rule_ids:
        known = {r.id for r in ruleset.rules}
        missing = sorted(set(body.rule_ids) - known)
        if missing:
            raise HTTPException(422, f"rule_ids: unknown rules {missing}")
        ruleset = RuleSet(
            tuple(r for r in ruleset.rules if r.id in body.rule_ids), ruleset.inhibit_rules
        )
    result = await run_backtest(
        runtime_of(request).conninfo,
        ruleset,
        body.from_.timestamp(),
        body.to.timestamp(),
        tides=site_predictor(runtime_of(request).settings),
    )
    return backtest_json(result)


def backtest_json(result: Any) -> dict[str, Any]:
    return {
        "readings": result.readings,
        "evaluated": result.evaluated,
        "fired": len(result.alerts),
        "pending_only": result.pending_only,
        "per_day": result.per_day,
        "alerts": [
            {
                "fingerprint": a.fingerprint,
                "rule": a.rule,
                "severity": a.severity,
                "labels": a.labels,
                "device_id": a.device_id,
                "active_at": iso_time(a.active_at),
                "started_at": iso_time(a.started_at) if a.started_at else None,
                "resolved_at": iso_time(a.resolved_at) if a.resolved_at else None,
                "value": a.value,
                "summary_vi": a.summary_vi,
                "summary_en": a.summary_en,
            }
            for a in result.alerts
        ],
    }
