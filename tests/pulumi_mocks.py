"""Pulumi mocks that record every resource the program registers (for the infra tests).

There is no Pulumi CLI or provider plugin here: `pulumi.runtime.set_mocks` stands in for the
engine. The mocks return the ids/ARNs/URLs AWS would, so the program's `apply` chains see
realistic values, and record each resource as a `policies.Resource` for the policy checks.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pulumi

from infra_pulumi.policies import Resource

ACCOUNT = "123456789012"
REGION = "us-east-1"
PROJECT = "quest"
ROOT = Path(__file__).resolve().parent.parent


class RecordingMocks(pulumi.runtime.Mocks):
    def __init__(self) -> None:
        self.resources: list[Resource] = []
        self.monitor: RecordingMonitor | None = None

    # ------------------------------------------------------------------ engine callbacks
    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        inputs = dict(args.inputs)
        name = args.name
        physical = inputs.get("name") or f"{name}-1a2b3c4"
        outputs = dict(inputs)
        typ = args.typ
        if typ == "aws:s3/bucket:Bucket":
            bucket = inputs.get("bucket") or physical
            outputs.update(bucket=bucket, arn=f"arn:aws:s3:::{bucket}", id=bucket)
            resource_id = bucket
        elif typ == "aws:sqs/queue:Queue":
            url = f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/{physical}"
            outputs.update(name=physical, arn=f"arn:aws:sqs:{REGION}:{ACCOUNT}:{physical}", url=url)
            resource_id = url
        elif typ == "aws:iam/role:Role":
            outputs.update(name=physical, arn=f"arn:aws:iam::{ACCOUNT}:role/{physical}")
            resource_id = physical
        elif typ == "aws:lambda/function:Function":
            arn = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{physical}"
            outputs.update(name=physical, arn=arn, invokeArn=arn)
            resource_id = physical
        elif typ == "aws:cloudwatch/logGroup:LogGroup":
            outputs.update(name=physical, arn=f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{physical}")
            resource_id = physical
        elif typ == "aws:secretsmanager/secret:Secret":
            arn = f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:{physical}-AbCdEf"
            outputs.update(name=physical, arn=arn)
            resource_id = arn
        elif typ == "aws:kms/key:Key":
            key_id = f"{name}-key-id"
            outputs.update(keyId=key_id, arn=f"arn:aws:kms:{REGION}:{ACCOUNT}:key/{key_id}")
            resource_id = key_id
        elif typ == "aws:cloudwatch/eventRule:EventRule":
            outputs.update(name=physical, arn=f"arn:aws:events:{REGION}:{ACCOUNT}:rule/{physical}")
            resource_id = physical
        elif typ == "pulumi-python:dynamic/quest:PrefectAutomation":
            resource_id = "0b9f6d2e-5c1a-4e8b-9f3d-2a7c6e1b4d80"  # Prefect names automations by UUID
            outputs.update(automation_id=resource_id, adopted=False)
        else:
            resource_id = f"{name}-id"
            outputs.setdefault("arn", f"arn:aws:mock:{REGION}:{ACCOUNT}:{name}")
        self.resources.append(
            Resource(
                type=typ,
                name=name,
                inputs=inputs,
                outputs=outputs,
                provider=args.provider or "",
                id=resource_id,
            )
        )
        return resource_id, outputs

    def call(self, args: pulumi.runtime.MockCallArgs):
        if args.token == "aws:index/getCallerIdentity:getCallerIdentity":
            return {"accountId": ACCOUNT, "arn": f"arn:aws:iam::{ACCOUNT}:user/test", "userId": "AIDTEST"}
        return {}

    # ------------------------------------------------------------------ queries for tests
    def of_type(self, typ: str) -> list[Resource]:
        return [r for r in self.resources if r.type == typ]

    def depends_on(self, name: str, other: str) -> bool:
        """True when resource `name` was registered with a dependency on resource `other`."""
        return any(urn.endswith(f"::{other}") for urn in self.monitor.dependencies.get(name, []))

    def one(self, typ: str) -> Resource:
        found = self.of_type(typ)
        assert len(found) == 1, f"expected one {typ}, got {[r.name for r in found]}"
        return found[0]


class RecordingMonitor(pulumi.runtime.mocks.MockMonitor):
    """The mock engine, also recording each resource's dependency URNs (the mocks API omits them)."""

    def __init__(self, mocks: RecordingMocks) -> None:
        super().__init__(mocks)
        self.dependencies: dict[str, list[str]] = {}
        self.parents: dict[str, str] = {}

    def RegisterResource(self, request):  # noqa: N802 - the engine's RPC name
        self.dependencies[request.name] = list(request.dependencies)
        self.parents[request.name] = request.parent
        return super().RegisterResource(request)


def install(
    config: dict[str, object] | None = None, secret_keys: list[str] | None = None, stack: str = "dev"
):
    """Fresh mocks and config for one test. Keys without a namespace get the project's (`quest:`).

    Values are passed the way the CLI passes them: strings as-is, anything else JSON-encoded.
    """
    values = {}
    for key, value in (config or {}).items():
        full = key if ":" in key else f"{PROJECT}:{key}"
        values[full] = value if isinstance(value, str) else json.dumps(value)
    secrets = [k if ":" in k else f"{PROJECT}:{k}" for k in (secret_keys or [])]
    pulumi.runtime.set_all_config(values, secrets)
    # A fresh root stack resource: its outputs (`pulumi.export`) would otherwise carry the last
    # program's exports into this one (a work-pool stack's `workPoolName` into a dev stack's).
    from pulumi.runtime.settings import ROOT

    ROOT.set(None)
    mocks = RecordingMocks()
    mocks.monitor = RecordingMonitor(mocks)
    pulumi.runtime.set_mocks(mocks, project=PROJECT, stack=stack, preview=False, monitor=mocks.monitor)
    return mocks


def stack_yaml_config(path: Path) -> dict[str, object]:
    """The `config:` map of a Pulumi.<stack>.yaml (plain values only; `secure:` ones are skipped)."""
    import yaml

    data = yaml.safe_load(path.read_text()) or {}
    config = {}
    for key, value in (data.get("config") or {}).items():
        if isinstance(value, dict) and "secure" in value:
            continue
        config[key] = value
    return config


def run(program: Callable[[], Any]) -> Any:
    """Run `program` under the installed mocks; return what its result resolved to.

    Every registration has completed when this returns (the runtime waits for outstanding RPCs),
    so tests assert on the recorded resources afterwards.
    """
    box: dict[str, Any] = {}

    def wrapped() -> pulumi.Output:
        return pulumi.Output.from_input(program()).apply(lambda value: box.setdefault("value", value))

    pulumi.runtime.test(wrapped)()
    return box.get("value")


def stack_outputs() -> pulumi.Output:
    """The program's `pulumi.export`s as one Output of a dict (call inside a program)."""
    from pulumi.runtime.settings import get_root_resource

    return pulumi.Output.all(**get_root_resource().outputs)


def is_secret_value(value: Any) -> bool:
    """True for an input the engine received marked secret (Pulumi's wire form of a secret)."""
    from pulumi.runtime.rpc import _special_secret_sig, _special_sig_key

    return isinstance(value, dict) and value.get(_special_sig_key) == _special_secret_sig


def policy_doc(resource: Resource, key: str = "policy") -> dict:
    return json.loads(resource.inputs[key])
