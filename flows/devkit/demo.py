"""`quest demo`: the whole event-driven chain offline on loopback, in well under a minute.

A loopback HTTP server plays BLS and DataUSA with the project's generated samples; moto's server
plays S3 + SQS with the Pulumi program's wiring (`flows/devkit/emulator.py`); the ingest flow mirrors and
snapshots into the emulated bucket; S3 notifies the queue; the consumer (the same logic as the
Lambda SQS path) runs the reports flow. Flows report to `PREFECT_API_URL` when set, else to
Prefect's ephemeral API. Everything started here is stopped here, and the environment is restored.

With an endpoint (`quest demo --endpoint-url URL`, or `QUEST_DEMO_ENDPOINT_URL`), S3 + SQS are the
user's own server instead of moto's (LocalStack: real bucket notifications); the demo wires a bucket
and queues of its own there and removes them at the end.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from flows.core import names
from flows.core.errors import QuestError
from flows.io.environ import patched_environ

DEFAULT_OUTPUT_DIR = "demo-output"
DEFAULT_TIMEOUT_SECONDS = 45.0
ENDPOINT_VAR = "QUEST_DEMO_ENDPOINT_URL"  # S3 + SQS the user runs (LocalStack); unset: moto, started here
EPHEMERAL_TIMEOUT_VAR = "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"
ANALYTICS_VAR = "PREFECT_SERVER_ANALYTICS_ENABLED"
# Variables a user's shell may carry that must not leak into the demo's emulated AWS.
_UNSET = (
    "AWS_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
)


@dataclass(frozen=True)
class DemoResult:
    result: dict[str, Any]  # the contract object, as `quest reports --json` prints it
    location: str  # the reports' prefix inside the (now stopped) emulated bucket
    output_dir: Path  # the local copy of the report files
    files: tuple[str, ...]
    put_to_reports_seconds: float | None  # snapshot PUT (S3 eventTime) → report objects written
    total_seconds: float
    prefect_api: str
    endpoint_url: str | None = None  # the user's S3 + SQS endpoint; None: moto's, started and stopped here


@contextlib.contextmanager
def quiet_loggers(*names_: str, level: int = logging.WARNING) -> Iterator[None]:
    """moto's server logs every request through werkzeug; the demo prints its own story."""
    loggers = [logging.getLogger(n) for n in names_]
    saved = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(level)
    try:
        yield
    finally:
        for lg, lvl in zip(loggers, saved, strict=True):
            lg.setLevel(lvl)


def _prefect_api() -> str:
    from prefect.settings import get_current_settings

    url = get_current_settings().api.url
    if url:
        return str(url)
    return "Prefect's ephemeral API (for the UI: `prefect server start`, then set PREFECT_API_URL)"


def _wait_for_prefect_api() -> None:
    """Start (ephemeral) or reach the Prefect API now: on a busy machine that takes tens of seconds."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        problem = client.api_healthcheck()
    if problem is not None:
        raise QuestError(f"the Prefect API is not reachable: {type(problem).__name__}: {problem}")


def _epoch(iso: str) -> float | None:
    try:
        return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def run_demo(
    output_dir: str | Path = DEFAULT_OUTPUT_DIR,
    say: Callable[[str], None] = print,
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
    endpoint_url: str | None = None,
) -> DemoResult:
    """Run the chain; raise QuestError when no report appears within `timeout_seconds`.

    `endpoint_url`: an S3 + SQS server to wire instead of starting moto's (see the module)."""
    from flows.devkit.emulator import LocalAws
    from flows.devkit.samples import sample_upstream
    from flows.devkit.upstream_server import UpstreamServer
    from flows.io.store import open_store
    from flows.runtime.sqs import ConsumeStats, RoundResult, consume
    from flows.settings import Settings

    started = time.monotonic()
    surveys, population = sample_upstream(seed=0)
    with contextlib.ExitStack() as stack:
        # Prefect reads its settings when first imported: give a busy machine time to start the
        # ephemeral API (default 20 s) before anything here imports Prefect.
        # The demo is offline by design: the ephemeral server's analytics would log an ERROR for
        # each attempt to reach Prefect's telemetry host. A user's own setting wins.
        defaults = {EPHEMERAL_TIMEOUT_VAR: "50", ANALYTICS_VAR: "false"}
        missing = {k: v for k, v in defaults.items() if k not in os.environ}
        if missing:
            stack.enter_context(patched_environ(missing))
        prefect_api = _prefect_api()
        stack.enter_context(quiet_loggers("werkzeug"))
        upstream = stack.enter_context(UpstreamServer(surveys, population))
        say(f"upstream (BLS + DataUSA samples) on {upstream.base_url}")
        aws = stack.enter_context(LocalAws(endpoint_url=endpoint_url))
        wiring = aws.wiring
        assert wiring is not None
        where = f"at {aws.endpoint_url} (yours)" if endpoint_url else f"emulator on {aws.endpoint_url}"
        say(f"S3 + SQS {where}: bucket {wiring.bucket}, queue + DLQ, notification")
        env = {
            **aws.env(),
            names.ENV_STORE: f"s3://{wiring.bucket}",
            names.ENV_BLS_BASE_URL: upstream.bls_base_url,
            names.ENV_POPULATION_URL: upstream.population_url,
            names.ENV_BLS_SURVEYS: "pr",
        }
        stack.enter_context(patched_environ(env, unset=_UNSET))
        settings = Settings()
        say(f"Prefect API: {prefect_api}")
        _wait_for_prefect_api()  # the consumer's deadline must not be spent starting Prefect

        done_at: dict[str, float] = {}  # "put" (the snapshot's event time) and "reports" (when done)
        failure: list[BaseException] = []
        stop = threading.Event()

        def on_round(result: RoundResult) -> None:
            if result.outcome is not None and result.outcome.report is not None:
                done_at["reports"] = time.time()
                snap = result.outcome.plan.snapshot
                put = _epoch(snap.event_time) if snap is not None and snap.event_time else None
                if put is not None:
                    done_at["put"] = put
            elif result.outcome is not None and result.outcome.error:
                say(f"consumer: reports run failed: {result.outcome.error}")

        def consumer() -> ConsumeStats | None:
            try:
                return consume(
                    wiring.queue_url,
                    wait_seconds=1,
                    settings=settings,
                    client=aws.client("sqs"),
                    until=lambda stats: bool(stats.reports) or stop.is_set(),
                    deadline_seconds=timeout_seconds,
                    on_round=on_round,
                )
            except BaseException as exc:  # surfaced in the main thread
                failure.append(exc)
                return None

        stats_box: list[ConsumeStats | None] = []
        thread = threading.Thread(
            target=lambda: stats_box.append(consumer()), name="quest-consumer", daemon=True
        )
        thread.start()
        say("consumer: long-polling the queue")

        from flows.ingest import ingest
        from flows.settings import use_settings

        say("ingest flow: mirroring BLS pr and snapshotting the population into the bucket")
        try:
            with use_settings(settings):
                ingest()
        except BaseException:
            stop.set()  # the consumer returns after its current long poll
            thread.join(timeout_seconds)
            raise
        thread.join(timeout_seconds + 25)
        if failure:
            raise QuestError(f"the consumer failed: {failure[0]}") from failure[0]
        stats = stats_box[0] if stats_box else None
        if stats is None or not stats.reports:
            raise QuestError(
                f"no reports run within {timeout_seconds:.0f} s of the snapshot; see the log above"
            )
        report = stats.reports[0]

        store = open_store(f"s3://{wiring.bucket}", client=aws.client("s3"))
        prefix = names.REPORTS_PREFIX + report.location.rstrip("/").rsplit("/", 1)[-1] + "/"
        local = Path(output_dir).resolve() / prefix
        local.mkdir(parents=True, exist_ok=True)
        files = []
        for key in store.list_keys(prefix):
            (local / key[len(prefix) :]).write_bytes(store.read_bytes(key))
            files.append(key[len(prefix) :])
    latency = done_at["reports"] - done_at["put"] if done_at.get("put") else None
    return DemoResult(
        result=report.result,
        location=report.location,
        output_dir=local,
        files=tuple(sorted(files)),
        put_to_reports_seconds=latency,
        total_seconds=time.monotonic() - started,
        prefect_api=prefect_api,
        endpoint_url=endpoint_url,
    )


def print_demo(demo: DemoResult, say: Callable[[str], None] = print) -> None:
    """The three reports as tables, then where everything is."""
    from flows.core.report_format import text_report
    from flows.core.report_maths import DEFAULT_PERIOD, DEFAULT_SERIES_ID

    say("")
    say(text_report(demo.result, DEFAULT_SERIES_ID, DEFAULT_PERIOD))
    say("")
    if demo.endpoint_url:
        say(f"reports written to {demo.location} at {demo.endpoint_url} (removed with the demo's bucket)")
    else:
        say(f"reports written to {demo.location} (emulated bucket, gone with the emulator)")
    say(f"copied to {demo.output_dir}: {', '.join(demo.files)}")
    say(f"flow runs, logs and artifacts: {demo.prefect_api}")
    if demo.put_to_reports_seconds is not None:
        say(f"snapshot PUT -> report objects: {demo.put_to_reports_seconds:.2f} s")
    say(f"demo finished in {demo.total_seconds:.1f} s; servers stopped")
