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

from infra_pulumi.config import VISIBILITY_TIMEOUT_FACTOR

REQUIRED_TAGS = ("Project", "Stack")
# Statements whose `*` is the point: a Deny with a condition (TLS-only, "nobody but the runner").
WILDCARD_OK_EFFECTS = frozenset({"Deny"})
SECRET_MARKERS = ("KEY", "TOKEN", "SECRET", "PASSWORD")


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


def queues_have_dead_letters(resources: Sequence[Resource]) -> list[Violation]:
    """Every queue either has a redrive policy or is another queue's dead-letter target."""
    queues = _of(resources, "aws:sqs/queue:Queue")
    targets = {
        _json(q.inputs["redrivePolicy"]).get("deadLetterTargetArn")
        for q in queues
        if q.inputs.get("redrivePolicy")
    }
    return [
        Violation("dead-letter-queue", q.name, "no redrive policy and not a DLQ")
        for q in queues
        if not q.inputs.get("redrivePolicy") and q.arn not in targets
    ]


def iam_least_privilege(resources: Sequence[Resource]) -> list[Violation]:
    """No Allow with a `*` action (or service:*) and no Allow on a bare `*` resource."""
    out = []
    for p in _of(resources, "aws:iam/rolePolicy:RolePolicy") + _of(resources, "aws:iam/policy:Policy"):
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
    log_groups_have_retention,
    aws_resources_tagged_by_provider,
)


def check(resources: Sequence[Resource], rules: Sequence[Rule] = RULES) -> list[Violation]:
    """Every violation of every rule (empty: the stack passes)."""
    return [v for rule in rules for v in rule(resources)]
