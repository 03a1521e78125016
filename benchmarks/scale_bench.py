"""All of BLS on the Lambda pool (issue 12): a synthetic `time.series/` root through the real pool.

    .venv/bin/python benchmarks/scale_bench.py --scale small     # development: 8 surveys, ~200 MiB
    .venv/bin/python benchmarks/scale_bench.py --scale full      # the issue's: 64 surveys, >= 3 GiB

What runs, as on AWS but on loopback: a loopback BLS (flows/devkit/upstream_server.py, its own
process, `GeneratedFile` bodies streamed without being held) whose root lists every survey; moto S3
(its own process, every request counted by operation); a real `prefect server` holding the two BLS
politeness limits (as Pulumi creates them); the `aws-lambda` pool with the function's concurrency
as the stack sets it (pool limit = runs, reserved concurrency = runs + 3); `prefect deploy --all`
from prefect.yaml; `prefect worker start --type aws-lambda` (its own process); and the Lambda
stand-in (tests/lambda_emulator.py: one fresh process per invocation, killed at a SHORT timeout,
default 60 s, so that mirrors really continue in follow-up runs; failed invocations go to an
on-failure queue the worker reads back).

Day 1 runs the `ingest` deployment with QUEST_BLS_SURVEYS=all and drives nothing itself: it
watches the runs the ingest fans out (one `mirror-survey` per changed survey, follow-ups for the
ones that end "partial: ...") until every run is final. Then a raw httpx->S3 copy of the same
bytes at the same concurrency (no politeness limits: the ceiling), and day 2, a no-change day.

It prints: wall time and throughput beside the raw copy; invocations and GB-seconds (duration x
configured memory, as Lambda bills); the upstream's peak requests/s and concurrency beside the
limits; the no-change day's request and invocation counts; final run states (Crashed/Failed
loudly); and a cost table extrapolated to the real `time.series/` (an estimate: see --real-*).
This machine has 2 cores shared with other work: times and CPU figures are noisy.
"""

from __future__ import annotations

import argparse
import collections
import io
import json
import math
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from child import Child  # benchmarks/ is the script's own folder, first on sys.path

MIB = 1024 * 1024
GIB = 1024 * MIB
BUCKET = "quest-scale"
POOL = "quest-lambda"  # prefect.yaml's pool name
FUNCTION = "quest-runner"
ROOT = Path(__file__).resolve().parents[1]
FINAL = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")

# AWS list prices, us-east-1, from aws.amazon.com/lambda/pricing and aws.amazon.com/s3/pricing
# (x86 Lambda, S3 Standard; the figures AWS publishes as of 2025; check them before relying).
PRICES_AS_OF = "AWS list prices, us-east-1, as published in 2025"
LAMBDA_GB_SECOND = 0.0000166667
LAMBDA_REQUEST = 0.20 / 1_000_000
S3_TIER1_REQUEST = 0.005 / 1000  # PUT, COPY, POST, LIST
S3_TIER2_REQUEST = 0.0004 / 1000  # GET, HEAD (and all other requests)
S3_GB_MONTH = 0.023  # S3 Standard, first 50 TB

# Survey names shaped like BLS's two-letter codes (synthetic content; `pr` carries the sample data
# the reports read). The big files go to the first ones, as BLS's biggest surveys hold a few.
NAMES = [
    "pr",
    "la",
    "ce",
    "oe",
    "sm",
    "ln",
    "cu",
    "jt",
    "ap",
    "bd",
    "bg",
    "bp",
    "cc",
    "cd",
    "cf",
    "ch",
    "ci",
    "cm",
    "cs",
    "cw",
    "cx",
    "ec",
    "ee",
    "ei",
    "en",
    "ep",
    "fi",
    "fm",
    "fw",
    "gg",
    "gp",
    "hc",
    "ii",
    "in",
    "ip",
    "is",
    "jl",
    "le",
    "li",
    "lu",
    "md",
    "mp",
    "mu",
    "nb",
    "nc",
    "nd",
    "nw",
    "or",
    "pc",
    "pd",
    "sa",
    "su",
    "tu",
    "wd",
    "wm",
    "ws",
    "wp",
    "eb",
    "ml",
    "ku",
    "ka",
    "kb",
    "ki",
    "kn",
]
SCALES: dict[str, dict[str, Any]] = {
    # ~200 MiB: one survey with a big file and a medium one, so continuation shows up.
    "small": {"surveys": 8, "big_mib": [96], "medium": 4, "medium_mib": (12, 24), "min_total": 180 * MIB},
    # >= 3 GiB: eight files of 100-500 MB, two dozen of 8-48 MiB, the rest small.
    "full": {
        "surveys": 64,
        "big_mib": [120, 160, 200, 256, 300, 360, 420, 480],
        "medium": 24,
        "medium_mib": (8, 48),
        "min_total": 3 * GIB,
    },
}
SMALL_SUFFIXES = ("series", "footnote", "period", "txt", "data.0.Current", "data.1.AllData", "area")

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.update(
    AWS_ACCESS_KEY_ID="bench",
    AWS_SECRET_ACCESS_KEY="bench",
    AWS_DEFAULT_REGION="us-east-1",
    AWS_REGION="us-east-1",
)


# --------------------------------------------------------------------------- the synthetic root


def survey_mix(scale: str, seed: int = 12) -> dict[str, dict[str, Any]]:
    """The surveys and their files: mostly small (2 KiB-4 MiB, log-uniform), a few big, some medium."""
    from flows.devkit.samples import sample_bls_survey
    from flows.devkit.upstream_server import GeneratedFile

    spec = SCALES[scale]
    rng = random.Random(seed)
    names = NAMES[: spec["surveys"]] + [f"x{i:02d}" for i in range(max(0, spec["surveys"] - len(NAMES)))]
    surveys: dict[str, dict[str, Any]] = {}
    n = 0

    def generated(size: int) -> Any:
        nonlocal n
        n += 1
        return GeneratedFile(size, seed=n)

    for survey in names:
        files: dict[str, Any] = dict(sample_bls_survey("pr", seed=1)) if survey == "pr" else {}
        for suffix in SMALL_SUFFIXES[: rng.randint(4, len(SMALL_SUFFIXES))]:
            files.setdefault(
                f"{survey}.{suffix}", generated(int(2048 * math.exp(rng.uniform(0, math.log(2048)))))
            )
        surveys[survey] = files
    for i, mib in enumerate(spec["big_mib"]):
        survey = names[1 + i % (len(names) - 1)]  # not pr: the reports' survey stays quick
        surveys[survey][f"{survey}.data.1.AllData"] = generated(mib * MIB)
    medium = 0
    while medium < spec["medium"] or _total(surveys) < spec["min_total"]:
        survey = names[1 + rng.randrange(len(names) - 1)]
        surveys[survey][f"{survey}.data.{2 + medium}.Part"] = generated(
            rng.randint(*spec["medium_mib"]) * MIB
        )
        medium += 1
    return surveys


def _size(body: Any) -> int:
    return len(body) if isinstance(body, bytes) else int(body.size)


def _total(surveys: dict[str, dict[str, Any]]) -> int:
    return sum(_size(b) for files in surveys.values() for b in files.values())


# --------------------------------------------------------------------------- child processes


def child_upstream(scale: str) -> None:
    """The loopback BLS in its own process. Prints its base URL, then answers one JSON line per
    command on stdin (`clear`, `stats`, `touch SURVEY FILE`) until stdin closes."""
    from flows.devkit.samples import population_body
    from flows.devkit.upstream_server import UpstreamServer

    with UpstreamServer(survey_mix(scale), population_body()) as up:
        print(json.dumps({"bls": up.bls_base_url, "population": up.population_url}), flush=True)
        for line in sys.stdin:
            words = line.split()
            if not words:
                continue
            if words[0] == "clear":
                up.clear_log()
                answer: dict[str, Any] = {}
            elif words[0] == "touch":
                up.touch_file(words[1], words[2])
                answer = {}
            else:
                files = up.file_gets()
                answer = {
                    "root_gets": len(up.root_gets()),
                    "listing_gets": len(up.listing_gets()),
                    "file_gets": len(files),
                    "file_bytes": sum(r.bytes_sent for r in files),
                    "not_ok": collections.Counter(str(r.status) for r in up.requests if r.status >= 400),
                    "peak_rate": up.peak_rate(),
                    "peak_concurrency": up.peak_concurrency(),
                }
            print(json.dumps(answer), flush=True)


def _s3_operation(method: str, path: str, query: str, copy: bool) -> tuple[str, str]:
    """(operation, area) of one path-style S3 request; area: bls, population, internal, raw, other."""
    from flows.io.store import is_internal_key

    bucket, _, key = path.lstrip("/").partition("/")
    if bucket != BUCKET:
        return f"{method} (SQS, Logs)", "other"
    if not key:
        op = {"GET": "ListObjects", "POST": "DeleteObjects"}.get(method, f"{method} bucket")
    elif method == "PUT":
        op = "UploadPart" if "partNumber=" in query else ("CopyObject" if copy else "PutObject")
    elif method == "POST":
        op = "CreateMultipartUpload" if "uploads" in query.split("&") else "CompleteMultipartUpload"
    else:
        op = {"GET": "GetObject", "HEAD": "HeadObject", "DELETE": "DeleteObject"}.get(method, method)
    if key and is_internal_key(key):
        area = "internal"
    elif key.startswith("data/bls/") or "prefix=data%2Fbls" in query or "prefix=data/bls" in query:
        area = "bls"
    elif key.startswith("data/population/"):
        area = "population"
    elif key.startswith("raw/"):
        area = "raw"
    else:
        area = "other"
    return op, area


def child_moto() -> None:
    """moto's server in its own process, counting every request by S3 operation and key area.
    Prints its port, then answers `clear` / `stats` lines on stdin until stdin closes."""
    import logging

    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    counts: collections.Counter[str] = collections.Counter()
    lock = threading.Lock()
    app = DomainDispatcherApplication(create_backend_app)

    def counting(environ: dict[str, Any], start_response: Any) -> Any:
        op, area = _s3_operation(
            environ["REQUEST_METHOD"],
            environ.get("PATH_INFO", ""),
            environ.get("QUERY_STRING", ""),
            "HTTP_X_AMZ_COPY_SOURCE" in environ,
        )
        with lock:
            counts[f"{area} {op}"] += 1
        return app(environ, start_response)

    server = make_server("127.0.0.1", 0, counting, True, request_handler=MotoRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(server.server_address[1], flush=True)
    for line in sys.stdin:
        with lock:
            answer = dict(counts)
            if line.strip() == "clear":
                counts.clear()
        print(json.dumps(answer), flush=True)
    server.shutdown()


# --------------------------------------------------------------------------- raw copy


class _ResponseReader(io.RawIOBase):
    """A file-like view of an httpx streaming response, for boto3's upload_fileobj."""

    def __init__(self, chunks: Any) -> None:
        self._chunks = chunks
        self._buf = b""

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        while not self._buf:
            try:
                self._buf = next(self._chunks)
            except StopIteration:
                return 0
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n


def raw_copy(urls: list[str], s3: Any, concurrency: int) -> float:
    """httpx GET streamed into boto3 upload_fileobj, `concurrency` files at once, no limits; seconds."""
    import httpx
    from boto3.s3.transfer import TransferConfig

    config = TransferConfig(multipart_threshold=8 * MIB, multipart_chunksize=8 * MIB, use_threads=False)
    start = time.perf_counter()
    with httpx.Client(headers={"Accept-Encoding": "identity"}, timeout=300) as http:

        def one(url: str) -> None:
            with http.stream("GET", url) as resp:
                resp.raise_for_status()
                reader = io.BufferedReader(_ResponseReader(resp.iter_bytes(MIB)), MIB)
                key = "raw/" + url.split("/pub/time.series/", 1)[1]
                s3.upload_fileobj(reader, BUCKET, key, Config=config)

        with ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(one, urls))
    return time.perf_counter() - start


def delete_prefix(s3: Any, prefix: str) -> None:
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if keys:
            s3.delete_objects(Bucket=BUCKET, Delete={"Objects": keys})


# --------------------------------------------------------------------------- the pool


@dataclass
class Day:
    """What one daily ingest did, from Prefect, the stand-in, the upstream and moto."""

    seconds: float
    ingest: Any
    runs: list[Any]
    invocations: list[Any]
    upstream: dict[str, Any]
    s3: dict[str, int]
    stalled: bool

    def gb_seconds(self, memory_mb: int) -> float:
        billed = sum(
            math.ceil((a.ended_at - a.started_at) * 1000) / 1000
            for c in self.invocations
            for a in c.attempts
            if a.ended_at is not None
        )
        return billed * memory_mb / 1024

    def attempts(self) -> int:
        return sum(len(c.attempts) for c in self.invocations)


def _all_runs(client: Any) -> list[Any]:
    runs, offset = [], 0
    while True:
        page = client.read_flow_runs(limit=200, offset=offset)
        runs += page
        if len(page) < 200:
            return runs
        offset += 200


def run_day(args: argparse.Namespace, api_url: str, lam: Any, up: Child, moto: Child, label: str) -> Day:
    """Start one `ingest` deployment run and watch (the worker process submits) until every run it
    caused is final: its follow-up ingests too, so the next day never overlaps this one."""
    from prefect.client.orchestration import SyncPrefectClient

    from flows.core.names import INGEST_CONTINUATION_TAG

    up.ask("clear")
    moto.ask("clear")
    invocations_before = len(lam.invocations)
    with SyncPrefectClient(api_url) as client:
        before = {r.id for r in _all_runs(client)}
        deployment = client.read_deployment_by_name("ingest/ingest")
        t0 = time.perf_counter()
        ingest_id = client.create_flow_run_from_deployment(deployment.id).id
        last_print, stalled = 0.0, False
        while True:
            time.sleep(1.0)
            # The day's runs: the ingest, its follow-up ingests (the continuation tag), the mirror
            # runs and their follow-ups; not the cron's next days (ingest runs without the tag).
            runs = [
                r
                for r in _all_runs(client)
                if r.id not in before
                and (
                    r.id == ingest_id or r.deployment_id != deployment.id or INGEST_CONTINUATION_TAG in r.tags
                )
            ]
            pool_runs = [r for r in runs if r.deployment_id is not None]
            done = bool(pool_runs) and all(r.state and r.state.type.value in FINAL for r in pool_runs)
            elapsed = time.perf_counter() - t0
            if done or elapsed - last_print >= args.progress_seconds:
                last_print = elapsed
                states = collections.Counter(r.state.name if r.state else "?" for r in pool_runs)
                running = sum(1 for c in lam.invocations[invocations_before:] if not c.done.is_set())
                print(
                    f"  [{label} {elapsed:6.0f} s] pool runs {dict(sorted(states.items()))}; "
                    f"invocations {len(lam.invocations) - invocations_before} ({running} running)",
                    flush=True,
                )
            if done:
                break
            if elapsed > args.day_timeout:
                stalled = True
                break
        seconds = time.perf_counter() - t0
        ingest = client.read_flow_run(ingest_id)
    lam.wait_idle(timeout=args.timeout + 30, raise_on_timeout=False)
    return Day(
        seconds=seconds,
        ingest=ingest,
        runs=runs,
        invocations=lam.invocations[invocations_before:],
        upstream=up.ask("stats"),
        s3=moto.ask("stats"),
        stalled=stalled,
    )


def print_runs(day: Day, lam: Any) -> list[Any]:
    """Runs per flow and final state; partial messages; Crashed/Failed loudly. Returns the bad ones."""
    by_state = collections.Counter(
        ("deployment run" if r.deployment_id else "subflow", r.state.name if r.state else "?")
        for r in day.runs
    )
    print(
        f"  flow runs: {len(day.runs)}: "
        + ", ".join(f"{k[0]} {k[1]}: {v}" for k, v in sorted(by_state.items()))
    )
    print(f"  ingest: {day.ingest.state.name}: {(day.ingest.state.message or '')[:400]}")
    partial = [r for r in day.runs if (r.state and (r.state.message or "").startswith("partial:"))]
    for run in partial[:12]:
        print(f"  partial: {run.name} {run.parameters.get('survey')}: {run.state.message}")
    if len(partial) > 12:
        print(f"  ... {len(partial) - 12} more partial runs")
    bad = [r for r in day.runs if r.state is None or r.state.type.value not in ("COMPLETED",)]
    if bad or day.stalled:
        print(
            "\n  !!!!!!!! FINDING: runs that did not complete" + (" (the day STALLED)" if day.stalled else "")
        )
        for run in bad:
            state = run.state.name if run.state else "no state"
            print(
                f"  !!! {run.name} ({run.parameters.get('survey', '')}): {state}:"
                f" {run.state and run.state.message}"
            )
            calls = [c for c in lam.invocations if c.event.get("flow_run_id") == str(run.id)]
            for call in calls[-1:]:
                print(f"      last invocation {call.request_id}: {call.outcome}; log tail:")
                print("      " + call.logs[-1500:].replace("\n", "\n      "))
    return bad


def s3_line(counts: dict[str, int], area: str | None = None) -> str:
    picked = {k: v for k, v in counts.items() if area is None or k.startswith(area + " ")}
    return ", ".join(f"{k}: {v}" for k, v in sorted(picked.items())) or "none"


def s3_tiers(
    counts: dict[str, int], areas: tuple[str, ...] = ("bls", "population", "internal", "other")
) -> tuple[int, int]:
    """(tier-1, tier-2) billable requests: PUT/COPY/POST/LIST, GET/HEAD; DELETE is free."""
    tier1 = tier2 = 0
    for key, n in counts.items():
        area, op = key.split(" ", 1)
        if area not in areas or op.startswith(("DeleteObject", "GET (not", "PUT (not", "POST (not")):
            continue
        if op in ("GetObject", "HeadObject") or op.startswith("HEAD"):
            tier2 += n
        else:
            tier1 += n
    return tier1, tier2


WRITES = ("PutObject", "UploadPart", "CopyObject", "CompleteMultipartUpload", "CreateMultipartUpload")


def print_day(day: Day, args: argparse.Namespace) -> None:
    """A day's figures: time, invocations, GB-s, what the upstream and S3 saw."""
    outcomes = dict(collections.Counter(c.outcome for c in day.invocations))
    print(f"  wall {day.seconds:.1f} s (ingest created -> every run of the day final)")
    gbs = day.gb_seconds(args.memory_mb)
    print(f"  invocations {day.attempts()}, GB-s {gbs:,.1f} at {args.memory_mb} MB; outcomes {outcomes}")
    u = day.upstream
    print(
        f"  upstream: peak {u['peak_rate']} requests/s (limit R={args.rps:g}), peak concurrency"
        f" {u['peak_concurrency']} (limit N={args.max_concurrent})"
    )
    print(
        f"  upstream: root GETs {u['root_gets']}, listing GETs {u['listing_gets']}, file GETs"
        f" {u['file_gets']} ({u['file_bytes'] / MIB:,.0f} MiB sent), errors {u['not_ok'] or 'none'}"
    )
    requests = u["root_gets"] + u["listing_gets"] + u["file_gets"]
    print(f"  effective BLS request rate over the day: {requests / day.seconds:.2f}/s (limit {args.rps:g}/s)")
    ends = {str(r.id): r.end_time.timestamp() for r in day.runs if r.end_time is not None}
    tails = sorted(
        c.attempts[-1].ended_at - ends[c.event["flow_run_id"]]
        for c in day.invocations
        if c.outcome == "ok" and c.attempts and c.attempts[-1].ended_at and c.event.get("flow_run_id") in ends
    )
    if tails:
        print(
            f"  billed after the run's final state (flush, exit): median {tails[len(tails) // 2]:.1f} s,"
            f" max {tails[-1]:.1f} s over {len(tails)} invocations"
        )
    if u["peak_concurrency"] > args.max_concurrent or u["peak_rate"] > math.ceil(args.rps):
        print("  !!!!!!!! FINDING: the upstream saw more than the limits allow")
    print(f"  S3 under bls/: {s3_line(day.s3, 'bls')}")
    others = {k: v for k, v in day.s3.items() if not k.startswith(("bls ", "raw ", "other "))}
    print(f"  S3 elsewhere: {s3_line(others)}")


def stored_keys(s3: Any) -> set[str]:
    from flows.io.store import is_internal_key

    keys = set()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix="data/bls/"):
        keys |= {o["Key"] for o in page.get("Contents", []) if not is_internal_key(o["Key"])}
    return keys


def merged(days: list[Day]) -> Day:
    """Several days as one: times, invocations and counts added, peaks the highest."""
    s3: collections.Counter[str] = collections.Counter()
    upstream: dict[str, Any] = {}
    for day in days:
        s3.update(day.s3)
        for key, value in day.upstream.items():
            if key.startswith("peak"):
                upstream[key] = max(upstream.get(key, 0), value)
            elif isinstance(value, dict):
                upstream[key] = {**upstream.get(key, {}), **value}
            else:
                upstream[key] = upstream.get(key, 0) + value
    return Day(
        seconds=sum(d.seconds for d in days),
        ingest=days[-1].ingest,
        runs=[r for d in days for r in d.runs],
        invocations=[c for d in days for c in d.invocations],
        upstream=upstream,
        s3=dict(s3),
        stalled=any(d.stalled for d in days),
    )


def deploy(api_url: str, lam: Any, moto_url: str, args: argparse.Namespace, home: Path) -> str:
    """The pool as the stack makes it (concurrency limit, on-failure queue), the BLS limits, and
    `prefect deploy --all` from prefect.yaml. Returns the on-failure queue URL."""
    import boto3
    import httpx
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.actions import WorkPoolCreate

    from flows.core.names import BLS_CONCURRENCY_LIMIT, BLS_RATE_LIMIT
    from flows.core.pacing import pacing_for
    from flows.worker import base_job_template_for

    sqs = boto3.client("sqs", endpoint_url=moto_url, region_name="us-east-1")
    queue_url = sqs.create_queue(QueueName="quest-invoke-failures")["QueueUrl"]
    for body in (
        {"name": BLS_CONCURRENCY_LIMIT, "limit": args.max_concurrent},
        {"name": BLS_RATE_LIMIT, "limit": pacing_for(args.rps).slots},  # the pacer, as Pulumi makes it
    ):
        httpx.post(f"{api_url}/v2/concurrency_limits/", json=body).raise_for_status()
    template = base_job_template_for(
        lam.function_arn(FUNCTION),
        region="us-east-1",
        endpoint_url=lam.endpoint_url,
        invoke_failure_queue_url=queue_url,
    )
    with SyncPrefectClient(api_url) as client:
        client.create_work_pool(
            WorkPoolCreate(
                name=POOL, type="aws-lambda", base_job_template=template, concurrency_limit=args.max_runs
            )
        )
    out = subprocess.run(
        [str(Path(sys.executable).with_name("prefect")), "--no-prompt", "deploy", "--all"],
        cwd=ROOT,
        env=_quiet_env(home / "deploy", PREFECT_API_URL=api_url),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"prefect deploy --all failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return queue_url


def _quiet_env(home: Path, **extra: str) -> dict[str, str]:
    from lambda_pool import quiet_env

    home.mkdir(parents=True, exist_ok=True)
    return quiet_env(home, **extra)


# --------------------------------------------------------------------------- the cost table


def cost_table(
    args: argparse.Namespace, first: Day, quiet: Day, files: int, total: int, surveys: int
) -> None:
    """Extrapolate the measured days to the real time.series/ (the --real-* figures)."""
    real_bytes = args.real_gib * GIB
    file_ratio, byte_ratio, survey_ratio = (
        args.real_files / files,
        real_bytes / total,
        args.real_surveys / surveys,
    )
    mem = args.memory_mb / 1024
    # A first full mirror: duration scales with whichever bound dominates (requests at R/s or bytes);
    # the loopback moves bytes far faster than BLS would, so the byte bound also gets a floor at
    # --real-mbps (transfers alone, concurrency-limited to N streams).
    first_gbs = first.gb_seconds(args.memory_mb) * max(file_ratio, byte_ratio)
    bandwidth_floor = real_bytes / (args.real_mbps * 1e6) * mem
    first_gbs = max(first_gbs, bandwidth_floor)
    first_inv = first.attempts() * max(survey_ratio, byte_ratio)
    t1, t2 = s3_tiers(first.s3)
    parts = sum(v for k, v in first.s3.items() if k.endswith("UploadPart"))
    first_t1 = (t1 - parts) * file_ratio + parts * byte_ratio
    first_t2 = t2 * file_ratio
    quiet_gbs = quiet.gb_seconds(args.memory_mb) * survey_ratio
    q1, q2 = s3_tiers(quiet.s3)
    quiet_t1, quiet_t2 = q1 * survey_ratio, q2 * survey_ratio

    def dollars(gbs: float, inv: float, tier1: float, tier2: float) -> tuple[float, float, float]:
        lam = gbs * LAMBDA_GB_SECOND + inv * LAMBDA_REQUEST
        s3 = tier1 * S3_TIER1_REQUEST + tier2 * S3_TIER2_REQUEST
        return lam, s3, lam + s3

    rows = [
        ("first full mirror (once)", first_gbs, first_inv, first_t1, first_t2),
        ("no-change day", quiet_gbs, quiet.attempts(), quiet_t1, quiet_t2),
        ("30 no-change days", quiet_gbs * 30, quiet.attempts() * 30, quiet_t1 * 30, quiet_t2 * 30),
    ]
    print(f"\n[cost, extrapolated to the real time.series/ ({PRICES_AS_OF})]")
    print(
        f"  assumed real size: {args.real_surveys} surveys, {args.real_files} files, {args.real_gib:g} GiB"
        " -- an ESTIMATE, not a measured figure (BLS publishes no total); measure it with"
        " `--measure-root https://download.bls.gov/pub/time.series/` (1 root GET + 1 listing GET per"
        " survey, polite: QUEST_CONTACT required), then pass --real-surveys/--real-files/--real-gib"
    )
    print(
        f"  prices: Lambda ${LAMBDA_GB_SECOND:.10f}/GB-s (x86), ${LAMBDA_REQUEST * 1e6:.2f}/1M requests; S3"
        f" Standard ${S3_TIER1_REQUEST * 1000:.4f}/1k PUT/COPY/POST/LIST, ${S3_TIER2_REQUEST * 1000:.4f}/1k"
        f" GET/HEAD, ${S3_GB_MONTH}/GB-month; no free tier applied; data in to AWS is free"
    )
    print(
        f"  memory {args.memory_mb} MB; first mirror scaled by max(files x{file_ratio:.1f},"
        f" bytes x{byte_ratio:.1f}),"
    )
    print(
        f"  floored at {args.real_gib:g} GiB / {args.real_mbps:g} MB/s from BLS"
        f" ({bandwidth_floor:,.0f} GB-s);"
        f" no-change day scaled by surveys x{survey_ratio:.1f}"
    )
    print(
        f"  {'':28} {'GB-s':>10} {'invocations':>12} {'S3 tier1':>10} {'S3 tier2':>10}"
        f" {'Lambda $':>9} {'S3 $':>8} {'total $':>8}"
    )
    for name, gbs, inv, tier1, tier2 in rows:
        lam_d, s3_d, tot = dollars(gbs, inv, tier1, tier2)
        print(
            f"  {name:28} {gbs:10,.0f} {inv:12,.0f} {tier1:10,.0f} {tier2:10,.0f}"
            f" {lam_d:9.4f} {s3_d:8.4f} {tot:8.4f}"
        )
    print(
        f"  storage: {args.real_gib * GIB / 1e9:.1f} GB x ${S3_GB_MONTH} ="
        f" ${args.real_gib * GIB / 1e9 * S3_GB_MONTH:.2f}/month (plus old versions the lifecycle keeps)"
    )
    print(
        "  (a day with changes costs the no-change day plus a mirror run per changed survey:"
        " about the first-mirror row times the share of bytes that changed)"
    )


def measure_root(url: str) -> int:
    """Sum the real root's listings (1 root GET + 1 GET per survey, through the project's polite client)."""
    import logging

    from flows.core.discovery import parse_root_listing
    from flows.io.http import make_client
    from flows.mirror import list_survey
    from flows.settings import Settings

    settings = Settings(bls_base_url=url)
    settings.check_contacts(["pr"])
    logger = logging.getLogger("measure")
    with make_client(settings, url) as client:
        root = client.get(url)
        root.raise_for_status()
        surveys = parse_root_listing(root.text, url).surveys
        files = total = 0
        for survey in surveys:
            listing = list_survey(settings.survey_url(survey), client, settings, logger)
            files += len(listing.entries)
            size = sum(e.size for e in listing.entries)
            total += size
            print(f"  {survey:6} {len(listing.entries):5} files {size / MIB:10.1f} MiB", flush=True)
    print(f"{len(surveys)} surveys, {files} files, {total / GIB:.2f} GiB")
    return 0


# --------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--scale", choices=sorted(SCALES), default="small")
    parser.add_argument("--timeout", type=float, default=60, help="the function's timeout, s")
    parser.add_argument("--memory-mb", type=int, default=1024, help="the function's memory (GB-s)")
    parser.add_argument("--margin", type=float, default=12, help="QUEST_CONTINUATION_MARGIN_SECONDS")
    parser.add_argument("--max-runs", type=int, default=4, help="pool concurrency limit (reserved = +3)")
    parser.add_argument("--concurrency", type=int, default=4, help="QUEST_CONCURRENCY per run")
    parser.add_argument("--max-concurrent", type=int, help="N: BLS requests at once (default: settings)")
    parser.add_argument("--rps", type=float, help="R: BLS requests per second (default: settings)")
    parser.add_argument("--surveys", default="all", help="QUEST_BLS_SURVEYS (all = discovery)")
    parser.add_argument("--day-timeout", type=float, default=3600)
    parser.add_argument("--progress-seconds", type=float, default=20)
    parser.add_argument("--skip-raw", action="store_true")
    parser.add_argument(
        "--database-url",
        help="the Prefect server's database (default: SQLite in the bench's folder), e.g. "
        "postgresql+asyncpg://prefect:prefect@127.0.0.1/prefect for an empty Postgres database, as "
        "a production server has",
    )
    parser.add_argument("--catch-up", type=int, default=3, help="days to finish a first mirror left undone")
    parser.add_argument("--real-surveys", type=int, default=70)
    parser.add_argument("--real-files", type=int, default=2500)
    parser.add_argument("--real-gib", type=float, default=25.0)
    parser.add_argument("--real-mbps", type=float, default=20.0, help="assumed BLS->Lambda MB/s, all streams")
    parser.add_argument("--measure-root", metavar="URL", help="only sum a real root's listings, then exit")
    args = parser.parse_args()

    sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
    if args.measure_root:
        return measure_root(args.measure_root)
    from flows.core.names import ENV_FUNCTION_TIMEOUT_SECONDS
    from flows.settings import Settings

    defaults = Settings()
    args.max_concurrent = args.max_concurrent or defaults.bls_max_concurrent_requests
    args.rps = args.rps or defaults.bls_requests_per_second

    import boto3
    from lambda_emulator import LambdaEmulator
    from lambda_pool import prefect_server

    mix = survey_mix(args.scale)
    total = _total(mix)
    files = sum(len(f) for f in mix.values())
    big = sorted((_size(b) for f in mix.values() for b in f.values() if _size(b) >= 100 * MIB), reverse=True)
    print(
        f"scale {args.scale}: {len(mix)} surveys, {files} files, {total / MIB:,.0f} MiB"
        f" ({len(big)} files >= 100 MiB: {', '.join(f'{b // MIB}' for b in big)} MiB)"
    )
    print(
        f"function: timeout {args.timeout:g} s, memory {args.memory_mb} MB, continuation margin"
        f" {args.margin:g} s; pool limit {args.max_runs} runs (reserved concurrency {args.max_runs + 3});"
        f" {args.concurrency} transfers"
        f" per run; BLS limits N={args.max_concurrent} concurrent, R={args.rps:g}/s"
    )
    print(f"prefect server database: {(args.database_url or 'sqlite').split('://')[0]}")
    print(
        f"machine: {os.cpu_count()} cores shared with other work (load {os.getloadavg()[0]:.1f}):"
        " figures are noisy"
    )

    moto = Child(__file__, "--child-moto")
    moto_url = f"http://127.0.0.1:{moto.first_line}"
    os.environ["AWS_ENDPOINT_URL"] = moto_url
    up = Child(__file__, "--child-upstream", args.scale)
    hello = json.loads(up.first_line)
    bls, population = hello["bls"], hello["population"]
    s3 = boto3.client("s3", endpoint_url=moto_url, region_name="us-east-1")
    s3.create_bucket(Bucket=BUCKET)
    workdir = Path(tempfile.mkdtemp(prefix="scale-bench-"))
    (workdir / "server").mkdir()
    worker: subprocess.Popen[bytes] | None = None
    try:
        with (
            prefect_server(workdir / "server", database_url=args.database_url) as api_url,
            LambdaEmulator(sqs=moto_url, cloudwatch_logs=moto_url) as lam,
        ):
            queue_url = deploy(api_url, lam, moto_url, args, workdir)
            lam.add_function(
                FUNCTION,
                env={
                    "PREFECT_API_URL": api_url,
                    "AWS_ENDPOINT_URL": moto_url,
                    ENV_FUNCTION_TIMEOUT_SECONDS: str(int(args.timeout)),
                    "QUEST_STORE": f"s3://{BUCKET}/data",
                    "QUEST_CONTACT": "bench@example.com",
                    "QUEST_BLS_BASE_URL": bls,
                    "QUEST_POPULATION_URL": population,
                    "QUEST_BLS_SURVEYS": args.surveys,
                    "QUEST_CONCURRENCY": str(args.concurrency),
                    "QUEST_CONTINUATION_MARGIN_SECONDS": str(args.margin),
                    "QUEST_BLS_MAX_CONCURRENT_REQUESTS": str(args.max_concurrent),
                    "QUEST_BLS_REQUESTS_PER_SECOND": str(args.rps),
                    "PREFECT_LOGGING_LEVEL": "INFO",
                },
                timeout_seconds=args.timeout,
                memory_mb=args.memory_mb,
                reserved_concurrency=args.max_runs + 3,
                maximum_retry_attempts=0,
                on_failure_queue_url=queue_url,
            )
            worker_log = open(workdir / "worker.log", "wb")  # noqa: SIM115 - closed with the process
            worker = subprocess.Popen(
                [
                    str(Path(sys.executable).with_name("prefect")),
                    "worker",
                    "start",
                    "--pool",
                    POOL,
                    "--type",
                    "aws-lambda",
                ],
                cwd=ROOT,
                env=_quiet_env(
                    workdir / "worker",
                    PREFECT_API_URL=api_url,
                    PREFECT_WORKER_QUERY_SECONDS="2",
                    PREFECT_WORKER_PREFETCH_SECONDS="5",
                    AWS_ENDPOINT_URL=moto_url,
                    AWS_ACCESS_KEY_ID="bench",
                    AWS_SECRET_ACCESS_KEY="bench",
                    AWS_DEFAULT_REGION="us-east-1",
                ),
                stdout=worker_log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            print(f"prefect server {api_url}; worker log {workdir / 'worker.log'}")
            print(f"moto {moto_url}; BLS {bls}\n")
            expected = {f"data/bls/{s}/{n}" for s, f in mix.items() for n in f}
            days: list[Day] = []
            bad: list[Any] = []
            for number in range(1, args.catch_up + 2):
                title = "first mirror of every survey" if number == 1 else "catch-up: what day 1 left"
                print(f"[day {number}: {title}]")
                day = run_day(args, api_url, lam, up, moto, f"day {number}")
                days.append(day)
                bad += print_runs(day, lam)
                print_day(day, args)
                missing = expected - stored_keys(s3)
                if not missing:
                    break
                surveys_left = sorted({k.split("/")[2] for k in missing})
                print(
                    f"  !!! FINDING: after day {number}, {len(missing)} files of {surveys_left}"
                    " are not mirrored\n"
                )
            first = merged(days)
            mb = total / 1e6
            print(f"\n[first mirror, {len(days)} day(s) until the store held every file]")
            print(f"  wall {first.seconds:.1f} s: {mb / first.seconds:.1f} MB/s for {total / MIB:,.0f} MiB")
            print(f"  invocations {first.attempts()}, GB-s {first.gb_seconds(args.memory_mb):,.1f}")
            u = first.upstream
            polite_floor = (u["root_gets"] + u["listing_gets"] + u["file_gets"]) / args.rps
            print(
                f"  polite floor: {polite_floor:.1f} s for its {u['file_gets']} file GETs etc."
                f" at R={args.rps:g}/s"
            )
            if not args.skip_raw:
                urls = [f"{bls}{s}/{name}" for s, f in sorted(mix.items()) for name in sorted(f)]
                raw = raw_copy(urls, s3, args.max_concurrent)
                delete_prefix(s3, "raw/")
                print(f"  raw httpx->S3 copy, same {files} files, {args.max_concurrent} at once, no limits:")
                print(
                    f"    {raw:.1f} s, {mb / raw:.1f} MB/s: the pool's throughput is"
                    f" {raw / first.seconds:.3f}x"
                )
                floor = max(raw, polite_floor)
                print(f"    beside max(raw, polite floor) = {floor:.1f} s: {floor / first.seconds:.2f}x")

            print("\n[no-change day]")
            quiet = run_day(args, api_url, lam, up, moto, "no change")
            bad += print_runs(quiet, lam)
            print_day(quiet, args)
            q = quiet.upstream
            puts = sum(
                v for k, v in quiet.s3.items() if k.startswith("bls ") and k.split(" ", 1)[1] in WRITES
            )
            print(
                f"  targets: invocations {quiet.attempts()} (1); root GETs {q['root_gets']} (1), listing GETs"
                f" {q['listing_gets']} ({len(mix)}), file GETs {q['file_gets']} (0),"
                f" PUTs under bls/ {puts} (0)"
            )
            cost_table(args, first, quiet, files, total, len(mix))
            if bad:
                print(f"\n!!!!!!!! {len(bad)} run(s) ended other than COMPLETED: see above")
    finally:
        if worker is not None:
            worker.terminate()
            try:
                worker.wait(timeout=20)
            except subprocess.TimeoutExpired:
                worker.kill()
        up.close()
        moto.close()
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child-moto":
        sys.path.insert(0, str(ROOT))
        child_moto()
    elif len(sys.argv) > 1 and sys.argv[1] == "--child-upstream":
        sys.path.insert(0, str(ROOT))
        child_upstream(sys.argv[2])
    else:
        sys.exit(main())
