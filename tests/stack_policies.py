"""Every IAM policy document the Pulumi program emits, from the program itself under its mocks.

Shared by the audit (parliament) and the enforcement (moto with IAM on) tests, so both look at the
exact documents `pulumi up` would send, with concrete ARNs, never at copies.
"""

from __future__ import annotations

import json
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pulumi_mocks import ROOT, RecordingMocks, install, run, stack_yaml_config

from infra_pulumi import iam

API_KEY = "pnu_policy-audit-0123456789abcdef0123"
# Where a resource type keeps its policy documents, and what kind they are.
POLICY_INPUTS = {
    ("aws:iam/role:Role", "assumeRolePolicy"): "trust",
    ("aws:iam/rolePolicy:RolePolicy", "policy"): "identity",
    ("aws:iam/policy:Policy", "policy"): "identity",
    ("aws:s3/bucketPolicy:BucketPolicy", "policy"): "resource",
    ("aws:sqs/queuePolicy:QueuePolicy", "policy"): "resource",
    ("aws:secretsmanager/secretPolicy:SecretPolicy", "policy"): "resource",
    ("aws:kms/key:Key", "policy"): "resource",
}


@dataclass(frozen=True)
class Emitted:
    """One policy document: `kind` is identity, trust or resource; `attached_to` the ARN a trust or
    resource policy governs (its implicit resource)."""

    name: str
    kind: str
    document: dict[str, Any]
    attached_to: str = ""


def package_zip(tmp: Path) -> str:
    path = tmp / "runner.zip"
    if not path.exists():
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("flows/__init__.py", "")
    return str(path)


def stack(tmp: Path, prefect: bool, kms: bool = False, name: str = "dev") -> RecordingMocks:
    """The program with Pulumi.dev.yaml; `prefect`: the work-pool stack (secret, invoke-self, failure
    queue); `kms`: SSE-KMS with the stack's own key; `name`: the stack's (its resources' names)."""
    config: dict[str, object] = {
        **stack_yaml_config(ROOT / "Pulumi.dev.yaml"),
        "quest:lambdaPackagePath": package_zip(tmp),
    }
    secrets: list[str] = []
    if prefect:
        config |= {"quest:prefectApiUrl": "https://prefect.example/api", "quest:prefectApiKey": API_KEY}
        secrets = ["prefectApiKey"]
    if kms:
        config["quest:encryption"] = "sse-kms"
    mocks = install(config, secrets, stack=name)

    def program() -> None:
        from infra_pulumi.__main__ import main

        main()

    run(program)
    return mocks


def _attached_to(mocks: RecordingMocks, typ: str, inputs: dict[str, Any], own_arn: str | None) -> str:
    if typ == "aws:iam/role:Role":
        return own_arn or ""
    if typ == "aws:s3/bucketPolicy:BucketPolicy":
        return f"arn:aws:s3:::{inputs['bucket']}"
    if typ == "aws:sqs/queuePolicy:QueuePolicy":
        queue = next(q for q in mocks.of_type("aws:sqs/queue:Queue") if q.id == inputs["queueUrl"])
        return queue.arn or ""
    if typ == "aws:secretsmanager/secretPolicy:SecretPolicy":
        return str(inputs["secretArn"])
    return own_arn or ""


def emitted_policies(mocks: RecordingMocks) -> list[Emitted]:
    """Every document in the program's resources; a policy in an input not listed above fails."""
    found = []
    for r in mocks.resources:
        for key, value in r.inputs.items():
            if not (isinstance(value, str) and re.search(r'"Statement"\s*:', value)):
                continue
            kind = POLICY_INPUTS.get((r.type, key))
            assert kind, f"{r.type}.{key} holds a policy this audit does not know: add it to POLICY_INPUTS"
            attached = _attached_to(mocks, r.type, r.inputs, r.arn) if kind != "identity" else ""
            found.append(Emitted(f"{r.name}.{key}", kind, json.loads(value), attached))
    return found


def worker_policy(mocks: RecordingMocks) -> Emitted:
    """The README's minimal policy for a worker outside AWS, for this stack's ARNs."""
    fn = mocks.one("aws:lambda/function:Function")
    failures = next(q for q in mocks.of_type("aws:sqs/queue:Queue") if q.name.endswith("invoke-failures"))
    group = mocks.one("aws:cloudwatch/logGroup:LogGroup")
    document = iam.worker_policy(fn.arn or "", failures.arn or "", group.outputs["arn"])
    return Emitted("worker (README)", "identity", document)
