"""The `quest` command line.

Each command builds the one Settings object and calls into the flows. Expected failures
(`QuestError`, e.g. a missing contact, a refused listing, a mass-delete guard) print one line and
exit 1; anything else is a bug and keeps its traceback.

Ownership while the project is being built: the ingest commands (sync, population, run) and the
report commands (reports, consume, demo) are filled in by different changes; keep each command's
body in its own `cmd_*` function.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from flows.errors import QuestError


def cmd_sync(args: argparse.Namespace) -> int:
    from flows.ingest import mirror_survey
    from flows.progress import cli_session
    from flows.settings import Settings

    settings = Settings(**({"bls_surveys": args.surveys} if args.surveys else {}))
    for survey in settings.bls_surveys:  # a missing contact fails before anything starts
        settings.contact_for(settings.survey_url(survey))
    with cli_session():
        summaries = [
            mirror_survey(s, dry_run=args.dry_run, allow_mass_delete=args.allow_mass_delete)
            for s in settings.bls_surveys
        ]
    for summary in summaries:
        print(summary.describe())
    return 0


def cmd_population(args: argparse.Namespace) -> int:
    from flows.ingest import population_snapshot
    from flows.progress import cli_session
    from flows.settings import Settings
    from flows.store import store_from_settings

    with cli_session():
        key = population_snapshot()
    print(f"population snapshot: {store_from_settings(Settings()).location(key)}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from flows.ingest import ingest
    from flows.progress import cli_session
    from flows.settings import Settings

    settings = Settings()
    for survey in settings.bls_surveys:  # a missing contact fails before anything starts
        settings.contact_for(settings.survey_url(survey))
    with cli_session():
        summary = ingest(allow_mass_delete=args.allow_mass_delete)
    for mirror in summary.surveys:
        print(mirror.describe())
    pop = summary.population
    print(f"population snapshot: {pop.key} ({len(pop.years)} years, {pop.years[0]}-{pop.years[-1]})")
    return 0


def cmd_reports(args: argparse.Namespace) -> int:
    import json

    from flows.names import timestamp
    from flows.report_format import text_report
    from flows.report_maths import DEFAULT_PERIOD, DEFAULT_SERIES_ID
    from flows.reports import reports, reports_location
    from flows.settings import Settings
    from flows.store import store_from_settings

    settings = Settings()
    ts = timestamp()
    result = reports(population_key=args.population_key, quarters_only=args.quarters_only, reports_ts=ts)
    if args.json:
        print(json.dumps(result, allow_nan=False))
        return 0
    print(text_report(result, DEFAULT_SERIES_ID, DEFAULT_PERIOD, args.quarters_only))
    print(f"\nreports written to {reports_location(store_from_settings(settings), ts)}")
    return 0


def cmd_consume(args: argparse.Namespace) -> int:
    from flows.consumer import RoundResult, consume
    from flows.settings import Settings

    def report(result: RoundResult) -> None:
        if not result.received:
            return
        outcome = result.outcome
        line = f"received {result.received}, deleted {result.deleted}, failed {len(result.failed)}"
        if outcome is not None and outcome.report is not None:
            line += f"; reports written to {outcome.report.location}"
        elif outcome is not None and outcome.error:
            line += f"; reports failed: {outcome.error}"
        print(line, flush=True)

    stats = consume(
        args.queue_url, once=args.once, wait_seconds=args.wait_seconds, settings=Settings(), on_round=report
    )
    print(
        f"{stats.rounds} round(s): received {stats.received}, deleted {stats.deleted}, failed {stats.failed}"
    )
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from flows.demo import print_demo, run_demo

    print_demo(run_demo(output_dir=args.output_dir))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="quest", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("sync", help="mirror BLS surveys into the store")
    p.add_argument("--survey", action="append", dest="surveys", metavar="S", help="survey (repeatable)")
    p.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    p.add_argument("--allow-mass-delete", action="store_true", help="override the max delete fraction")
    p.set_defaults(func=cmd_sync)

    p = sub.add_parser("population", help="snapshot the US population from DataUSA")
    p.set_defaults(func=cmd_population)

    p = sub.add_parser("run", help="the ingest flow: every survey, then the population snapshot")
    p.add_argument("--allow-mass-delete", action="store_true")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("reports", help="compute the reports from the store")
    p.add_argument("--population-key", help="population/<ts>.json (default: the newest)")
    p.add_argument("--quarters-only", action="store_true", help="count Q01-Q04 only (not Q05)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_reports)

    p = sub.add_parser("consume", help="long-poll an SQS queue of S3 events and run the reports")
    p.add_argument("--queue-url", required=True)
    p.add_argument("--once", action="store_true", help="one receive round, then exit")
    p.add_argument("--wait-seconds", type=int, default=20)
    p.set_defaults(func=cmd_consume)

    p = sub.add_parser("demo", help="the whole event-driven chain offline on loopback")
    p.add_argument("--output-dir", default="demo-output", help="where the report files are copied")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except QuestError as exc:
        print(f"quest {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
