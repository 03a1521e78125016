"""Reports benchmark: prints figures, asserts nothing (targets are read by people, not by CI).

1. All three reports on a generated BLS file 10x the size of `pr.data.1.AllData` (~32 MB), beside
   the time pandas needs merely to parse that file (target: reports <= 1.3x parse).
2. In `quest demo`: the time from the snapshot's PUT (S3 eventTime) to the report objects
   existing (target <= 5 s).

    .venv/bin/python benchmarks/reports_bench.py [--repeat 5] [--skip-demo]
"""

from __future__ import annotations

import argparse
import io
import statistics
import tempfile
import time

import pandas as pd

from flows.core.report_maths import compute_reports, read_bls
from flows.devkit.samples import bls_data_rows, format_bls_data, sample_population

ALLDATA_BYTES = 3_237_169  # pr.data.1.AllData as published on 2026-08-06
TARGET_BYTES = 10 * ALLDATA_BYTES


def generated_file(target: int = TARGET_BYTES) -> bytes:
    """Sample surveys (distinct series-id prefixes) concatenated until the file reaches `target` bytes."""
    rows = []
    size = 0
    for i, survey in enumerate(["pr", "pa", "pb", "pc", "pd", "pe", "pf", "pg", "ph", "pi"]):
        chunk = bls_data_rows(survey, seed=i, n_series=500, years=range(1900, 2025))
        rows.extend(chunk)
        size += len(format_bls_data(chunk))
        if size >= target:
            break
    return format_bls_data(rows)


def best_of(fn, repeat: int) -> tuple[float, float]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times), statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--skip-demo", action="store_true")
    args = parser.parse_args()

    data = generated_file()
    population = sample_population()
    print(f"generated file: {len(data) / 1e6:.1f} MB ({len(data) / ALLDATA_BYTES:.1f}x pr.data.1.AllData)")

    # Alternate the two measurements so machine load hits both alike.
    parse_t, reports_t = [], []
    for _ in range(args.repeat):
        parse_t.append(best_of(lambda: pd.read_csv(io.BytesIO(data), sep="\t"), 1)[0])
        reports_t.append(best_of(lambda: compute_reports(read_bls(data), population).to_json(), 1)[0])
    rows = len(read_bls(data).frame)
    print(f"rows: {rows:,}")
    print(f"bare pandas parse     : best {min(parse_t):.3f} s, median {statistics.median(parse_t):.3f} s")
    print(f"all three reports     : best {min(reports_t):.3f} s, median {statistics.median(reports_t):.3f} s")
    print(
        f"ratio (target <= 1.3x): best {min(reports_t) / min(parse_t):.2f}x, "
        f"median {statistics.median(reports_t) / statistics.median(parse_t):.2f}x"
    )

    if not args.skip_demo:
        from flows.devkit.demo import run_demo

        with tempfile.TemporaryDirectory() as out:
            demo = run_demo(output_dir=out, say=lambda _line: None)
        print(
            f"quest demo: snapshot PUT -> report objects {demo.put_to_reports_seconds:.2f} s (target <= 5 s)"
        )
        print(f"quest demo: total {demo.total_seconds:.1f} s (target < 60 s)")


if __name__ == "__main__":
    main()
