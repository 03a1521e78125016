"""The `aws-lambda` Prefect worker type: submits flow runs to the project's Lambda function.

Prefect ships no Lambda worker (PrefectHQ/prefect#19577), so the project brings one. It is a
`BaseWorker` registered through the `prefect.collections` entry point (pyproject.toml): after
`pip install` of the project, `prefect work-pool create NAME --type aws-lambda` and
`prefect worker start --pool NAME --type aws-lambda` find it with no extra import.

A flow run becomes one `Invoke` of the function with `{"flow_run_id": ..., "env": {...}}`; the
function (flows/runtime/handler.py → flows/runtime/flow_run.py) loads and runs the flow run in-process.
The payload never carries credentials: the function reads its Prefect API key from its own
secret and uses its own IAM role. Its `env` carries only the pipeline's run settings
(flows/run_env.py, the same rule the function applies); the worker logs what it dropped.
The worker runs the same way long-running (`prefect worker start`) or serverless (one polling
round per scheduled `{"poll_work_pool": ...}`).

Surviving Lambda (issue 11):
- Throttled (429) or Lambda-side (5xx) Invokes put the run back to Scheduled ("AwaitingRetry")
  with a growing delay instead of crashing it (`retry_delay_seconds`, the policy is beside it).
- Each polling round first drains the function's on-failure destination queue
  (flows/reconcile.py): a run whose invocation died without reporting (timeout, out of memory,
  killed, never run) becomes Crashed with Lambda's reason and the request's last log lines.
- `kill_infrastructure`: a running invocation cannot be stopped from outside (the function
  stops its run when it sees it cancelling); an ended one is reported as not found.
- AWS credentials come from the pool's prefect-aws `AwsCredentials` block (empty: boto3's default
  chain, inside Lambda the function's role), for the Lambda, SQS and Logs clients alike.
"""

from __future__ import annotations

import json
import logging
import os
import random
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, cast
from uuid import UUID

import anyio
import anyio.abc
import anyio.to_thread
from prefect.client.schemas.objects import FlowRun, State
from prefect.workers.base import BaseJobConfiguration, BaseVariables, BaseWorker, BaseWorkerResult

# prefect-aws 0.5.13 ships no type information (no py.typed): the block is used through its documented API.
from prefect_aws.credentials import AwsCredentials  # type: ignore[import-untyped]
from pydantic import Field

from flows.core.errors import LambdaInvokeError, RuntimeFailure
from flows.core.invocation import console_url
from flows.core.names import ENV_INVOKE_FAILURE_QUEUE_URL, INVOKE_MAX_EVENT_AGE_SECONDS, WORKER_TYPE
from flows.io.lambda_logs import (
    function_name_of,
    invocation_ended,
    log_group_for,
    region_of,
)
from flows.reconcile import FailureQueue, ReconcileSummary, reconcile_invoke_failures
from flows.run_env import RunEnv, accepted, filter_run_env

# Lambda's documented limits for the request payload.
MAX_PAYLOAD_BYTES = {"Event": 256 * 1024, "RequestResponse": 6 * 1024 * 1024}
# A synchronous invoke may last the function's whole timeout (at most 15 minutes).
SYNC_READ_TIMEOUT_SECONDS = 15 * 60 + 60

UNUSED_BASE_FIELDS = ("command", "name", "labels")

InvocationType = Literal["Event", "RequestResponse"]

_FUNCTION_DESCRIPTION = (
    "Name or ARN of the Lambda function that runs flow runs (the project's runner function; "
    "`pulumi up` sets this default to the function it deploys)."
)
_INVOCATION_DESCRIPTION = (
    "`Event` (asynchronous, the default): the worker returns as soon as Lambda accepted the run; "
    "the run's state is reported by the function. `RequestResponse`: the worker waits for the "
    "function to finish (up to its timeout, at most 15 minutes) and reports a function error "
    "as a crash."
)
_REGION_DESCRIPTION = "AWS region of the function; empty means the worker's default (AWS_REGION)."
_ENDPOINT_DESCRIPTION = (
    "Custom Lambda API endpoint (an emulator or a VPC endpoint); empty means AWS's public endpoint."
)
_CREDENTIALS_DESCRIPTION = (
    "The AWS credentials the worker invokes the function, reads the on-failure queue and reads "
    "the function's logs with (a prefect-aws AWS Credentials block). Empty means boto3's default "
    "chain: the environment, a profile, or the role of the machine (inside Lambda, the function's "
    "own role)."
)
_QUEUE_DESCRIPTION = (
    "URL of the SQS queue that is the function's on-failure destination for asynchronous "
    "invocations. At the start of each polling round the worker reads it and marks the runs whose "
    "invocation died without reporting (timed out, out of memory, killed, never run) Crashed, with "
    "the function's last log lines on the run. Empty: the function's "
    f"{ENV_INVOKE_FAILURE_QUEUE_URL} when the worker runs inside it, else no reconciliation. "
    "Read from the work pool's defaults (a deployment's override has no effect)."
)
_LOG_GROUP_DESCRIPTION = (
    "CloudWatch log group the function writes to; empty means Lambda's default "
    "`/aws/lambda/<function name>`. Used to link a run to its function's logs, forward a "
    "crashed invocation's last lines and tell whether an invocation has ended."
)
_ENV_DESCRIPTION = (
    "The pipeline's run settings for this flow run, applied inside the function for the run's "
    f"duration. Accepted names: {accepted()}. Any other name (Prefect settings, proxies, AWS "
    "settings, credentials, the store or upstream URLs) is not sent and is logged as dropped on "
    "the run; an invalid value likewise."
)


class LambdaJobConfiguration(BaseJobConfiguration):
    """One flow run's invocation, rendered from the pool's base job template."""

    function_name: str = Field(default="", title="Lambda function", description=_FUNCTION_DESCRIPTION)
    region: str | None = Field(default=None, title="AWS region", description=_REGION_DESCRIPTION)
    invocation_type: InvocationType = Field(
        default="Event", title="Invocation type", description=_INVOCATION_DESCRIPTION
    )
    endpoint_url: str | None = Field(
        default=None, title="Lambda endpoint URL", description=_ENDPOINT_DESCRIPTION
    )
    aws_credentials: AwsCredentials = Field(
        default_factory=AwsCredentials, title="AWS Credentials", description=_CREDENTIALS_DESCRIPTION
    )
    invoke_failure_queue_url: str | None = Field(
        default=None, title="On-failure queue URL", description=_QUEUE_DESCRIPTION
    )
    log_group_name: str | None = Field(
        default=None, title="Function log group", description=_LOG_GROUP_DESCRIPTION
    )

    @classmethod
    def json_template(cls) -> dict[str, Any]:
        # `command`, `name` and `labels` have no meaning here: the function's handler is the
        # command and an invocation has no name or labels.
        template = super().json_template()
        for unused in UNUSED_BASE_FIELDS:
            template.pop(unused, None)
        return template

    @classmethod
    def _base_environment(cls) -> dict[str, str]:
        # The base class copies the worker's own Prefect settings (API key, PREFECT_HOME, ...)
        # into every run; they describe the worker's machine, not the function's.
        return {}

    @staticmethod
    def _base_flow_run_environment(flow_run: FlowRun | None = None) -> dict[str, str]:
        # PREFECT__FLOW_RUN_ID: the payload carries the id; the function applies run settings only.
        return {}

    @staticmethod
    def _base_attribution_environment(*args: Any, **kwargs: Any) -> dict[str, str]:
        # PREFECT__WORKER_*/FLOW_*/DEPLOYMENT_*: not run settings, so never sent (nor warned about).
        return {}


class LambdaVariables(BaseVariables):
    """How this pool's flow runs are sent to the Lambda function."""

    function_name: str = Field(title="Lambda function", description=_FUNCTION_DESCRIPTION)
    region: str | None = Field(default=None, title="AWS region", description=_REGION_DESCRIPTION)
    invocation_type: InvocationType = Field(
        default="Event", title="Invocation type", description=_INVOCATION_DESCRIPTION
    )
    endpoint_url: str | None = Field(
        default=None, title="Lambda endpoint URL", description=_ENDPOINT_DESCRIPTION
    )
    aws_credentials: AwsCredentials = Field(
        default_factory=AwsCredentials, title="AWS Credentials", description=_CREDENTIALS_DESCRIPTION
    )
    invoke_failure_queue_url: str | None = Field(
        default=None, title="On-failure queue URL", description=_QUEUE_DESCRIPTION
    )
    log_group_name: str | None = Field(
        default=None, title="Function log group", description=_LOG_GROUP_DESCRIPTION
    )
    env: dict[str, str | None] = Field(
        default_factory=dict, title="Environment Variables", description=_ENV_DESCRIPTION
    )

    @classmethod
    def model_json_schema(cls, *args: Any, **kwargs: Any) -> dict[str, Any]:
        schema = super().model_json_schema(*args, **kwargs)
        for unused in UNUSED_BASE_FIELDS:
            schema["properties"].pop(unused, None)
        return schema


class LambdaWorkerResult(BaseWorkerResult):
    """`identifier` is the invocation's request id (shown as the run's infrastructure pid)."""


def default_base_job_template() -> dict[str, Any]:
    """The template `prefect work-pool create --type aws-lambda` and the Pulumi pool both use."""
    return LambdaWorker.get_default_base_job_template()


def base_job_template_for(
    function_arn: str,
    region: str | None = None,
    invocation_type: InvocationType = "Event",
    endpoint_url: str | None = None,
    env: dict[str, str] | None = None,
    invoke_failure_queue_url: str | None = None,
    log_group_name: str | None = None,
) -> dict[str, Any]:
    """The default template with the pool's defaults filled in (one source of truth for Pulumi)."""
    if not function_arn:
        raise ValueError("function_arn is required")
    template = default_base_job_template()
    props = template["variables"]["properties"]
    props["function_name"]["default"] = function_arn
    if region:
        props["region"]["default"] = region
    props["invocation_type"]["default"] = invocation_type
    if endpoint_url:
        props["endpoint_url"]["default"] = endpoint_url
    if invoke_failure_queue_url:
        props["invoke_failure_queue_url"]["default"] = invoke_failure_queue_url
    if log_group_name:
        props["log_group_name"]["default"] = log_group_name
    if env:
        checked = _checked_env(env)
        if checked.refused:
            raise ValueError("; ".join(refusal.message() for refusal in checked.refused))
        props["env"]["default"] = checked.accepted
    template["variables"]["required"] = [
        name for name in template["variables"].get("required", []) if name != "function_name"
    ]
    return template


def _checked_env(env: Mapping[str, str | None]) -> RunEnv:
    # `filter_run_env` takes keys of any type (an invocation's env is arbitrary JSON), typed
    # `Mapping[object, object]`; a Mapping's key type is invariant, so a str-keyed dict goes as
    # a dict of its items (the same entries, in the same order).
    return filter_run_env(dict(env.items()))


def payload_env(
    env: dict[str, str | None], logger: logging.Logger | logging.LoggerAdapter[logging.Logger] | None = None
) -> RunEnv:
    """The run settings to send (flows/run_env.py, the rule the function applies too).

    Everything else is dropped here, logged on the run when `logger` is given, so the function
    never receives it and the run's page says why a variable had no effect.
    """
    checked = _checked_env(env)
    if logger is not None:
        for refusal in checked.refused:
            logger.warning(refusal.message())
    return checked


def invocation_payload(
    flow_run_id: str,
    env: dict[str, str | None],
    invocation_type: str,
    logger: logging.Logger | logging.LoggerAdapter[logging.Logger] | None = None,
) -> bytes:
    """The JSON the function receives; refuses payloads Lambda would reject."""
    body = json.dumps({"flow_run_id": str(flow_run_id), "env": payload_env(env, logger).accepted}).encode()
    limit = MAX_PAYLOAD_BYTES.get(invocation_type, MAX_PAYLOAD_BYTES["Event"])
    if len(body) > limit:
        raise LambdaInvokeError(
            f"invocation payload is {len(body)} bytes, over Lambda's {limit} byte limit for "
            f"{invocation_type} invocations; trim the run's env job variables"
        )
    return body


def invoke_failure(response: dict[str, Any], function_name: str) -> str | None:
    """Why an Invoke response is a failure, or None when the function accepted/ran the run."""
    request_id = response.get("ResponseMetadata", {}).get("RequestId", "?")
    status = response.get("StatusCode")
    if response.get("FunctionError"):
        detail = ""
        raw = response.get("Payload")
        if raw:
            try:
                err = json.loads(raw)
                detail = f": {err.get('errorType', 'Error')}: {err.get('errorMessage', '')}".rstrip(": ")
            except (ValueError, AttributeError):
                detail = f": {raw[:500]!r}"
        return f"function {function_name} (request {request_id}) failed ({response['FunctionError']}){detail}"
    if status not in (200, 202, 204):
        return f"function {function_name} (request {request_id}) answered status {status}"
    return None


# --------------------------------------------------------------------------- AWS clients


def aws_session(credentials: AwsCredentials | None) -> Any:
    """The boto3 session of the pool's AWS Credentials block (an empty block: boto3's default chain)."""
    return (credentials or AwsCredentials()).get_boto3_session()


def _block_endpoint(credentials: AwsCredentials | None) -> str | None:
    """The block's own endpoint (its client parameters), for the SQS and Logs clients."""
    if credentials is None:
        return None
    endpoint = credentials.aws_client_parameters.endpoint_url
    return str(endpoint) if endpoint else None


def lambda_client(configuration: LambdaJobConfiguration, **config: Any) -> Any:
    """A Lambda client from the configuration's credentials; `endpoint_url` wins over the block's."""
    from flows.io.aws import aws_client

    return aws_client(
        "lambda",
        region=configuration.region,
        endpoint_url=configuration.endpoint_url or _block_endpoint(configuration.aws_credentials),
        session=aws_session(configuration.aws_credentials),
        **config,
    )


def service_client(
    configuration: LambdaJobConfiguration, service: str, region: str | None = None, **config: Any
) -> Any:
    """An SQS or Logs client from the configuration's credentials (the Lambda endpoint is not theirs)."""
    from flows.io.aws import aws_client

    return aws_client(
        service,
        region=region or configuration.region,
        endpoint_url=_block_endpoint(configuration.aws_credentials),
        session=aws_session(configuration.aws_credentials),
        retries={"max_attempts": 3, "mode": "standard"},
        connect_timeout=10,
        read_timeout=30,
        **config,
    )


def function_log_group(
    configuration: LambdaJobConfiguration, environ: Mapping[str, str] | None = None
) -> str:
    """The pool's `log_group_name`; inside the function itself, the group Lambda says it logs to
    (a custom logging config); else Lambda's default `/aws/lambda/<name>`."""
    if configuration.log_group_name:
        return configuration.log_group_name
    env = os.environ if environ is None else environ
    own = env.get("AWS_LAMBDA_LOG_GROUP_NAME")
    if own and env.get("AWS_LAMBDA_FUNCTION_NAME") == function_name_of(configuration.function_name):
        return own
    return log_group_for(configuration.function_name)


def function_region(configuration: LambdaJobConfiguration, client: Any = None) -> str | None:
    """The function's region: the configuration's, the ARN's, else the client's (session default)."""
    found = configuration.region or region_of(configuration.function_name)
    if found:
        return found
    return getattr(getattr(client, "meta", None), "region_name", None)


def queue_region(queue_url: str) -> str | None:
    """`https://sqs.<region>.amazonaws.com/<account>/<name>` -> the region (else None)."""
    host = queue_url.split("://", 1)[-1].split("/", 1)[0]
    parts = host.split(".")
    if len(parts) >= 4 and parts[0] == "sqs" and parts[2] == "amazonaws":
        return parts[1]
    return None


# --------------------------------------------------------------------------- invoking


# A throttled or temporarily failing Invoke is tried again later, not crashed (issue 11):
# - Lambda's own answers that mean "not now": 429 TooManyRequestsException (reserved or account
#   concurrency, request rate) and its 5xx service errors; botocore has already retried them a few
#   times within seconds (standard mode: 4 retries after the first attempt).
# - The run goes back to Scheduled ("AwaitingRetry") `retry_delay_seconds(n)` later, n being the
#   number of such retries the run already had: 30 s, 60 s, 120 s, 240 s, then every 300 s, with up
#   to +20 % jitter so a burst of throttled runs does not come back in one wave. 30 s is half the
#   serverless poll's period (each minute a poll picks up whatever is due), the doubling backs off
#   a function at its concurrency limit, and the 5 min cap keeps a run from waiting long after
#   capacity frees up (a run holds a slot for at most the function's timeout).
# - The same budget as an accepted event: once a run's first such retry is older than
#   INVOKE_MAX_EVENT_AGE_SECONDS (1 h), it crashes with the reason instead of starting hours late.
RETRY_BASE_SECONDS = 30.0
RETRY_MAX_SECONDS = 300.0
RETRY_JITTER = 0.2
AWAITING_RETRY = "AwaitingRetry"
AWAITING_RETRY_PREFIX = "Lambda did not accept the invocation"
# Lambda 5xx errors that are configuration, not a passing state: retrying them cannot help.
PERMANENT_SERVER_ERRORS = frozenset(
    {
        "InvalidSubnetIDException",
        "InvalidSecurityGroupIDException",
        "InvalidZipFileException",
        "InvalidRuntimeException",
        "KMSAccessDeniedException",
        "KMSDisabledException",
        "KMSNotFoundException",
        "KMSInvalidStateException",
        "EFSMountFailureException",
        "EFSMountConnectivityException",
    }
)
# How often kill_infrastructure looks at a cancelling run while it waits for the function.
KILL_POLL_SECONDS = 1.0


@dataclass(frozen=True)
class TemporaryInvokeFailure:
    """Why Lambda did not take the invocation now (`code (reason)`), and its Retry-After hint."""

    reason: str
    retry_after_seconds: float | None = None


def temporary_invoke_failure(exc: BaseException) -> TemporaryInvokeFailure | None:
    """A throttling (429) or Lambda service (5xx) error from botocore, else None (crash)."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return None
    error = response.get("Error") or {}
    code = str(error.get("Code") or "")
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    throttled = code == "TooManyRequestsException" or status == 429
    server = isinstance(status, int) and status >= 500 and code not in PERMANENT_SERVER_ERRORS
    if not (throttled or server):
        return None
    detail = response.get("Reason") or error.get("Reason")
    reason = f"{code or 'HTTP ' + str(status)}" + (f" ({detail})" if detail else "")
    message = str(error.get("Message") or "").strip()
    if message:
        reason += f": {message[:300]}"
    return TemporaryInvokeFailure(reason, _seconds(response.get("retryAfterSeconds")))


def _seconds(value: object) -> float | None:
    try:
        seconds = float(str(value))
    except ValueError:
        return None
    return seconds if 0 < seconds <= 3600 else None


def retry_delay_seconds(previous_retries: int, rng: random.Random | None = None) -> float:
    """30 s doubling per earlier retry, capped at 300 s, plus up to 20 % jitter."""
    base = min(RETRY_BASE_SECONDS * (1 << min(max(previous_retries, 0), 16)), RETRY_MAX_SECONDS)
    draw = rng.random() if rng is not None else random.random()
    return base * (1 + RETRY_JITTER * draw)


def _our_retries(states: list[State[Any]]) -> list[State[Any]]:
    return [
        s for s in states if s.name == AWAITING_RETRY and (s.message or "").startswith(AWAITING_RETRY_PREFIX)
    ]


def _invoke(configuration: LambdaJobConfiguration, payload: bytes) -> tuple[dict[str, Any], str | None]:
    """One `lambda:Invoke` (blocking; run in a thread): the response (Payload read) and the region."""
    sync = configuration.invocation_type == "RequestResponse"
    client = lambda_client(
        configuration,
        # A retried synchronous invoke would run the flow run twice; an async one is idempotent
        # enough: the function claims the run once per request id (a repeated delivery runs nothing).
        retries={"total_max_attempts": 1} if sync else {"max_attempts": 4, "mode": "standard"},
        read_timeout=SYNC_READ_TIMEOUT_SECONDS if sync else 60,
        connect_timeout=10,
    )
    response: dict[str, Any] = client.invoke(
        FunctionName=configuration.function_name,
        InvocationType=configuration.invocation_type,
        Payload=payload,
    )
    stream = response.get("Payload")
    response["Payload"] = stream.read() if stream is not None else b""
    return response, function_region(configuration, client)


def _flow_run_of(configuration: BaseJobConfiguration) -> FlowRun | None:
    """The flow run a configuration was resolved for (BaseJobConfiguration.prepare_for_flow_run)."""
    related = getattr(configuration, "_related_objects", None) or {}
    flow_run = related.get("flow-run") if isinstance(related, dict) else None
    return flow_run if isinstance(flow_run, FlowRun) else None


def _since_ms(flow_run: FlowRun | None) -> int | None:
    if flow_run is None or flow_run.created is None:
        return None
    return int((flow_run.created - timedelta(minutes=5)).timestamp() * 1000)


class LambdaWorker(BaseWorker[LambdaJobConfiguration, LambdaVariables, LambdaWorkerResult]):
    type = WORKER_TYPE
    job_configuration = LambdaJobConfiguration
    job_configuration_variables = LambdaVariables

    _description = (
        "Run flow runs on an AWS Lambda function that has the flows installed (the quest "
        "pipeline's runner). Invokes the function with the flow run id; no container, no polling "
        "process required when the function polls the pool on a schedule."
    )
    _display_name = "AWS Lambda (quest)"
    _documentation_url = "https://docs.aws.amazon.com/lambda/latest/api/API_Invoke.html"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Requests whose on-failure record this worker has seen (they have ended).
        self._failed_request_ids: set[str] = set()

    async def get_and_submit_flow_runs(self) -> list[FlowRun]:
        """Reconcile the on-failure queue, then one polling round as usual."""
        await self.reconcile_invoke_failures()
        return await super().get_and_submit_flow_runs()

    async def reconcile_invoke_failures(self) -> ReconcileSummary | None:
        """Drain the pool's on-failure queue (flows/reconcile.py); None when there is none. Never raises."""
        try:
            pool = self.work_pool
        except RuntimeError:  # not synced with the API yet: nothing to read the template from
            return None
        try:
            configuration = cast(
                LambdaJobConfiguration,
                await self.job_configuration.from_template_and_values(
                    pool.base_job_template, {}, client=self.client
                ),
            )
        except Exception as exc:
            self._logger.warning("on-failure queue not read: the pool's job template: %s", exc)
            return None
        queue_url = configuration.invoke_failure_queue_url or os.environ.get(ENV_INVOKE_FAILURE_QUEUE_URL)
        if not queue_url:
            return None
        try:
            queue = await anyio.to_thread.run_sync(self._failure_queue, configuration, queue_url, pool.name)
            summary = await reconcile_invoke_failures(self.client, queue, self._logger)
        except Exception as exc:
            self._logger.warning(
                "could not read the on-failure queue %s: %s: %s", queue_url, type(exc).__name__, exc
            )
            return None
        self._failed_request_ids |= summary.request_ids
        if summary.crashed or summary.left:
            self._logger.info(
                "on-failure queue: %d run(s) marked crashed, %d message(s) deleted, %d left",
                len(summary.crashed),
                summary.deleted,
                summary.left,
            )
        return summary

    @staticmethod
    def _failure_queue(configuration: LambdaJobConfiguration, queue_url: str, pool_name: str) -> FailureQueue:
        sqs = service_client(configuration, "sqs", region=queue_region(queue_url))
        logs = service_client(configuration, "logs", region=function_region(configuration))
        log_group = function_log_group(configuration) if configuration.function_name else None
        return FailureQueue(
            sqs=sqs,
            queue_url=queue_url,
            logs=logs,
            log_group=log_group,
            work_pool_name=pool_name,
            function_name=configuration.function_name,
            function_region=configuration.region,
        )

    async def run(
        self,
        flow_run: FlowRun,
        configuration: LambdaJobConfiguration,
        # Prefect types the started value as an int (a process id) but only str()s it into the
        # run's infrastructure_pid; a Lambda run's identifier is its request id, a str. None:
        # not started (the run went back to Scheduled), so no pid is recorded.
        task_status: anyio.abc.TaskStatus[str | None] | None = None,  # type: ignore[override]
    ) -> LambdaWorkerResult:
        """Invoke the function for this run. Raising before `started` makes the base mark it Crashed."""
        logger = self.get_flow_run_logger(flow_run)
        if not configuration.function_name:
            raise LambdaInvokeError(
                "the work pool's `function_name` is empty: set it in the pool's base job template "
                "or the deployment's job variables"
            )
        payload = invocation_payload(
            str(flow_run.id), configuration.env, configuration.invocation_type, logger
        )
        logger.info(
            "Invoking Lambda function %s (%s) for flow run %s",
            configuration.function_name,
            configuration.invocation_type,
            flow_run.id,
        )
        try:
            response, region = await anyio.to_thread.run_sync(_invoke, configuration, payload)
        except Exception as exc:  # botocore errors: not found, throttled, denied, unreachable
            temporary = temporary_invoke_failure(exc)
            if temporary is not None and await self._reschedule(flow_run, configuration, temporary):
                if task_status is not None:
                    task_status.started(None)
                return LambdaWorkerResult(identifier="", status_code=0)
            raise LambdaInvokeError(
                f"invoking function {configuration.function_name} failed: {type(exc).__name__}: {exc}"
            ) from exc
        reason = invoke_failure(response, configuration.function_name)
        if reason:
            raise LambdaInvokeError(reason)
        request_id = response.get("ResponseMetadata", {}).get("RequestId", "")
        logger.info("Lambda accepted flow run %s as request %s", flow_run.id, request_id)
        self._log_where_logs_are(logger, configuration, region, request_id)
        if task_status is not None:
            task_status.started(request_id)
        return LambdaWorkerResult(identifier=request_id, status_code=0)

    @staticmethod
    def _log_where_logs_are(
        logger: logging.Logger | logging.LoggerAdapter[logging.Logger],
        configuration: LambdaJobConfiguration,
        region: str | None,
        request_id: str,
    ) -> None:
        group = function_log_group(configuration)
        if region:
            link = console_url(region, group, request_id=request_id or None)
            logger.info("Function logs: log group %s (request %s): %s", group, request_id, link)
        else:
            logger.info("Function logs: log group %s (request %s)", group, request_id)

    async def _reschedule(
        self, flow_run: FlowRun, configuration: LambdaJobConfiguration, failure: TemporaryInvokeFailure
    ) -> bool:
        """Put the run back to Scheduled ("AwaitingRetry") a while later; False: crash it instead."""
        from prefect.states import Scheduled

        logger = self.get_flow_run_logger(flow_run)
        try:
            earlier = _our_retries(await self.client.read_flow_run_states(flow_run.id))
        except Exception as exc:
            logger.warning(
                "could not read the run's earlier states (%s); treating this as the first retry", exc
            )
            earlier = []
        now = datetime.now(UTC)
        first = min((s.timestamp for s in earlier if s.timestamp is not None), default=None)
        if first is not None and (now - first).total_seconds() >= INVOKE_MAX_EVENT_AGE_SECONDS:
            logger.error(
                "Lambda has refused this run's invocation for over %d s (%d retries): %s",
                INVOKE_MAX_EVENT_AGE_SECONDS,
                len(earlier),
                failure.reason,
            )
            return False
        delay = max(retry_delay_seconds(len(earlier)), failure.retry_after_seconds or 0)
        when = now + timedelta(seconds=delay)
        message = (
            f"{AWAITING_RETRY_PREFIX} ({failure.reason}) for function {configuration.function_name}: "
            f"retry {len(earlier) + 1}, invoking again at {when.strftime('%H:%M:%SZ')} (in {delay:.0f} s)"
        )
        state: State[Any] = Scheduled(scheduled_time=when, name=AWAITING_RETRY, message=message)
        try:
            result = await self.client.set_flow_run_state(flow_run.id, state)
        except Exception as exc:
            logger.error("could not put the run back to Scheduled: %s: %s", type(exc).__name__, exc)
            return False
        if result.status.value != "ACCEPT":
            current = result.state.type.value if result.state is not None else "unknown"
            # Refused because the run moved on (cancelled, or ended elsewhere): leave it. Refused
            # while it is still waiting to start: crash it with the reason rather than strand it.
            moved_on = current in ("CANCELLING", "CANCELLED", "COMPLETED", "FAILED", "CRASHED")
            logger.warning(
                "Lambda did not accept the invocation (%s) and Prefect refused to reschedule the run "
                "(%s, state %s): %s",
                failure.reason,
                result.status.value,
                current,
                "leaving it as it is" if moved_on else "crashing it instead",
            )
            return moved_on
        logger.warning(message)
        return True

    async def kill_infrastructure(
        self,
        infrastructure_pid: str,
        configuration: LambdaJobConfiguration,
        grace_seconds: int = 30,
    ) -> None:
        """A running invocation cannot be stopped from outside; the function stops its own run.

        - The invocation has ended (its `END RequestId` line is in the function's log group, or
          its on-failure record was seen): raise InfrastructureNotFound, so Prefect marks the run
          cancelled (there is nothing left to stop).
        - It may still run (or wait in Lambda's queue): wait up to `grace_seconds` for the run to
          leave CANCELLING (the function sees it and stops), then return.
        - The logs cannot be read: say so on the run and return.
        """
        from prefect.exceptions import InfrastructureNotFound

        request_id = str(infrastructure_pid)
        flow_run = _flow_run_of(configuration)
        logger: logging.Logger | logging.LoggerAdapter[logging.Logger] = (
            self.get_flow_run_logger(flow_run) if flow_run is not None else self._logger
        )
        if request_id in self._failed_request_ids:
            raise InfrastructureNotFound(
                f"Lambda request {request_id} has ended (its failure record was seen)"
            )
        group = function_log_group(configuration)
        try:
            ended = await anyio.to_thread.run_sync(self._ended, configuration, group, request_id, flow_run)
        except RuntimeFailure as exc:
            logger.warning(
                "Cannot tell whether Lambda request %s is still running (%s); the function stops "
                "the run itself when it sees it cancelling.",
                request_id,
                exc,
            )
            return
        if ended:
            raise InfrastructureNotFound(f"Lambda request {request_id} has already ended (log group {group})")
        if flow_run is not None:
            state = await self._wait_while_cancelling(flow_run.id, grace_seconds)
            logger.info(
                "Lambda request %s cannot be stopped from outside; the run is %s after waiting up to %d s "
                "for the function to stop it.",
                request_id,
                state,
                grace_seconds,
            )

    @staticmethod
    def _ended(
        configuration: LambdaJobConfiguration, group: str, request_id: str, flow_run: FlowRun | None
    ) -> bool:
        try:
            logs = service_client(configuration, "logs", region=function_region(configuration))
        except Exception as exc:  # no region, a bad profile, ...: the logs cannot be read either
            raise RuntimeFailure(
                f"no CloudWatch Logs client for {group}: {type(exc).__name__}: {exc}"
            ) from exc
        return invocation_ended(logs, group, request_id, since_ms=_since_ms(flow_run))

    async def _wait_while_cancelling(self, flow_run_id: UUID, grace_seconds: float) -> str:
        """Wait up to `grace_seconds` while the run is CANCELLING; its state type then."""
        deadline = anyio.current_time() + max(grace_seconds, 0)
        state: str = "CANCELLING"
        while True:
            try:
                current = (await self.client.read_flow_run(flow_run_id)).state
            except Exception as exc:
                self._logger.debug("could not read flow run %s: %s", flow_run_id, exc)
                current = None
            state = current.type.value if current is not None else state
            if state != "CANCELLING" or anyio.current_time() >= deadline:
                return state
            await anyio.sleep(min(KILL_POLL_SECONDS, max(deadline - anyio.current_time(), 0)))
