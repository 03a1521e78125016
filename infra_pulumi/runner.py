"""Runner: the one Lambda function (SQS reports, Prefect flow runs, schedules) with its least-privilege role.

The function's entry paths are chosen by event shape in `flows.runtime.handler`; this module wires the
events (SQS mapping, EventBridge schedule) and gives the role exactly what those paths use. It also
owns the async invokes' retry and event-age settings and their on-failure destination, on every stack
(see `Runner` for each async path), and on the work-pool path a reserved concurrency sized with the
pool's run limit.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TypedDict

import pulumi
import pulumi_aws as aws

from flows.core.names import (
    DLQ_RETENTION_SECONDS,
    ENV_BLS_BASE_URL,
    ENV_BLS_MAX_CONCURRENT_REQUESTS,
    ENV_BLS_REQUESTS_PER_SECOND,
    ENV_BLS_SURVEYS,
    ENV_CONTACT,
    ENV_FUNCTION_TIMEOUT_SECONDS,
    ENV_INVOKE_FAILURE_QUEUE_URL,
    ENV_POPULATION_URL,
    ENV_PREFECT_API_KEY_SECRET_ARN,
    ENV_STORE,
    HEARTBEAT_FREQUENCY_SECONDS,
    INVOKE_MAX_EVENT_AGE_SECONDS,
    INVOKE_MAX_RETRY_ATTEMPTS,
    LAMBDA_HANDLER,
    LAMBDA_PREFECT_HOME,
)
from flows.core.wiring import Document
from infra_pulumi import iam
from infra_pulumi.config import REPORTS_MAX_CONCURRENCY
from infra_pulumi.package import BuiltPackage

RUNTIME = "python3.12"
HANDLER = LAMBDA_HANDLER
ARCHITECTURE = "x86_64"  # the package is built for manylinux x86_64 wheels
# Prefect's own variable names (not ours to rename).
ENV_PREFECT_API_URL = "PREFECT_API_URL"
ENV_PREFECT_HOME = "PREFECT_HOME"
ENV_DO_NOT_TRACK = "DO_NOT_TRACK"
ENV_HEARTBEAT_FREQUENCY = "PREFECT_FLOWS_HEARTBEAT_FREQUENCY"
# Code objects live outside the data prefixes, so the function's role cannot touch them.
CODE_PREFIX = "lambda-code/"
# EventBridge's own retries of a schedule's delivery to Lambda (a throttled or failed Invoke call:
# nothing ran yet, so retrying is safe). Its default is 185 attempts over 24 hours; the event age
# bounds them instead: the daily ingest as Lambda's own queue does (INVOKE_MAX_EVENT_AGE_SECONDS),
# the every-minute poll to EventBridge's minimum, 60 s (the next poll does the same work).
# https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-rule-retry-policy.html
SCHEDULE_MAX_RETRY_ATTEMPTS = 185
POLL_MAX_EVENT_AGE_SECONDS = 60


@dataclass(frozen=True, kw_only=True)
class RunnerArgs:
    """The function's code, the resources it is wired to, and its settings from the stack config.

    One flat object: the settings are read only by `function_environment` and a handful of
    resource properties, so a separate settings class would only add a level to every call.
    """

    # The code and the resources the function is wired to (other components' outputs).
    package: BuiltPackage
    bucket_name: pulumi.Input[str]
    bucket_arn: pulumi.Input[str]
    queue_arn: pulumi.Input[str]
    region: str
    kms_key_arn: pulumi.Input[str] | None = None  # with SSE-KMS: the role may use the bucket key
    prefect_api_key: pulumi.Output[str] | None = None  # a secret; the function gets its secret's ARN
    # Settings (plain values; they become the function's environment and properties).
    contact: str
    bls_surveys: list[str]
    timeout_seconds: int
    memory_mb: int
    batch_size: int
    batching_window_seconds: int
    log_retention_days: int
    bls_base_url: str | None = None
    population_url: str | None = None
    prefect_api_url: str | None = None
    # Politeness to BLS: the function's own numbers, in force where its Prefect API has no
    # global limits (stacks without a work pool); with the pool, the limits.py limits rule.
    bls_max_concurrent_requests: int | None = None
    bls_requests_per_second: float | None = None
    # The work-pool path: a poll inside the function submits flow runs as async invokes of the
    # function; their failures go to an on-failure destination queue the poll reads back.
    invoke_self: bool = False
    # The function's reserved concurrency (config.function_reserved_concurrency); None: unreserved.
    reserved_concurrency: int | None = None
    # The SQS mapping's maximum concurrency, part of the reserved concurrency's sum.
    reports_max_concurrency: int = REPORTS_MAX_CONCURRENCY
    extra_env: Mapping[str, str] = field(default_factory=dict)


def runner_role_policy(grants: iam.RunnerGrants, invoke_failure_queue_arn: str) -> Document:
    """The role's policy: `iam.runner_policy`, and sending to the on-failure destination where the
    grants do not hold it already (without a work pool nothing reads the queue, so only SendMessage:
    Lambda delivers the record with the function's role)."""
    doc = iam.runner_policy(grants)
    if grants.invoke_failure_queue_arn != invoke_failure_queue_arn:
        doc["Statement"].append(
            iam.statement("SendInvokeFailures", iam.SEND_FAILURE_ACTIONS, [invoke_failure_queue_arn])
        )
    return doc


class _Code(TypedDict, total=False):
    """Where the function's code comes from: the zip itself, or an S3 object holding it."""

    code: pulumi.Archive
    s3_bucket: pulumi.Output[str]
    s3_key: pulumi.Output[str]


def function_environment(
    args: RunnerArgs,
    bucket_name: str,
    secret_arn: str | None = None,
    invoke_failure_queue_url: str | None = None,
) -> dict[str, str]:
    """The function's environment, under the names `flows.settings` and Prefect read."""
    env = {
        ENV_STORE: f"s3://{bucket_name}",
        ENV_BLS_SURVEYS: ",".join(args.bls_surveys),
        ENV_CONTACT: args.contact,
        ENV_PREFECT_HOME: LAMBDA_PREFECT_HOME,  # the code directory is read-only
        ENV_DO_NOT_TRACK: "1",
        # So a run ended at the deadline can name the limit it hit.
        ENV_FUNCTION_TIMEOUT_SECONDS: str(args.timeout_seconds),
    }
    if args.bls_base_url:
        env[ENV_BLS_BASE_URL] = args.bls_base_url
    if args.population_url:
        env[ENV_POPULATION_URL] = args.population_url
    if args.bls_max_concurrent_requests is not None:
        env[ENV_BLS_MAX_CONCURRENT_REQUESTS] = str(args.bls_max_concurrent_requests)
    if args.bls_requests_per_second is not None:
        env[ENV_BLS_REQUESTS_PER_SECOND] = f"{args.bls_requests_per_second:g}"
    if args.prefect_api_url:
        env[ENV_PREFECT_API_URL] = args.prefect_api_url
        # Flow-run heartbeats, which the zombie-run automation (automation.py) watches.
        env[ENV_HEARTBEAT_FREQUENCY] = str(HEARTBEAT_FREQUENCY_SECONDS)
    if invoke_failure_queue_url:
        env[ENV_INVOKE_FAILURE_QUEUE_URL] = invoke_failure_queue_url
    if secret_arn:
        env[ENV_PREFECT_API_KEY_SECRET_ARN] = secret_arn
    env.update(args.extra_env)
    return env


class Runner(pulumi.ComponentResource):
    """The flow-runner Lambda, its role and policies, log group, API-key secret and SQS mapping."""

    function: aws.lambda_.Function
    function_name: pulumi.Output[str]
    function_arn: pulumi.Output[str]
    role_arn: pulumi.Output[str]
    log_group_name: pulumi.Output[str]
    secret_arn: pulumi.Output[str] | None
    invoke_failure_queue_url: pulumi.Output[str]

    def __init__(self, name: str, args: RunnerArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("quest:runner:Runner", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)

        log_group = aws.cloudwatch.LogGroup(
            f"{name}-logs",
            name=f"/aws/lambda/{name}",  # one readable group per stack; the function logs here
            retention_in_days=args.log_retention_days,
            opts=child,
        )
        role = aws.iam.Role(
            f"{name}-role",
            description=f"{name}: the flow-runner function (only what its entry paths use)",
            assume_role_policy=json.dumps(iam.lambda_assume_role_policy()),
            opts=child,
        )

        self.secret_arn = None
        secret_deps: list[pulumi.Resource] = []
        if args.prefect_api_key is not None:
            api_key: pulumi.Output[str] = pulumi.Output.secret(args.prefect_api_key)
            secret = aws.secretsmanager.Secret(
                f"{name}-prefect-api-key",
                description="Prefect API key for the flow-runner function",
                recovery_window_in_days=7,
                opts=child,
            )
            version = aws.secretsmanager.SecretVersion(
                f"{name}-prefect-api-key-value",
                secret_id=secret.id,
                secret_string=api_key,
                opts=child,
            )
            aws.secretsmanager.SecretPolicy(
                f"{name}-prefect-api-key-policy",
                secret_arn=secret.arn,
                policy=pulumi.Output.all(secret.arn, role.arn).apply(
                    lambda arns: json.dumps(iam.secret_reader_policy(*arns))
                ),
                opts=child,
            )
            self.secret_arn = secret.arn
            secret_deps.append(version)

        # Every stack's on-failure destination: an async invoke that fails (an error, a timeout, a
        # killed runtime, or throttled past the event age) leaves its record here. With a work pool
        # the poll reads the records back; without one they wait 14 days to be read (and redriven).
        failures = aws.sqs.Queue(
            f"{name}-invoke-failures",
            sqs_managed_sse_enabled=True,
            message_retention_seconds=DLQ_RETENTION_SECONDS,  # 14 days, the SQS maximum
            opts=child,
        )
        aws.sqs.QueuePolicy(
            f"{name}-invoke-failures-policy",
            queue_url=failures.url,
            policy=pulumi.Output.all(failures.arn, role.arn).apply(
                lambda arns: json.dumps(iam.invoke_failure_queue_policy(*arns))
            ),
            opts=child,
        )
        self.invoke_failure_queue_url = failures.url

        grants = pulumi.Output.all(
            args.bucket_arn, args.queue_arn, log_group.arn, self.secret_arn, args.kms_key_arn, failures.arn
        ).apply(
            lambda a: iam.RunnerGrants(
                bucket_arn=a[0],
                queue_arn=a[1],
                log_group_arn=a[2],
                secret_arn=a[3],
                kms_key_arn=a[4],
                region=args.region,
                # Reading the records back is the work-pool path's (the poll); sending is every stack's.
                invoke_failure_queue_arn=a[5] if args.invoke_self else None,
                read_own_logs=args.invoke_self,
            )
        )
        policy = aws.iam.RolePolicy(
            f"{name}-policy",
            role=role.id,
            policy=pulumi.Output.all(grants, failures.arn).apply(
                lambda a: json.dumps(runner_role_policy(a[0], a[1]))
            ),
            opts=child,
        )

        code = self._code(name, args.package, args.bucket_name, child)
        # Only the poll path reads the destination, so only it is told where the queue is.
        environment = pulumi.Output.all(
            args.bucket_name, self.secret_arn, failures.url if args.invoke_self else None
        ).apply(lambda a: function_environment(args, a[0], a[1], a[2]))
        self.function = aws.lambda_.Function(
            f"{name}-function",
            description="quest: reports on S3 events, Prefect flow runs, scheduled ingest",
            runtime=RUNTIME,
            handler=HANDLER,
            architectures=[ARCHITECTURE],
            role=role.arn,
            timeout=args.timeout_seconds,
            memory_size=args.memory_mb,
            reserved_concurrent_executions=args.reserved_concurrency,
            source_code_hash=args.package.source_code_hash,
            environment={"variables": environment},
            logging_config={"log_format": "Text", "log_group": log_group.name},
            **code,
            # The role's permissions must exist before the first invocation; the secret's value too.
            opts=pulumi.ResourceOptions(parent=self, depends_on=[policy, log_group, *secret_deps]),
        )

        if args.invoke_self:
            aws.iam.RolePolicy(
                f"{name}-invoke-self",
                role=role.id,
                policy=self.function.arn.apply(lambda arn: json.dumps(iam.invoke_self_policy(arn))),
                opts=child,
            )
        # One config covers every async invoke of the (unqualified) function; Lambda's defaults
        # would be 2 retries and 6 hours. The stack's async paths, each with the same choice:
        # - the worker's Event invokes of flow runs (deployments, the ingest's fan-out and its
        #   continuations): no retries, a crashed run is RUNNING and Prefect would refuse it again;
        # - EventBridge's every-minute poll: a retry would only repeat what the next poll does;
        # - EventBridge's daily ingest (no work pool): a failed or timed-out ingest would fail the
        #   same way against the same upstream, twice more; the mirror resumes on the next day.
        # An invoke still throttled after an hour goes to the destination instead of running late.
        # (The SQS mapping invokes synchronously: its retries are the queue's redrive policy.)
        # https://docs.aws.amazon.com/lambda/latest/dg/invocation-async-configuring.html
        # https://docs.aws.amazon.com/lambda/latest/dg/invocation-async-retain-records.html
        aws.lambda_.FunctionEventInvokeConfig(
            f"{name}-async-invokes",
            function_name=self.function.name,
            maximum_retry_attempts=INVOKE_MAX_RETRY_ATTEMPTS,
            maximum_event_age_in_seconds=INVOKE_MAX_EVENT_AGE_SECONDS,
            destination_config={"on_failure": {"destination": failures.arn}},
            # Lambda checks the role may send to the destination when it is configured.
            opts=pulumi.ResourceOptions(parent=self, depends_on=[policy]),
        )

        # ReportBatchItemFailures: the handler returns the failed message ids, so one bad
        # snapshot does not send the whole batch back to the queue.
        aws.lambda_.EventSourceMapping(
            f"{name}-sqs",
            event_source_arn=args.queue_arn,
            function_name=self.function.arn,
            batch_size=args.batch_size,
            maximum_batching_window_in_seconds=args.batching_window_seconds,
            function_response_types=["ReportBatchItemFailures"],
            # Explicit, because the function's reserved concurrency counts it (config.py).
            scaling_config={"maximum_concurrency": args.reports_max_concurrency},
            # AWS checks the role can read the queue when the mapping is created.
            opts=pulumi.ResourceOptions(parent=self, depends_on=[policy]),
        )

        self.function_name = self.function.name
        self.function_arn = self.function.arn
        self.role_arn = role.arn
        self.log_group_name = log_group.name
        self.register_outputs(
            {
                "function_name": self.function_name,
                "function_arn": self.function_arn,
                "role_arn": self.role_arn,
                "log_group_name": self.log_group_name,
                "invoke_failure_queue_url": self.invoke_failure_queue_url,
            }
        )

    def _code(
        self,
        name: str,
        package: BuiltPackage,
        bucket_name: pulumi.Input[str],
        child: pulumi.ResourceOptions,
    ) -> _Code:
        """Direct upload under Lambda's 50 MB limit, else through an S3 object named by its hash."""
        archive = pulumi.FileArchive(str(package.path))
        if not package.needs_s3_upload:
            return {"code": archive}
        obj = aws.s3.BucketObjectv2(
            f"{name}-code",
            bucket=bucket_name,
            key=f"{CODE_PREFIX}runner-{package.sha256[:16]}.zip",
            source=pulumi.FileAsset(str(package.path)),
            content_type="application/zip",
            opts=child,
        )
        return {"s3_bucket": obj.bucket, "s3_key": obj.key}


@dataclass(frozen=True, kw_only=True)
class RunnerScheduleArgs:
    """The function to invoke, when, and with what event."""

    function_arn: pulumi.Input[str]
    schedule_expression: str  # cron(...) or rate(...)
    # None: EventBridge's own `Scheduled Event` (the ingest); a mapping: that JSON event instead.
    payload: pulumi.Input[Mapping[str, object]] | None = None
    description: str = ""
    # How long EventBridge keeps retrying a delivery it could not make (SCHEDULE_MAX_RETRY_ATTEMPTS).
    max_event_age_seconds: int = INVOKE_MAX_EVENT_AGE_SECONDS


class RunnerSchedule(pulumi.ComponentResource):
    """An EventBridge rule invoking the runner: the daily ingest, or the work-pool poll."""

    rule_arn: pulumi.Output[str]

    def __init__(
        self, name: str, args: RunnerScheduleArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("quest:runner:RunnerSchedule", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        rule = aws.cloudwatch.EventRule(
            f"{name}-rule",
            schedule_expression=args.schedule_expression,
            description=args.description,
            opts=child,
        )
        # Without a payload the function receives EventBridge's own `Scheduled Event`
        # (source aws.events), which flows.runtime.handler routes to the ingest flow.
        target_input = (
            None if args.payload is None else pulumi.Output.from_input(args.payload).apply(json.dumps)
        )
        permission = aws.lambda_.Permission(
            f"{name}-may-invoke",
            action="lambda:InvokeFunction",
            function=args.function_arn,
            principal="events.amazonaws.com",
            source_arn=rule.arn,
            opts=child,
        )
        aws.cloudwatch.EventTarget(
            f"{name}-target",
            rule=rule.name,
            arn=args.function_arn,
            input=target_input,
            retry_policy={
                "maximum_event_age_in_seconds": args.max_event_age_seconds,
                "maximum_retry_attempts": SCHEDULE_MAX_RETRY_ATTEMPTS,
            },
            opts=pulumi.ResourceOptions(parent=self, depends_on=[permission]),
        )
        self.rule_arn = rule.arn
        self.register_outputs({"rule_arn": self.rule_arn})
