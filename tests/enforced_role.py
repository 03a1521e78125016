"""The function's role in moto, made from exactly the policy documents the Pulumi program emits.

Shared by the enforcement tests in-process (tests/infra/test_policy_enforced.py) and under the
runtime client (tests/runtime/test_runtime_client_iam.py): the role gets the program's trust and
identity policies through the IAM API, the enforcer (tests/iam_enforcement.py) the resource
policies, and `assume` the credentials Lambda passes to the function. `concrete` rewrites the
program's ARNs to the backend's where the backend chooses its own (a secret's random suffix).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from typing import Any

from iam_enforcement import ACCOUNT, Enforcer
from stack_policies import Emitted

Rewrite = Callable[[str], str]


def _same(text: str) -> str:
    return text


def trust_policy(emitted: Iterable[Emitted], role_resource: str) -> dict[str, Any]:
    """The trust policy of the program's role named `role_resource` (its Pulumi resource name)."""
    return next(e.document for e in emitted if e.name == f"{role_resource}.assumeRolePolicy")


def create_role(
    iam: Any, name: str, trust: dict[str, Any], emitted: Iterable[Emitted], concrete: Rewrite = _same
) -> str:
    """A role with `trust` and every identity document of `emitted` as an inline policy; its ARN."""
    arn = str(iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"])
    for e in emitted:
        if e.kind == "identity":
            policy_name = re.sub(r"[^\w+=,.@-]", "-", e.name)  # IAM's pattern for a policy name
            iam.put_role_policy(
                RoleName=name, PolicyName=policy_name, PolicyDocument=concrete(json.dumps(e.document))
            )
    return arn


def add_resource_policies(enforcer: Enforcer, emitted: Iterable[Emitted], concrete: Rewrite = _same) -> None:
    """The bucket's, queues' and secret's policies, on the ARNs they govern (a bucket's also on its
    objects). The S3 notification queue's is left out: S3 itself sends there, not the role."""
    for e in emitted:
        if e.kind != "resource" or "notifications" in e.name:
            continue
        attached = concrete(e.attached_to)
        patterns = (attached, f"{attached}/*") if attached.startswith("arn:aws:s3") else (attached,)
        for pattern in patterns:
            enforcer.add_resource_policy(pattern, json.loads(concrete(json.dumps(e.document))))


def assume(sts: Any, role_name: str, session: str = "lambda") -> dict[str, str]:
    """The role's temporary credentials under the variable names Lambda sets for the function."""
    arn = f"arn:aws:iam::{ACCOUNT}:role/{role_name}"
    c = sts.assume_role(RoleArn=arn, RoleSessionName=session)["Credentials"]
    return {
        "AWS_ACCESS_KEY_ID": c["AccessKeyId"],
        "AWS_SECRET_ACCESS_KEY": c["SecretAccessKey"],
        "AWS_SESSION_TOKEN": c["SessionToken"],
    }


def without_grant(emitted: Iterable[Emitted], action: str, resource: str) -> list[Emitted]:
    """The same documents with `action` on `resource` no longer allowed and nothing else changed:
    an Allow statement that grants it keeps its other resources, and `resource` keeps the statement's
    other actions. Fails when no identity document grants exactly that (the program changed)."""
    out, found = [], False
    for e in emitted:
        if e.kind != "identity":
            out.append(e)
            continue
        statements = []
        for stmt in _list(e.document["Statement"]):
            actions, resources = _list(stmt["Action"]), _list(stmt.get("Resource", []))
            if stmt["Effect"] != "Allow" or action not in actions or resource not in resources:
                statements.append(stmt)
                continue
            found = True
            if rest := [r for r in resources if r != resource]:
                statements.append({**stmt, "Resource": rest})
            if others := [a for a in actions if a != action]:
                statements.append(
                    {**stmt, "Sid": f"{stmt['Sid']}Reduced", "Action": others, "Resource": [resource]}
                )
        out.append(Emitted(e.name, e.kind, {**e.document, "Statement": statements}, e.attached_to))
    assert found, f"no identity policy grants {action} on {resource}"
    return out


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]
