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
    raise QuestError("quest sync is not implemented yet")


def cmd_population(args: argparse.Namespace) -> int:
    raise QuestError("quest population is not implemented yet")


def cmd_run(args: argparse.Namespace) -> int:
    raise QuestError("quest run is not implemented yet")


def cmd_reports(args: argparse.Namespace) -> int:
    raise QuestError("quest reports is not implemented yet")


def cmd_consume(args: argparse.Namespace) -> int:
    raise QuestError("quest consume is not implemented yet")


def cmd_demo(args: argparse.Namespace) -> int:
    raise QuestError("quest demo is not implemented yet")


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
