"""Parser benchmark: the worst shapes of upstream bytes, timed at several sizes (prints, asserts nothing).

For each parser of upstream bytes (a survey listing, the root listing, the BLS data file, the
population body) and each shape of `flows.devkit.parse_shapes`, prints the parse time at each size
and the longest time the parse held the GIL (a thread that wakes every millisecond records its
longest wait: the lease renewal, heartbeats and cancel watcher are such threads). A linear parser
takes about 8x longer at 8x the size; a shape slower than `--give-up` seconds is not tried larger.

    .venv/bin/python benchmarks/parse_bench.py [--sizes 65536,524288,8388608] [--only root] [--give-up 20]
"""

from __future__ import annotations

import argparse
import threading
import time
from collections.abc import Callable
from typing import Any

from flows.core.discovery import parse_root_listing
from flows.core.errors import QuestError
from flows.core.listing import parse_listing
from flows.core.population import normalise_population
from flows.core.report_maths import read_bls
from flows.devkit.parse_shapes import (
    BLS_SHAPES,
    LISTING_SHAPES,
    LISTING_URL,
    POPULATION_SHAPES,
    ROOT_URL,
)

PARSERS: dict[str, tuple[Callable[[Any], object], dict[str, Callable[[int], Any]]]] = {
    "listing": (lambda page: parse_listing(page, LISTING_URL), LISTING_SHAPES),
    "root": (lambda page: parse_root_listing(page, ROOT_URL), LISTING_SHAPES),
    "bls": (read_bls, BLS_SHAPES),
    "population": (normalise_population, POPULATION_SHAPES),
}


class LongestHold:
    """The longest gap between the wake-ups of a thread sleeping 1 ms at a time."""

    def __enter__(self) -> LongestHold:
        self.longest, self._stop = 0.0, threading.Event()
        self._thread = threading.Thread(target=self._tick, daemon=True)
        self._thread.start()
        return self

    def _tick(self) -> None:
        last = time.perf_counter()
        while not self._stop.wait(0.001):
            now = time.perf_counter()
            self.longest, last = max(self.longest, now - last), now

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def timed(parse: Callable[[Any], object], body: Any) -> tuple[float, float, str]:
    """(seconds, longest GIL hold, outcome) of one parse."""
    with LongestHold() as hold:
        start = time.perf_counter()
        try:
            parse(body)
            outcome = "parsed"
        except QuestError as exc:
            outcome = type(exc).__name__
        except Exception as exc:  # a traceback for garbled data is a bug: show it
            outcome = f"BUG {type(exc).__name__}: {str(exc)[:60]}"
        seconds = time.perf_counter() - start
    return seconds, hold.longest, outcome


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="65536,524288,8388608", help="comma-separated sizes in bytes")
    parser.add_argument("--only", choices=sorted(PARSERS), action="append")
    parser.add_argument("--shape", help="only shapes whose name contains this")
    parser.add_argument("--give-up", type=float, default=20.0, help="seconds past which a shape is not grown")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    for name in args.only or PARSERS:
        parse, shapes = PARSERS[name]
        print(f"\n{name}: seconds (longest GIL hold) at {', '.join(f'{s:,}' for s in sizes)} bytes")
        for shape, build in shapes.items():
            if args.shape and args.shape not in shape:
                continue
            cells, outcome = [], ""
            for size in sizes:
                seconds, hold, outcome = timed(parse, build(size))
                cells.append(f"{seconds:8.3f} ({hold:6.3f})")
                if seconds > args.give_up:
                    cells.append("  (gave up)")
                    break
            print(f"  {shape:48s} {' '.join(cells)}  {outcome}", flush=True)


if __name__ == "__main__":
    main()
