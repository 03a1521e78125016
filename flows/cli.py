"""The `quest` command line.

Each command builds the one Settings object first, so a bad setting fails before any flow run
starts, then calls into the flows. Expected failures (`QuestError`, e.g. a bad setting, a missing
contact, a refused listing, a mass-delete guard) print one line `quest <command>: error: ...` and
exit 1; usage errors exit 2 (argparse); anything else is a bug and keeps its traceback.

Ownership while the project is being built: the ingest commands (sync, population, run) and the
report commands (reports, consume, demo) are filled in by different changes; keep each command's
body in its own `cmd_*` function.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from flows.core.errors import QuestError, one_line

SQS_MAX_WAIT_SECONDS = 20  # the longest long poll SQS accepts


def cmd_sync(args: argparse.Namespace) -> int:
    from flows.settings import Settings, parse_surveys, use_settings

    overrides = {"bls_surveys": parse_surveys(args.surveys, source="--survey")} if args.surveys else {}
    settings = Settings(**overrides)
    settings.check_contacts(settings.bls_surveys)

    import logging

    from flows.discovery import mirror_each, resolve_surveys, retire_surveys, surveys_failed
    from flows.ingest import mirror_survey
    from flows.io.http import make_client
    from flows.progress import cli_session

    logger = logging.getLogger("quest.sync")
    with cli_session(), use_settings(settings):
        # QUEST_BLS_SURVEYS=all / --survey all: one GET of the root listing says which surveys exist.
        with make_client(settings, settings.bls_base_url) as client:
            selection = resolve_surveys(settings, settings.bls_surveys, client, logger)
        if selection.discovered:
            print(selection.describe(), flush=True)
        summaries, failures = mirror_each(
            selection,
            lambda s: mirror_survey(s, dry_run=args.dry_run, allow_mass_delete=args.allow_mass_delete),
            logger,
        )
        if selection.gone and not args.dry_run:
            selection.retired = retire_surveys(settings, selection.gone, args.allow_mass_delete, logger)
    for summary in summaries:
        print(summary.describe())
    if selection.retired:
        print(selection.describe())
    if failures:
        raise surveys_failed(failures, len(selection.surveys))
    return 0


def cmd_population(args: argparse.Namespace) -> int:
    from flows.settings import Settings, use_settings

    settings = Settings()
    settings.check_contacts(population=True)

    from flows.ingest import population_snapshot
    from flows.progress import cli_session

    with cli_session(), use_settings(settings):
        snapshot = population_snapshot()
    print(f"population snapshot: {snapshot.location}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from flows.settings import Settings, use_settings

    settings = Settings()
    settings.check_contacts(settings.bls_surveys, population=True)

    from flows.ingest import ingest
    from flows.progress import cli_session

    with cli_session(), use_settings(settings):
        summary = ingest(allow_mass_delete=args.allow_mass_delete)
    for mirror in summary.surveys:
        print(mirror.describe())
    pop = summary.population
    print(f"population snapshot: {pop.key} ({len(pop.years)} years, {pop.years[0]}-{pop.years[-1]})")
    return 0


def cmd_reports(args: argparse.Namespace) -> int:
    import json

    from flows.settings import Settings, use_settings

    settings = Settings()

    from flows.core.report_format import text_report
    from flows.core.report_maths import DEFAULT_PERIOD, DEFAULT_SERIES_ID
    from flows.progress import cli_session
    from flows.reports import reports

    with cli_session(), use_settings(settings):  # an expected failure is one line, not Prefect's traceback
        run = reports(population_key=args.population_key or "", quarters_only=args.quarters_only)
    if args.json:
        print(json.dumps(run.result, allow_nan=False))
        return 0
    print(text_report(run.result, DEFAULT_SERIES_ID, DEFAULT_PERIOD, args.quarters_only))
    print(f"\nreports written to {run.location}")
    return 0


def cmd_consume(args: argparse.Namespace) -> int:
    from flows.settings import Settings

    settings = Settings()

    from flows.runtime.sqs import RoundResult, consume

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
        args.queue_url, once=args.once, wait_seconds=args.wait_seconds, settings=settings, on_round=report
    )
    print(
        f"{stats.rounds} round(s): received {stats.received}, deleted {stats.deleted}, failed {stats.failed}"
    )
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    import os

    from flows.devkit.demo import ENDPOINT_VAR, print_demo, run_demo

    endpoint = args.endpoint_url or _endpoint_url(os.environ.get(ENDPOINT_VAR, ""), ENDPOINT_VAR)
    print_demo(run_demo(output_dir=args.output_dir, endpoint_url=endpoint or None))
    return 0


def _endpoint_url(text: str, source: str) -> str:
    """An S3 + SQS endpoint: an http(s) URL with a host ('' stays '': none given)."""
    from flows.core.errors import ConfigError
    from flows.settings import parse_http_url

    if not text:
        return ""
    try:
        return parse_http_url(text, directory=False)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def wait_seconds(text: str) -> int:
    """--wait-seconds: a whole number of seconds SQS accepts for a long poll (0-20)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number of seconds: {text!r}") from None
    if not 0 <= value <= SQS_MAX_WAIT_SECONDS:
        raise argparse.ArgumentTypeError(f"must be between 0 and {SQS_MAX_WAIT_SECONDS} (SQS), got {value}")
    return value


def queue_url(text: str) -> str:
    """--queue-url: an http(s) URL with a host, as SQS queue URLs are; checked before any AWS call."""
    from flows.core.errors import ConfigError
    from flows.settings import parse_http_url

    try:
        return parse_http_url(text, directory=False)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def endpoint_url(text: str) -> str:
    """--endpoint-url: an http(s) URL with a host; checked before any AWS call."""
    from flows.core.errors import ConfigError

    try:
        return _endpoint_url(text, "--endpoint-url")
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


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
    p.add_argument("--queue-url", required=True, type=queue_url)
    p.add_argument("--once", action="store_true", help="one receive round, then exit")
    p.add_argument(
        "--wait-seconds", type=wait_seconds, default=SQS_MAX_WAIT_SECONDS, help="long-poll seconds, 0-20"
    )
    p.set_defaults(func=cmd_consume)

    p = sub.add_parser("demo", help="the whole event-driven chain offline on loopback")
    p.add_argument("--output-dir", default="demo-output", help="where the report files are copied")
    p.add_argument(
        "--endpoint-url",
        type=endpoint_url,
        help="S3 + SQS you already run, e.g. LocalStack's http://localhost:4566 (default: moto, started "
        "here; or QUEST_DEMO_ENDPOINT_URL)",
    )
    p.set_defaults(func=cmd_demo)
    return parser


def error_line(exc: BaseException) -> str:
    """The message of an expected failure on one printable line, whatever the message holds."""
    return one_line(str(exc)) or type(exc).__name__


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from flows.signals import Stopped, stop_on_signals

    try:
        with stop_on_signals():
            return int(args.func(args) or 0)
    except QuestError as exc:
        print(f"quest {args.command}: error: {error_line(exc)}", file=sys.stderr)
        return 1
    except Stopped as exc:
        # In-flight transfers were aborted on the way here; nothing half-written was published.
        print(f"quest {args.command}: stopped by {exc.signal_name}", file=sys.stderr)
        return exc.exit_status
    except KeyboardInterrupt:
        print(f"quest {args.command}: stopped by SIGINT", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
