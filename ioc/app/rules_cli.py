"""``ioc rules check PATH`` and ``ioc rules backtest RULE_FILE --from --to``."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from ioc.core.settings import DISPLAY_TIMEZONE, Settings
from ioc.rules.language import RuleErrors, load_rules


def add_rules_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="rules_command", required=True)
    check = sub.add_parser("check", help="validate rule files: every problem with file and line")
    check.add_argument("path", type=Path, help="a rule file or a directory of *.yaml files")
    bt = sub.add_parser(
        "backtest", help="replay stored readings through rules; alerts they would have raised"
    )
    bt.add_argument("rule_file", type=Path, help="a rule file or directory")
    bt.add_argument("--from", dest="start", required=True, type=_when, help="start (ISO 8601)")
    bt.add_argument("--to", dest="end", required=True, type=_when, help="end (ISO 8601)")
    bt.add_argument("--rule", action="append", help="only this rule id (repeatable)")
    bt.add_argument("--alerts", action="store_true", help="list every alert, not only counts")
    sub.add_parser(
        "run",
        help="the rule engine as its own worker (with IOC_RULES_IN_INGEST=false on ingest)",
    )


def _when(text: str) -> datetime:
    """ISO 8601; without an offset it is local time (Asia/Ho_Chi_Minh)."""
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date/time like 2026-11-01") from None
    return t if t.tzinfo else t.replace(tzinfo=ZoneInfo(DISPLAY_TIMEZONE))


def run_rules_command(settings: Settings, args: argparse.Namespace) -> int:
    if args.rules_command == "run":
        if settings.database_url is None or settings.mqtt_url is None:
            print("ioc: IOC_DATABASE_URL and IOC_MQTT_URL are needed", file=sys.stderr)
            return 2
        return asyncio.run(_run_worker(settings))
    try:
        ruleset = load_rules(args.path if args.rules_command == "check" else args.rule_file)
    except RuleErrors as exc:
        for p in exc.problems:
            print(p, file=sys.stderr)
        print(f"{len(exc.problems)} problem(s)", file=sys.stderr)
        return 1
    if args.rules_command == "check":
        print(f"ok: {len(ruleset.rules)} rules, {len(ruleset.inhibit_rules)} inhibit rules")
        return 0
    if settings.database_url is None:
        print("ioc: IOC_DATABASE_URL is needed to read stored readings", file=sys.stderr)
        return 2
    if args.rule:
        from ioc.rules.language import RuleSet

        missing = sorted(set(args.rule) - {r.id for r in ruleset.rules})
        if missing:
            print(f"ioc: unknown rule(s) {missing}", file=sys.stderr)
            return 2
        ruleset = RuleSet(
            tuple(r for r in ruleset.rules if r.id in args.rule), ruleset.inhibit_rules
        )
    from ioc.alerting.backtest import run_backtest
    from ioc.alerting.store import iso_time
    from ioc.alerting.tide_source import site_predictor

    bar = _ProgressBar()
    started = time.perf_counter()
    result = asyncio.run(
        run_backtest(
            settings.database_url,
            ruleset,
            args.start.timestamp(),
            args.end.timestamp(),
            progress=bar.update,
            tides=site_predictor(settings),
        )
    )
    bar.done()
    took = time.perf_counter() - started
    print(
        f"{result.readings:,} readings ({result.evaluated:,} evaluated) in {took:.1f} s: "
        f"{len(result.alerts)} alerts fired, {result.pending_only} pending only"
    )
    for rule, days in sorted(result.per_day.items()):
        print(f"  {rule}: {sum(days.values())}")
        for day, n in sorted(days.items()):
            print(f"    {day}  {n}")
    if args.alerts:
        for a in result.alerts:
            end = iso_time(a.resolved_at) if a.resolved_at else "open"
            print(f"  {iso_time(a.started_at or a.active_at)} → {end}  {a.rule}  {a.summary_en}")
    return 0


class _ProgressBar:
    """One line on stderr, redrawn in place; silent when stderr is not a terminal."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.last = 0.0

    def update(self, phase: str, i: int, n: int) -> None:
        now = time.monotonic()
        if not self.tty or (now - self.last < 0.1 and i < n):
            return
        self.last = now
        width = 40
        filled = int(width * i / n) if n else width
        sys.stderr.write(f"\r{phase:>7} [{'#' * filled}{'.' * (width - filled)}] {i:,}/{n:,}")
        sys.stderr.flush()

    def done(self) -> None:
        if self.tty:
            sys.stderr.write("\n")


async def _run_worker(settings: Settings) -> int:
    from ioc.app.process import start_metrics_listener, tune_collector, wait_for_stop_signal
    from ioc.app.runtime import run_rules_worker

    start_metrics_listener(settings)

    async with run_rules_worker(settings):
        tune_collector()
        await wait_for_stop_signal(None)
    return 0
