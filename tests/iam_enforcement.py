"""IAM decided the way AWS decides it, on moto's in-process AWS (issue 28, "Least privilege, proven").

moto authenticates (SigV4 signature, the assumed role's session token, the role's policies as the
IAM API stored them), but its decision is not AWS's (moto 5.2, `moto/iam/access_control.py`):
- it authorises an S3 call by its API operation name (`s3:ListObjectsV2`, `s3:HeadObject`), which no
  policy grants, not by the IAM action (`s3:ListBucket`, `s3:GetObject`);
- it authorises Lambda, Secrets Manager and CloudWatch Logs calls against the resource `*`, so a
  grant on one ARN never matches and a grant on another never fails;
- it skips condition operators it does not know (`StringLike`), passes `StringEquals` on a key the
  request lacks, turns any failed condition into an explicit Deny, and reads no resource policy.

So this thin layer replaces only the decision: each request's operation is mapped to the IAM
action(s), resource ARN and condition keys from AWS's Service Authorization Reference, and the
policies are evaluated with AWS's rules (explicit Deny wins, then any Allow from the identity or a
same-account resource policy, else an implicit deny). A condition operator it cannot evaluate, or an
operation it has no mapping for, fails the test instead of passing.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from unittest import mock
from urllib.parse import unquote

ACCOUNT = "123456789012"


class Unevaluable(AssertionError):
    """The layer cannot decide a request the way AWS would: the test must say so, not pass."""


@dataclass(frozen=True)
class Request:
    """One IAM authorisation: what AWS evaluates for one action of one API call."""

    action: str
    resource: str
    context: Mapping[str, str] = field(default_factory=dict)


@dataclass
class Decision:
    operation: str
    request: Request
    allowed: bool
    why: str


# --------------------------------------------------------------------------- evaluation (AWS's rules)


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _like(pattern: str, value: str) -> bool:
    """IAM wildcards (`*`, `?`), case-sensitive, as ARNs and StringLike match."""
    return fnmatch.fnmatchcase(value, pattern.replace("[", "[[]"))


def _action_matches(patterns: Any, action: str) -> bool:
    return any(_like(p.lower(), action.lower()) for p in _list(patterns))  # actions: any case


# Negated operators match when the key is absent; the others do not (IAM's condition operators).
_OPERATORS = {
    "StringEquals": (lambda want, got: got == want, False),
    "StringNotEquals": (lambda want, got: got != want, True),
    "StringLike": (lambda want, got: _like(want, got), False),
    "StringNotLike": (lambda want, got: not _like(want, got), True),
    "ArnEquals": (lambda want, got: got == want, False),
    "ArnLike": (lambda want, got: _like(want, got), False),
    "Bool": (lambda want, got: got.lower() == str(want).lower(), False),
}


def _conditions_hold(conditions: Mapping[str, Mapping[str, Any]], context: Mapping[str, str]) -> bool:
    for operator, keys in conditions.items():
        if operator not in _OPERATORS:
            raise Unevaluable(f"condition operator {operator} is not evaluated here")
        test, negated = _OPERATORS[operator]
        for key, wanted in keys.items():
            if key not in context:
                if not negated:
                    return False
                continue
            values = _list(wanted)
            # A negated operator holds when the value matches none; the others when it matches any.
            hits = [test(w, context[key]) for w in values]
            if not (all(hits) if negated else any(hits)):
                return False
    return True


def _principal_matches(principal: Any, who: str) -> bool:
    if principal == "*":
        return True
    if isinstance(principal, Mapping):
        for kind, values in principal.items():
            for value in _list(values):
                if value == "*" or value == who or (kind == "Service" and who == f"service:{value}"):
                    return True
    return False


def statement_effect(stmt: Mapping[str, Any], request: Request, principal: str | None) -> str | None:
    """'Allow'/'Deny' when the statement applies to the request, else None."""
    if "NotAction" in stmt or "NotResource" in stmt or "NotPrincipal" in stmt:
        raise Unevaluable(f"{stmt.get('Sid')}: Not* elements are not evaluated here")
    if not _action_matches(stmt["Action"], request.action):
        return None
    if "Resource" in stmt and not any(_like(r, request.resource) for r in _list(stmt["Resource"])):
        return None
    if principal is not None and "Principal" in stmt and not _principal_matches(stmt["Principal"], principal):
        return None
    if not _conditions_hold(stmt.get("Condition") or {}, request.context):
        return None
    return str(stmt["Effect"])


def decide(
    identity: Sequence[Mapping[str, Any]],
    resource_policies: Sequence[Mapping[str, Any]],
    request: Request,
    principal: str,
) -> tuple[bool, str]:
    """AWS's same-account evaluation: an explicit Deny anywhere wins; then an Allow in the identity's
    policies or the resource's policy; else the implicit deny."""
    allowed_by = ""
    for kind, docs, who in (("identity", identity, None), ("resource", resource_policies, principal)):
        for doc in docs:
            for stmt in _list(doc["Statement"]):
                effect = statement_effect(stmt, request, who)
                if effect == "Deny":
                    return False, f"explicit Deny {stmt.get('Sid')} ({kind} policy)"
                if effect == "Allow" and not allowed_by:
                    allowed_by = f"Allow {stmt.get('Sid')} ({kind} policy)"
    return (True, allowed_by) if allowed_by else (False, "no statement allows it (implicit deny)")


# --------------------------------------------------------------------------- operations -> IAM requests

# Service Authorization Reference: the action(s) each API operation is authorised as, where it is not
# the operation's own name. S3's multipart and copy operations are PutObject (and GetObject on the
# copy source); HeadObject is GetObject; listing is ListBucket (on the bucket, with `s3:prefix`).
_S3_ACTIONS = {
    "ListObjectsV2": "s3:ListBucket",
    "ListObjects": "s3:ListBucket",
    "HeadBucket": "s3:ListBucket",
    "GetObject": "s3:GetObject",
    "HeadObject": "s3:GetObject",
    "PutObject": "s3:PutObject",
    "CopyObject": "s3:PutObject",
    "CreateMultipartUpload": "s3:PutObject",
    "UploadPart": "s3:PutObject",
    "UploadPartCopy": "s3:PutObject",
    "CompleteMultipartUpload": "s3:PutObject",
    "AbortMultipartUpload": "s3:AbortMultipartUpload",
    "ListParts": "s3:ListMultipartUploadParts",
    "DeleteObject": "s3:DeleteObject",
    "ListMultipartUploads": "s3:ListBucketMultipartUploads",
}
# SQS batch operations are authorised as their single-message action.
_SQS_BATCH = {
    "DeleteMessageBatch": "DeleteMessage",
    "SendMessageBatch": "SendMessage",
    "ChangeMessageVisibilityBatch": "ChangeMessageVisibility",
}
_LAMBDA_ACTIONS = {"Invoke": "lambda:InvokeFunction", "InvokeAsync": "lambda:InvokeAsync"}


def _body(response: Any) -> dict[str, Any]:
    raw = response.body
    try:
        loaded = json.loads(raw.decode() if isinstance(raw, bytes) else raw or "{}")
    except ValueError:
        return {}
    return loaded if isinstance(loaded, dict) else {}


def _s3_requests(response: Any, operation: str, resource: str, context: dict[str, str]) -> list[Request]:
    if operation not in _S3_ACTIONS:
        raise Unevaluable(f"S3 {operation} has no IAM mapping here")
    headers = response.headers
    if operation == "PutObject" and headers.get("x-amz-copy-source"):
        operation = "CopyObject"
    if operation == "UploadPart" and headers.get("x-amz-copy-source"):
        operation = "UploadPartCopy"
    if operation in ("ListObjectsV2", "ListObjects"):
        prefix = response.querystring.get("prefix", [None])[0]
        if prefix is not None:
            context = {**context, "s3:prefix": prefix}
    requests = [Request(_S3_ACTIONS[operation], resource, context)]
    if operation in ("CopyObject", "UploadPartCopy"):
        source = unquote(headers["x-amz-copy-source"].split("?")[0]).lstrip("/")
        requests.append(Request("s3:GetObject", f"arn:aws:s3:::{source}", context))
    return requests


def _lambda_resource(response: Any, region: str) -> str:
    path = unquote(response.path)
    name = path.split("/functions/", 1)[1].split("/invocations", 1)[0].split("/invoke-async", 1)[0]
    if name.startswith("arn:"):
        return name
    qualifier = response.querystring.get("Qualifier", [None])[0]
    arn = f"arn:aws:lambda:{region}:{ACCOUNT}:function:{name}"
    return f"{arn}:{qualifier}" if qualifier else arn


def _secret_resource(response: Any, region: str) -> str:
    secret_id = _body(response).get("SecretId", "")
    if secret_id.startswith("arn:"):
        return str(secret_id)
    from moto.secretsmanager.models import secretsmanager_backends

    try:
        return str(secretsmanager_backends[ACCOUNT][region].describe_secret(secret_id).arn)
    except Exception:  # no such secret: AWS authorises against the name's ARN pattern
        return f"arn:aws:secretsmanager:{region}:{ACCOUNT}:secret:{secret_id}"


def _logs_resource(response: Any, operation: str, region: str) -> str:
    body = _body(response)
    group = body.get("logGroupName") or body.get("logGroupIdentifier", "")
    arn = f"arn:aws:logs:{region}:{ACCOUNT}:log-group:{group}"
    # GetLogEvents and PutLogEvents are authorised on the log stream, FilterLogEvents on the group.
    if operation in ("GetLogEvents", "PutLogEvents"):
        return f"{arn}:log-stream:{body.get('logStreamName', '')}"
    return arn


def iam_requests(response: Any, service: str, region: str, moto_resource: str) -> list[Request]:
    """The IAM authorisations AWS makes for one API call that moto received."""
    operation = response._get_action()
    secure = "true" if str(response.uri).startswith("https://") else "false"
    context = {"aws:SecureTransport": secure}
    if service == "s3":
        return _s3_requests(response, operation, moto_resource, context)
    if service == "sqs":
        return [Request(f"sqs:{_SQS_BATCH.get(operation, operation)}", moto_resource, context)]
    if service == "lambda":
        if operation not in _LAMBDA_ACTIONS:
            raise Unevaluable(f"Lambda {operation} has no IAM mapping here")
        return [Request(_LAMBDA_ACTIONS[operation], _lambda_resource(response, region), context)]
    if service == "secretsmanager":
        return [Request(f"secretsmanager:{operation}", _secret_resource(response, region), context)]
    if service == "logs":
        return [Request(f"logs:{operation}", _logs_resource(response, operation, region), context)]
    if service == "sts" and operation == "GetCallerIdentity":
        return []  # always allowed, whatever the policies say
    raise Unevaluable(f"{service}:{operation} has no IAM mapping here")


# --------------------------------------------------------------------------- the hook into moto


@dataclass
class Enforcer:
    """The role's view of AWS: its resource policies by ARN pattern, and every decision taken."""

    resource_policies: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    decisions: list[Decision] = field(default_factory=list)
    # AWS's 404-or-403 rule for a missing key is decided with ListBucket; whether `s3:prefix` is in
    # that check's context is not documented: here it is the requested key (see `_missing_key`).
    missing_key_prefix: bool = True

    def add_resource_policy(self, arn_pattern: str, document: dict[str, Any]) -> None:
        self.resource_policies.setdefault(arn_pattern, []).append(document)

    def policies_for(self, resource: str) -> list[dict[str, Any]]:
        found = self.resource_policies.items()
        return [d for pattern, docs in found if _like(pattern, resource) for d in docs]

    def denied(self) -> list[Decision]:
        return [d for d in self.decisions if not d.allowed]

    # ---------------------------------------------------------------- moto's hook
    def authorise(self, response: Any, iam_request_cls: type, resource: str) -> None:
        from moto import settings
        from moto.core.authorization import ActionAuthenticatorMixin

        # moto's own switch: INITIAL_NO_AUTH_ACTION_COUNT requests pass unchecked (the setup).
        if ActionAuthenticatorMixin.request_count < settings.INITIAL_NO_AUTH_ACTION_COUNT:
            ActionAuthenticatorMixin.request_count += 1
            return
        path = response.raw_path + (f"?{response.uri.split('?', 1)[1]}" if "?" in response.uri else "")
        iam_request = iam_request_cls(
            account_id=response.current_account,
            method=response.method,
            path=path,
            data=response.data,
            body=response.raw_body,
            headers=response.headers,
            action=response._get_action(),
        )
        iam_request.check_signature()  # moto's authentication stays as it is
        access_key = iam_request._access_key
        principal = _principal_arn(access_key)
        identity = [_as_document(p) for p in access_key.collect_policies()]
        service, region = iam_request._service, iam_request._region
        for found in iam_requests(response, service, region, resource):
            request = Request(found.action, found.resource, {**found.context, "aws:PrincipalArn": principal})
            allowed, why = decide(identity, self.policies_for(request.resource), request, principal)
            self.decisions.append(Decision(response._get_action(), request, allowed, why))
            if not allowed:
                iam_request._raise_access_denied()
        if service == "s3" and response._get_action() in ("GetObject", "HeadObject"):
            self._missing_key(response, iam_request, identity, principal, resource)

    def _missing_key(
        self, response: Any, iam_request: Any, identity: list[Any], principal: str, arn: str
    ) -> None:
        """S3: "If the object you request doesn't exist, the error that Amazon S3 returns depends on
        whether you also have the s3:ListBucket permission" (404 with it, 403 Access Denied without):
        GetObject/HeadObject permissions, Amazon S3 API Reference."""
        from moto.s3.models import s3_backends

        bucket, key = arn.removeprefix("arn:aws:s3:::").split("/", 1)
        backend = s3_backends[ACCOUNT]["aws"]
        try:
            if backend.get_object(bucket, key) is not None:
                return
        except Exception:  # moto raises for a missing key in some versions
            pass
        context = {"aws:SecureTransport": "true", "aws:PrincipalArn": principal}
        if self.missing_key_prefix:
            context["s3:prefix"] = key
        request = Request("s3:ListBucket", f"arn:aws:s3:::{bucket}", context)
        allowed, why = decide(identity, self.policies_for(request.resource), request, principal)
        self.decisions.append(Decision("(missing key: 404 or 403)", request, allowed, why))
        if not allowed:
            iam_request._raise_access_denied()


def _principal_arn(access_key: Any) -> str:
    """`aws:PrincipalArn` of an assumed-role session is the role's ARN (not the session's)."""
    arn = str(access_key.arn)
    if ":assumed-role/" in arn:
        role = arn.split(":assumed-role/", 1)[1].split("/", 1)[0]
        return f"arn:aws:iam::{ACCOUNT}:role/{role}"
    return arn


def _as_document(policy: Any) -> dict[str, Any]:
    if isinstance(policy, str):
        return dict(json.loads(policy))
    if isinstance(policy, dict):
        return dict(json.loads(policy["policy_document"])) if "policy_document" in policy else policy
    default = next(v for v in policy.versions if v.is_default)  # a managed policy
    document = default.document
    return dict(json.loads(document) if isinstance(document, str) else document)


@contextmanager
def installed(enforcer: Enforcer) -> Iterator[Enforcer]:
    """Route moto's authorisation decision through `enforcer` (IAM is on only inside `enforcing()`)."""
    from moto.core.authorization import ActionAuthenticatorMixin

    def hook(self: Any, iam_request_cls: type, resource: str = "*") -> None:
        enforcer.authorise(self, iam_request_cls, resource)

    with mock.patch.object(ActionAuthenticatorMixin, "_authenticate_and_authorize_action", hook):
        yield enforcer


@contextmanager
def enforcing() -> Iterator[None]:
    """IAM on for every request inside (moto's `INITIAL_NO_AUTH_ACTION_COUNT` = 0), decided by the
    installed enforcer; outside it the count is moto's default (infinite: no checks, the setup)."""
    from moto.core.authorization import enable_iam_authentication

    with enable_iam_authentication():
        yield
