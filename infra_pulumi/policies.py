"""Policy-style checks over the resources a program registers, as plain functions.

CrossGuard (`pulumi preview --policy-pack`) needs the CLI, which these machines lack; the same
rules written as functions over `(type, name, inputs)` run in the mock tests today and can be
wrapped as `ResourceValidationPolicy`/`StackValidationPolicy` in a policy pack later.
Input property names are the engine's camelCase names.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from flows.core.names import INVOKE_MAX_EVENT_AGE_SECONDS, INVOKE_MAX_RETRY_ATTEMPTS
from infra_pulumi.config import POLL_CONCURRENCY, VISIBILITY_TIMEOUT_FACTOR

REQUIRED_TAGS = ("Project", "Stack")
# Statements whose `*` is the point: a Deny with a condition (TLS-only, "nobody but the runner").
WILDCARD_OK_EFFECTS = frozenset({"Deny"})
SECRET_MARKERS = ("KEY", "TOKEN", "SECRET", "PASSWORD")
WORK_POOL_TYPE = "pulumi-python:dynamic/quest:PrefectWorkPool"
INVOKE_CONFIG_TYPE = "aws:lambda/functionEventInvokeConfig:FunctionEventInvokeConfig"


@dataclass(frozen=True)
class Resource:
    type: str
    name: str
    inputs: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)
    provider: str = ""
    id: str = ""

    @property
    def arn(self) -> str | None:
        return self.outputs.get("arn") or self.inputs.get("arn")


@dataclass(frozen=True)
class Violation:
    rule: str
    resource: str
    message: str

    def __str__(self) -> str:
        return f"[{self.rule}] {self.resource}: {self.message}"


Rule = Callable[[Sequence[Resource]], list[Violation]]


def _of(resources: Iterable[Resource], typ: str) -> list[Resource]:
    return [r for r in resources if r.type == typ]


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


def _statements(policy: Any) -> list[dict[str, Any]]:
    return _as_list((_json(policy) or {}).get("Statement"))


# --------------------------------------------------------------------------- rules


def buckets_block_public_access(resources: Sequence[Resource]) -> list[Violation]:
    blocks = _of(resources, "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock")
    flags = ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets")
    out = [
        Violation("public-access-block", b.name, f"{f} is not true")
        for b in blocks
        for f in flags
        if b.inputs.get(f) is not True
    ]
    if len(blocks) < len(_of(resources, "aws:s3/bucket:Bucket")):
        out.append(Violation("public-access-block", "*", "a bucket has no public access block"))
    return out


def buckets_encrypted(resources: Sequence[Resource]) -> list[Violation]:
    configs = _of(
        resources, "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration"
    )
    out = []
    for c in configs:
        for rule in _as_list(c.inputs.get("rules")):
            algo = (rule.get("applyServerSideEncryptionByDefault") or {}).get("sseAlgorithm")
            if algo not in ("AES256", "aws:kms", "aws:kms:dsse"):
                out.append(Violation("bucket-encryption", c.name, f"default encryption is {algo!r}"))
    if len(configs) < len(_of(resources, "aws:s3/bucket:Bucket")):
        out.append(Violation("bucket-encryption", "*", "a bucket has no default encryption"))
    return out


def buckets_versioned(resources: Sequence[Resource]) -> list[Violation]:
    out = [
        Violation("bucket-versioning", v.name, "versioning is not Enabled")
        for v in _of(resources, "aws:s3/bucketVersioning:BucketVersioning")
        if (v.inputs.get("versioningConfiguration") or {}).get("status") != "Enabled"
    ]
    if len(_of(resources, "aws:s3/bucketVersioning:BucketVersioning")) < len(
        _of(resources, "aws:s3/bucket:Bucket")
    ):
        out.append(Violation("bucket-versioning", "*", "a bucket has no versioning"))
    return out


def buckets_deny_insecure_transport(resources: Sequence[Resource]) -> list[Violation]:
    ok = 0
    for p in _of(resources, "aws:s3/bucketPolicy:BucketPolicy"):
        for s in _statements(p.inputs.get("policy")):
            cond = (s.get("Condition") or {}).get("Bool", {})
            if s.get("Effect") == "Deny" and str(cond.get("aws:SecureTransport")).lower() == "false":
                ok += 1
                break
    if ok < len(_of(resources, "aws:s3/bucket:Bucket")):
        return [Violation("tls-only", "*", "a bucket policy does not deny requests without TLS")]
    return []


def queues_encrypted(resources: Sequence[Resource]) -> list[Violation]:
    return [
        Violation("queue-encryption", q.name, "neither SSE-SQS nor a KMS key")
        for q in _of(resources, "aws:sqs/queue:Queue")
        if not (q.inputs.get("sqsManagedSseEnabled") is True or q.inputs.get("kmsMasterKeyId"))
    ]


def _failure_destination(config: Resource) -> Any:
    return (((config.inputs.get("destinationConfig") or {}).get("onFailure")) or {}).get("destination")


def queues_have_dead_letters(resources: Sequence[Resource]) -> list[Violation]:
    """Every queue has a redrive policy, or is itself where failures end: another queue's
    dead-letter target, or a function's on-failure destination (its records are the dead letters
    of async invokes)."""
    queues = _of(resources, "aws:sqs/queue:Queue")
    targets = {
        _json(q.inputs["redrivePolicy"]).get("deadLetterTargetArn")
        for q in queues
        if q.inputs.get("redrivePolicy")
    }
    targets |= {_failure_destination(c) for c in _of(resources, INVOKE_CONFIG_TYPE)}
    return [
        Violation("dead-letter-queue", q.name, "no redrive policy and not a DLQ")
        for q in queues
        if not q.inputs.get("redrivePolicy") and q.arn not in targets
    ]


def _function_of(config: Resource, functions: Sequence[Resource]) -> Resource | None:
    ref = config.inputs.get("functionName")
    return next((f for f in functions if ref and ref in (f.arn, f.outputs.get("name"), f.id)), None)


def async_invokes_have_failure_destination(resources: Sequence[Resource]) -> list[Violation]:
    """Every function's async invokes, on every stack: no Lambda retries, the event age bounded,
    failures to an SQS queue of this stack (the poll reads them back where there is a work pool).
    Without a config Lambda retries twice over six hours and keeps no record (runner.py)."""
    functions = _of(resources, "aws:lambda/function:Function")
    queue_arns = {q.arn for q in _of(resources, "aws:sqs/queue:Queue")}
    configured: set[str] = set()
    out = []
    for config in _of(resources, INVOKE_CONFIG_TYPE):
        fn = _function_of(config, functions)
        if fn is not None:
            configured.add(fn.name)
        if _failure_destination(config) not in queue_arns:
            out.append(
                Violation("invoke-failure-destination", config.name, "on-failure is not a stack queue")
            )
        if config.inputs.get("maximumRetryAttempts") != INVOKE_MAX_RETRY_ATTEMPTS:
            out.append(Violation("invoke-failure-destination", config.name, "Lambda retries async invokes"))
        if config.inputs.get("maximumEventAgeInSeconds") != INVOKE_MAX_EVENT_AGE_SECONDS:
            out.append(Violation("invoke-failure-destination", config.name, "event age is not bounded"))
    out += [
        Violation(
            "invoke-failure-destination", f.name, "no async invoke config with an on-failure destination"
        )
        for f in functions
        if f.name not in configured
    ]
    return out


def work_pool_concurrency_is_reserved(resources: Sequence[Resource]) -> list[Violation]:
    """With a work pool: the pool has a run limit, and the function reserves exactly the runs, the
    SQS mappings' maximum concurrency and the poll — so none starves the others."""
    pools = _of(resources, WORK_POOL_TYPE)
    if not pools:
        return []
    out = []
    runs = 0
    for pool in pools:
        limit = pool.inputs.get("concurrency_limit")
        if not limit:
            out.append(Violation("concurrency-budget", pool.name, "the work pool has no concurrency limit"))
        runs += int(limit or 0)
    mappings = _of(resources, "aws:lambda/eventSourceMapping:EventSourceMapping")
    for fn in _of(resources, "aws:lambda/function:Function"):
        reports = 0
        for m in mappings:
            if fn.arn and m.inputs.get("functionName") in (fn.arn, fn.outputs.get("name")):
                maximum = (m.inputs.get("scalingConfig") or {}).get("maximumConcurrency")
                if not maximum:
                    out.append(Violation("concurrency-budget", m.name, "no scalingConfig.maximumConcurrency"))
                reports += int(maximum or 0)
        expected = runs + reports + POLL_CONCURRENCY
        reserved = fn.inputs.get("reservedConcurrentExecutions")
        if reserved != expected:
            message = f"reserved concurrency {reserved}, expected {runs} runs + {reports} reports + poll"
            out.append(Violation("concurrency-budget", fn.name, message))
    return out


def iam_least_privilege(resources: Sequence[Resource]) -> list[Violation]:
    """No Allow with a `*` action (or service:*) and no Allow on a bare `*` resource, in a role's
    policy or a queue's resource policy."""
    out = []
    documents = [*_of(resources, "aws:iam/rolePolicy:RolePolicy"), *_of(resources, "aws:iam/policy:Policy")]
    for p in [*documents, *_of(resources, "aws:sqs/queuePolicy:QueuePolicy")]:
        for s in _statements(p.inputs.get("policy")):
            if s.get("Effect") in WILDCARD_OK_EFFECTS:
                continue
            for action in _as_list(s.get("Action")):
                if action == "*" or str(action).endswith(":*"):
                    out.append(Violation("iam-no-wildcard-action", p.name, f"{s.get('Sid')}: {action}"))
            for res in _as_list(s.get("Resource")):
                if res == "*":
                    out.append(Violation("iam-no-wildcard-resource", p.name, f"{s.get('Sid')}: *"))
    return out


def lambdas_have_no_plaintext_secrets(resources: Sequence[Resource]) -> list[Violation]:
    """Env vars named like a secret must hold a reference (an ARN), never the value."""
    out = []
    for f in _of(resources, "aws:lambda/function:Function"):
        env = ((f.inputs.get("environment") or {}).get("variables")) or {}
        for name, value in env.items():
            if any(m in name.upper() for m in SECRET_MARKERS) and not str(value).startswith("arn:"):
                out.append(Violation("no-plaintext-secret", f.name, f"{name} holds a value, not an ARN"))
    return out


def sqs_mappings_report_item_failures(resources: Sequence[Resource]) -> list[Violation]:
    return [
        Violation("partial-batch-response", m.name, "functionResponseTypes lacks ReportBatchItemFailures")
        for m in _of(resources, "aws:lambda/eventSourceMapping:EventSourceMapping")
        if "ReportBatchItemFailures" not in _as_list(m.inputs.get("functionResponseTypes"))
    ]


def queue_visibility_covers_function(resources: Sequence[Resource]) -> list[Violation]:
    """Each queue a function consumes: visibility timeout ≥ 6x that function's timeout."""
    functions = _of(resources, "aws:lambda/function:Function")
    queues = _of(resources, "aws:sqs/queue:Queue")
    out = []
    for mapping in _of(resources, "aws:lambda/eventSourceMapping:EventSourceMapping"):
        fn = next((f for f in functions if f.arn and f.arn == mapping.inputs.get("functionName")), None)
        queue = next((q for q in queues if q.arn and q.arn == mapping.inputs.get("eventSourceArn")), None)
        if fn is None or queue is None:
            out.append(Violation("visibility-timeout", mapping.name, "cannot resolve its function or queue"))
            continue
        timeout = int(fn.inputs.get("timeout") or 3)  # AWS's defaults when unset
        visibility = int(queue.inputs.get("visibilityTimeoutSeconds") or 30)
        if visibility < VISIBILITY_TIMEOUT_FACTOR * timeout:
            message = f"{visibility}s < {VISIBILITY_TIMEOUT_FACTOR}x {timeout}s"
            out.append(Violation("visibility-timeout", queue.name, message))
    return out


def log_groups_have_retention(resources: Sequence[Resource]) -> list[Violation]:
    return [
        Violation("log-retention", g.name, "no retentionInDays (logs kept forever)")
        for g in _of(resources, "aws:cloudwatch/logGroup:LogGroup")
        if not g.inputs.get("retentionInDays")
    ]


def aws_resources_tagged_by_provider(resources: Sequence[Resource]) -> list[Violation]:
    """Every AWS resource uses a provider whose default tags include Project and Stack."""
    providers = {}
    for p in _of(resources, "pulumi:providers:aws"):
        tags = (_json(p.inputs.get("defaultTags")) or {}).get("tags") or {}
        providers[p.name] = tags
    out = []
    for p_name, tags in providers.items():
        missing = [t for t in REQUIRED_TAGS if not tags.get(t)]
        if missing:
            out.append(Violation("default-tags", p_name, f"default tags lack {missing}"))
    for r in resources:
        if not r.type.startswith("aws:"):
            continue
        # A provider reference is "<provider urn>::<provider id>"; the urn ends with its name.
        urn = r.provider.rsplit("::", 1)[0]
        if urn.rsplit("::", 1)[-1] not in providers or ":providers:aws" not in urn.replace("$", ":"):
            out.append(Violation("default-tags", r.name, "not created through the tagged aws provider"))
    return out


RULES: tuple[Rule, ...] = (
    buckets_block_public_access,
    buckets_encrypted,
    buckets_versioned,
    buckets_deny_insecure_transport,
    queues_encrypted,
    queues_have_dead_letters,
    iam_least_privilege,
    lambdas_have_no_plaintext_secrets,
    sqs_mappings_report_item_failures,
    queue_visibility_covers_function,
    async_invokes_have_failure_destination,
    work_pool_concurrency_is_reserved,
    log_groups_have_retention,
    aws_resources_tagged_by_provider,
)


def check(resources: Sequence[Resource], rules: Sequence[Rule] = RULES) -> list[Violation]:
    """Every violation of every rule (empty: the stack passes)."""
    return [v for rule in rules for v in rule(resources)]
