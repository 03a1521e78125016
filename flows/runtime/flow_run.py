"""Prefect flow runs inside the Lambda function: the other half of the `aws-lambda` work pool.

- `run_flow_run(id, env, context)`: load the run, import its flow from the deployment's entrypoint
  (the code ships in the package, so no pull step runs), execute it in-process, return the final
  state name. A failed flow is a normal return, never an exception: Lambda retries a failed async
  invocation and would run the flow twice. With Lambda's `context` (issue 11): the run's page
  names the request and links its CloudWatch logs; only the invocation the worker invoked starts
  a SCHEDULED/PENDING run, once (`_claim`; a second delivery returns without running); the flow's
  timeout ends DEADLINE_MARGIN_SECONDS before Lambda's deadline and such a run ends CRASHED naming
  the limit; a cancel from the UI stops it mid-run as CANCELLED (flows/runtime/watch.py).
- `poll_work_pool(name)`: one polling round of the `aws-lambda` worker (serverless schedules: the
  function polls its pool every minute instead of an always-on worker).
- `load_prefect_api_key(environ)`: the function's Prefect API key from Secrets Manager, read before
  Prefect loads its settings; the key never travels in a payload or in plain configuration, and
  is only loaded for an https:// (or loopback) PREFECT_API_URL.
- A run's `env` applies only the run settings of flows/run_env.py; every other name is refused
  and logged (on the run's page too), so a run cannot redirect the API, the key or the store.

Prefect and boto3 are imported inside the functions (cold starts; no import-time work).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping, MutableMapping
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any
from uuid import NAMESPACE_URL, UUID, uuid5

from flows.core.errors import FlowRunEntryError
from flows.core.invocation import (
    cancelled_before_start_message,
    cancelled_message,
    limit_message,
    run_timeout,
    start_refusal,
    too_late_message,
    where_the_logs_are,
)
from flows.core.names import CANCEL_CHECK_SECONDS, DEADLINE_MARGIN_SECONDS, ENV_PREFECT_API_KEY_SECRET_ARN
from flows.io.environ import patched_environ
from flows.run_env import Refusal, RunEnv, api_url_problem, filter_run_env

if TYPE_CHECKING:
    from prefect.client.schemas.objects import FlowRun, State
    from prefect.flows import Flow

    from flows.runtime.watch import CancelWatch, Invocation

log = logging.getLogger(__name__)

API_KEY_JSON_FIELDS = ("PREFECT_API_KEY", "api_key", "apiKey")


# --------------------------------------------------------------------------- pure helpers


def module_entrypoint(entrypoint: str | None) -> str:
    """`flows/ingest.py:ingest` → `flows.ingest:ingest`: import from the package, not by file path.

    Importing by module keeps one copy of each module (a file-path load would import the flows a
    second time under a synthetic name) and does not depend on the working directory.
    """
    if not entrypoint or ":" not in entrypoint:
        raise FlowRunEntryError(f"deployment entrypoint {entrypoint!r} is not PATH.py:FLOW or MODULE:FLOW")
    path, func = entrypoint.rsplit(":", 1)
    if not path.endswith(".py"):
        return entrypoint
    parts = path.replace("\\", "/").removeprefix("./")[: -len(".py")].split("/")
    if path.startswith("/") or any(p in ("", ".", "..") or not p.isidentifier() for p in parts):
        raise FlowRunEntryError(
            f"deployment entrypoint {entrypoint!r} must be a path inside the package, "
            "relative to the project root (e.g. flows/ingest.py:ingest)"
        )
    return f"{'.'.join(parts)}:{func}"


def event_run_env(env: object) -> RunEnv:
    """The run settings an invocation's env may apply (flows/run_env.py), and what it refused.

    An env that is not a JSON object is refused as a whole; the run still proceeds without it.
    """
    if env is None:
        return RunEnv({}, ())
    if not isinstance(env, dict):
        return RunEnv({}, (Refusal("(all of it)", f"must be a JSON object, got {type(env).__name__}"),))
    return filter_run_env(env)


def key_url_problem(environ: Mapping[str, str]) -> str | None:
    """Why this environment's Prefect API URL may not receive the key (None when it may)."""
    problem = api_url_problem(environ.get("PREFECT_API_URL"))
    return f"{problem}; refusing to send the Prefect API key there" if problem else None


def api_key_from_secret_string(value: str, secret_id: str) -> str:
    """A secret holds the bare key, or a JSON object with one of `API_KEY_JSON_FIELDS`."""
    text = (value or "").strip()
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise FlowRunEntryError(f"secret {secret_id} is neither a key nor valid JSON") from exc
        text = next((str(data[f]).strip() for f in API_KEY_JSON_FIELDS if data.get(f)), "")
    if not text:
        raise FlowRunEntryError(f"secret {secret_id} holds no Prefect API key")
    return text


# --------------------------------------------------------------------------- I/O edges


def load_prefect_api_key(environ: MutableMapping[str, str] | None = None, client: Any = None) -> bool:
    """Set PREFECT_API_KEY from the secret named by QUEST_PREFECT_API_KEY_SECRET_ARN, once.

    Runs before Prefect is imported (Prefect reads its settings at import). Returns True when the
    key was read now; False when no secret is configured or the key is already set (warm start).
    Refuses (before reading the secret) when PREFECT_API_URL is not https:// or loopback http://.
    """
    env = os.environ if environ is None else environ
    secret_id = env.get(ENV_PREFECT_API_KEY_SECRET_ARN)
    if not secret_id and not env.get("PREFECT_API_KEY"):
        return False
    problem = key_url_problem(env)
    if problem:
        raise FlowRunEntryError(problem)
    if env.get("PREFECT_API_KEY") or not secret_id:  # without a secret, the key is set (see above)
        return False
    if client is None:
        from flows.io.aws import aws_client

        client = aws_client("secretsmanager")
    try:
        value = client.get_secret_value(SecretId=secret_id).get("SecretString")
    except Exception as exc:  # botocore ClientError / NoCredentials / endpoint errors
        raise FlowRunEntryError(
            f"reading the Prefect API key from secret {secret_id} failed: {type(exc).__name__}: {exc}"
        ) from exc
    env["PREFECT_API_KEY"] = api_key_from_secret_string(value or "", secret_id)
    return True


def run_flow_run(
    flow_run_id: str,
    env: dict[str, Any] | None = None,
    context: Any = None,
    *,
    margin_seconds: float = DEADLINE_MARGIN_SECONDS,
    check_seconds: float = CANCEL_CHECK_SECONDS,
) -> dict[str, Any]:
    """Execute one flow run in this process; return its final state (never raise for a failed flow).

    `context` is Lambda's (None for a local caller: no deadline, no request id). The flow's
    timeout ends `margin_seconds` before Lambda's deadline, and the run is checked for a cancel
    every `check_seconds` (flows/runtime/watch.py).
    """
    from flows.runtime.watch import Invocation

    invocation = Invocation.from_context(context)  # first: the deadline counts from here
    try:
        run_id = UUID(str(flow_run_id))
    except ValueError as exc:
        raise FlowRunEntryError(f"flow_run_id {flow_run_id!r} is not a UUID") from exc
    requested = event_run_env(env)
    for refusal in requested.refused:
        log.warning(refusal.message())
    with patched_environ(requested.accepted):  # restored: a warm Lambda process serves later runs
        return _run_flow_run(run_id, requested.refused, invocation, margin_seconds, check_seconds)


def check_prefect_api_target() -> None:
    """Refuse when Prefect, as it has loaded its settings, would send a credential to an unsafe URL.

    `load_prefect_api_key` checks PREFECT_API_URL as set; this checks what Prefect really uses
    (profiles, any-case variable names), so no other source of settings can redirect the key.
    """
    from prefect.settings import get_current_settings

    api = get_current_settings().api
    if (api.key is None and api.auth_string is None) or not api.url:
        return
    problem = key_url_problem({"PREFECT_API_URL": str(api.url)})
    if problem:
        raise FlowRunEntryError(problem)


def _run_flow_run(
    run_id: UUID,
    refused: tuple[Refusal, ...] = (),
    invocation: Invocation | None = None,
    margin_seconds: float = DEADLINE_MARGIN_SECONDS,
    check_seconds: float = CANCEL_CHECK_SECONDS,
) -> dict[str, Any]:
    from prefect.client.orchestration import get_client
    from prefect.flows import load_flow_from_entrypoint
    from prefect.logging.loggers import flow_run_logger
    from prefect.states import Cancelled, Crashed

    from flows.runtime.watch import Invocation

    invocation = invocation or Invocation()
    request_id = invocation.request_id
    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(run_id)
        logger = flow_run_logger(flow_run=flow_run)
        state_type = flow_run.state.type.value if flow_run.state else None
        state_name = flow_run.state.name if flow_run.state else None
        # At least once: a second delivery, or an invocation that is not the run's, runs nothing.
        mine = start_refusal("PENDING", flow_run.infrastructure_pid, request_id) is None
        if state_type == "CANCELLING" and mine and not _taken(client, flow_run):
            # Cancelled before any delivery took it: no one else will finish the cancel. (Once a
            # delivery has claimed or started it, that delivery's watcher ends the cancel.)
            message = cancelled_before_start_message(request_id)
            logger.info(message)
            client.set_flow_run_state(run_id, Cancelled(message=message), force=True)
            return _result(run_id, "Cancelled", "CANCELLED", message)
        refusal = start_refusal(state_type, flow_run.infrastructure_pid, request_id)
        if refusal:
            by = f"Lambda request {request_id}" if request_id else "this call"
            message = f"flow run {run_id} not started by {by}: {refusal} (a repeated delivery runs nothing)"
            logger.warning(message)
            log.warning(message)
            return {**_result(run_id, state_name, state_type or "", message), "started": False}
        if flow_run.deployment_id is None:
            raise FlowRunEntryError(f"flow run {run_id} has no deployment: nothing says which flow to run")
        deployment = client.read_deployment(flow_run.deployment_id)
        try:
            flow: Flow[..., Any] = load_flow_from_entrypoint(
                module_entrypoint(deployment.entrypoint), use_placeholder_flow=False
            )
        except Exception as exc:
            # The run cannot start: say why on the run itself instead of leaving it Pending.
            message = f"could not load flow {deployment.entrypoint!r}: {type(exc).__name__}: {exc}"
            logger.error(message)
            client.set_flow_run_state(run_id, Crashed(message=message), force=True)
            return _result(run_id, "Crashed", "CRASHED", message)
        timeout: float | None = None
        remaining = invocation.remaining()
        if remaining is not None:
            timeout = run_timeout(remaining, margin_seconds, flow.timeout_seconds)
            if timeout is None:
                message = too_late_message(
                    invocation.limit or 0, request_id or "?", remaining, margin_seconds
                )
                logger.error(message)
                client.set_flow_run_state(run_id, Crashed(message=message), force=True)
                return _result(run_id, "Crashed", "CRASHED", message)
        if request_id:
            refusal = _claim(client, run_id, request_id)
            if refusal:
                message = f"flow run {run_id} not started by Lambda request {request_id}: {refusal}"
                logger.warning(message)
                log.warning(message)
                return {**_result(run_id, "Aborted", "ABORTED", message), "started": False}
            flow_run = client.read_flow_run(run_id)
            logger.info(
                where_the_logs_are(
                    request_id,
                    invocation.log_group or "",
                    invocation.log_stream or "",
                    os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION"),
                )
            )
        for refusal_ in refused:  # shown on the run's page, next to what it did run with
            logger.warning(refusal_.message())
    return execute_flow_run(flow, flow_run, logger, invocation, timeout, margin_seconds, check_seconds)


CLAIMED_STATE_NAME = "Claimed"


def claim_transition_id(request_id: str) -> UUID:
    """The same for every delivery of one invocation: Prefect accepts the claim only once."""
    return uuid5(NAMESPACE_URL, f"lambda-request:{request_id}")


def _taken(client: Any, flow_run: FlowRun) -> bool:
    """Whether a delivery already claimed or started the run (its history holds our claim)."""
    if flow_run.start_time is not None:
        return True
    return any(state.name == CLAIMED_STATE_NAME for state in client.read_flow_run_states(flow_run.id))


def _claim(client: Any, run_id: UUID, request_id: str) -> str | None:
    """Take the run for this invocation, atomically; why not (None when taken).

    Two deliveries of one invocation can both read the run PENDING. Each proposes the named
    PENDING sub-state "Claimed" (Prefect allows PENDING → PENDING only to a new, non-default name)
    with a transition id derived from the request id: the server aborts the second claim
    (`PreventPendingTransitions`: "Claimed" → "Claimed", or PENDING once the run is RUNNING or
    CANCELLING) or rejects it as a repeated transition (`PreventDuplicateTransitions`). Prefect
    would not stop the duplicate later: it accepts RUNNING → RUNNING (a test pins this).
    """
    from prefect.client.schemas.responses import SetStateStatus
    from prefect.states import Pending

    claim: State[Any] = Pending(
        name=CLAIMED_STATE_NAME, message=f"Lambda request {request_id} starts the run"
    )
    claim.state_details.transition_id = claim_transition_id(request_id)
    result = client.set_flow_run_state(run_id, claim)
    if result.status == SetStateStatus.ACCEPT:
        return None
    reason = getattr(result.details, "reason", None) or "no reason given"
    return f"Prefect refused the claim ({result.status.value}: {reason}); a repeated delivery runs nothing"


def execute_flow_run(
    flow: Flow[..., Any],
    flow_run: FlowRun,
    logger: Any,
    invocation: Invocation,
    timeout: float | None,
    margin_seconds: float = DEADLINE_MARGIN_SECONDS,
    check_seconds: float = CANCEL_CHECK_SECONDS,
) -> dict[str, Any]:
    """Run the flow in this process under the deadline and the cancel watch; its true final state.

    The deadline (`timeout`, when shorter than a timeout the flow has) is our own SIGALRM in the
    main thread: it interrupts blocking waits and raises `LambdaTimeLimit`, which the engine
    records as one CRASHED transition whose message names Lambda's limit. Where SIGALRM is not
    ours, Prefect's flow timeout is used instead (Failed "TimedOut", then forced Crashed).
    A cancel is the engine's own (Cancelled); should it end otherwise, it is forced Cancelled.
    The same deadline is the run's budget (flows/budget.py), which a survey mirror reads to stop
    in time and continue in a follow-up run.
    """
    from prefect.exceptions import Abort, TerminationSignal
    from prefect.flow_engine import run_flow

    from flows.budget import run_budget
    from flows.runtime.watch import CancelWatch, LambdaTimeLimit, deadline_alarm

    run_id = flow_run.id
    ours = timeout is not None and (flow.timeout_seconds is None or timeout < flow.timeout_seconds)
    message = limit_message(invocation.limit or 0, invocation.request_id or "?", margin_seconds)
    watch = CancelWatch(run_id, check_seconds, logger)
    state: State[Any] | None = None
    started = time.monotonic()
    try:
        watch.start()
        try:
            armed = deadline_alarm(timeout, message) if ours and timeout is not None else nullcontext(False)
            # The budget (flows/budget.py) lets a mirror stop starting transfers in time and
            # continue in a follow-up run instead of meeting the alarm (issue 12).
            with run_budget(timeout), armed as alarm:
                if ours and not alarm:
                    logger.warning("Lambda's time limit is enforced by Prefect's flow timeout here")
                runnable = flow.with_options(timeout_seconds=timeout) if ours and not alarm else flow
                # Prefect's own engine passes its flow-run logger adapter as `error_logger` too
                # (typed a Logger; only its .error() is called): errors reach the run's page.
                outcome = run_flow(runnable, flow_run=flow_run, return_type="state", error_logger=logger)
                state = _final_state(outcome)
        finally:
            watch.close()
    except LambdaTimeLimit:
        # The engine has recorded CRASHED with our message (or the run had just ended): read it.
        logger.error(message)
        return _current_result(run_id)
    except Abort as exc:
        # The server refused to start it (already running or finished: a duplicate invocation).
        logger.warning("flow run %s not started: %s", run_id, exc)
        return _result(run_id, "Aborted", "ABORTED", str(exc))
    except TerminationSignal:
        if not watch.cancel_sent:
            raise  # a real SIGTERM: Prefect has re-raised it to the previous handler already
        # Our own cancel: the engine has ended the run (Cancelled); read what it recorded below.
    elapsed = time.monotonic() - started
    return _conclude(
        run_id, state, invocation, timeout if ours else None, elapsed, margin_seconds, watch, logger
    )


def _current_result(run_id: UUID) -> dict[str, Any]:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        current = client.read_flow_run(run_id).state
    if current is None:  # pragma: no cover - a run that ran has a state
        raise FlowRunEntryError(f"flow run {run_id} ended without a state")
    return _result(run_id, current.name, current.type.value, current.message)


def _conclude(
    run_id: UUID,
    state: State[Any] | None,
    invocation: Invocation,
    our_timeout: float | None,
    elapsed: float,
    margin_seconds: float,
    watch: CancelWatch,
    logger: Any,
) -> dict[str, Any]:
    """The run's true final state: forced only when the engine's does not say what happened."""
    from prefect.client.orchestration import get_client
    from prefect.states import Cancelled, Crashed

    with get_client(sync_client=True) as client:
        if watch.cancel_sent:
            current = client.read_flow_run(run_id).state
            if current is not None and current.type.value in ("CANCELLED", "COMPLETED"):
                return _result(run_id, current.name, current.type.value, current.message)
            message = cancelled_message(invocation.request_id)
            logger.warning(
                "%s (the run had ended %s)", message, current.type.value if current else "stateless"
            )
            client.set_flow_run_state(run_id, Cancelled(message=message), force=True)
            return _result(run_id, "Cancelled", "CANCELLED", message)
        if state is None:  # pragma: no cover - run_flow returns a state or raises
            raise FlowRunEntryError(f"flow run {run_id} ended without a state")
        if (
            our_timeout is not None
            and state.is_failed()
            and state.name == "TimedOut"
            and elapsed >= our_timeout - 0.5
        ):
            message = limit_message(invocation.limit or 0, invocation.request_id or "?", margin_seconds)
            logger.error(message)
            client.set_flow_run_state(run_id, Crashed(message=message), force=True)
            return _result(run_id, "Crashed", "CRASHED", message)
    return _result(run_id, state.name, state.type.value, state.message)


def _final_state(outcome: object) -> State[Any]:
    """`run_flow(..., return_type="state")`'s outcome: the final state, or for an async flow a
    coroutine that runs the flow and returns it."""
    import asyncio
    import inspect

    from prefect.client.schemas.objects import State

    if inspect.iscoroutine(outcome):
        outcome = asyncio.run(outcome)
    if not isinstance(outcome, State):
        raise FlowRunEntryError(f"the flow engine returned {type(outcome).__name__}, not a state")
    return outcome


def _result(run_id: UUID, name: str | None, state_type: str, message: str | None) -> dict[str, Any]:
    return {"flow_run_id": str(run_id), "state": name, "state_type": state_type, "message": message or ""}


def poll_work_pool(name: str) -> dict[str, Any]:
    """One polling round of the `aws-lambda` worker: submit the pool's due scheduled runs."""
    import asyncio

    return asyncio.run(_poll(name))


async def _poll(name: str) -> dict[str, Any]:
    from flows.worker import LambdaWorker

    function = os.environ.get("AWS_LAMBDA_FUNCTION_NAME") or "local"
    # A stable worker name: the UI shows one serverless worker, not a new one every minute.
    async with LambdaWorker(
        work_pool_name=name, name=f"lambda-poller-{function}", create_pool_if_not_found=False
    ) as worker:
        try:
            pool = worker.work_pool
        except RuntimeError:
            raise FlowRunEntryError(f"work pool {name!r} was not found on the Prefect API") from None
        if pool.type != LambdaWorker.type:
            raise FlowRunEntryError(f"work pool {name!r} is of type {pool.type!r}, not {LambdaWorker.type!r}")
        runs = await worker.get_and_submit_flow_runs()
    return {"work_pool": name, "submitted": [str(run.id) for run in runs]}
