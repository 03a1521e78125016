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
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any, Literal

import anyio
import anyio.abc
from prefect.client.schemas.objects import FlowRun
from prefect.workers.base import BaseJobConfiguration, BaseVariables, BaseWorker, BaseWorkerResult
from pydantic import Field

from flows.core.errors import LambdaInvokeError
from flows.core.names import WORKER_TYPE
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


def _invoke(configuration: LambdaJobConfiguration, payload: bytes) -> dict[str, Any]:
    """One `lambda:Invoke` (blocking; run in a thread). Returns the response with Payload read."""
    from flows.io.aws import aws_client

    sync = configuration.invocation_type == "RequestResponse"
    client = aws_client(
        "lambda",
        region=configuration.region,
        endpoint_url=configuration.endpoint_url,
        # A retried synchronous invoke would run the flow run twice; an async one is idempotent
        # enough (the flow engine refuses to start a run that is already running).
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
    return response


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

    async def run(
        self,
        flow_run: FlowRun,
        configuration: LambdaJobConfiguration,
        # Prefect types the started value as an int (a process id) but only str()s it into the
        # run's infrastructure_pid; a Lambda run's identifier is its request id, a str.
        task_status: anyio.abc.TaskStatus[str] | None = None,  # type: ignore[override]
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
            response = await anyio.to_thread.run_sync(_invoke, configuration, payload)
        except Exception as exc:  # botocore errors: not found, throttled, denied, unreachable
            raise LambdaInvokeError(
                f"invoking function {configuration.function_name} failed: {type(exc).__name__}: {exc}"
            ) from exc
        reason = invoke_failure(response, configuration.function_name)
        if reason:
            raise LambdaInvokeError(reason)
        request_id = response.get("ResponseMetadata", {}).get("RequestId", "")
        logger.info("Lambda accepted flow run %s as request %s", flow_run.id, request_id)
        if task_status is not None:
            task_status.started(request_id)
        return LambdaWorkerResult(identifier=request_id, status_code=0)
