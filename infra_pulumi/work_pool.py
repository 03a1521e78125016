"""The Prefect work pool as a Pulumi resource: a dynamic provider over Prefect's REST API.

`LambdaWorkPool` creates (or adopts, when one of that name exists) an `aws-lambda` pool whose base
job template comes from the worker's own template (`flows.worker.base_job_template_for`) with the
runner function's ARN as the default and the stack's run limit as its `concurrency_limit`, updates
it on change (PATCH) and deletes it on destroy. The REST client is shared with `automation.py`
(`prefect_api.py`).

The API key: Pulumi pickles a dynamic provider (dill, by value for anything it captured) into the
state as `__provider`, so the provider holds no key and no config — it is a stateless class. The
key reaches it as the resource's `api_key` input, a Pulumi secret (from `require_secret` config):
secret inputs are stored encrypted in the state, and `additional_secret_outputs` keeps the copy in
the outputs (which `delete` needs to authenticate) encrypted too. It is never logged or exported.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pulumi
from pulumi.dynamic import (
    CheckFailure,
    CheckResult,
    CreateResult,
    DiffResult,
    ReadResult,
    ResourceProvider,
    UpdateResult,
)
from pulumi.dynamic import Resource as DynamicResource

from flows.core.names import WORKER_TYPE
from infra_pulumi.prefect_api import PrefectApi, PrefectApiError, target_failures

if TYPE_CHECKING:  # annotations only; imported where used (flows.worker loads Prefect)
    from flows.worker import InvocationType

# Properties whose change is an in-place PATCH; a new name or API is another pool (replace).
UPDATABLE = ("base_job_template", "description", "concurrency_limit", "api_key")
REPLACING = ("name", "api_url")
# What a PATCH sets (on update, and when an existing pool is adopted).
PATCHED = ("base_job_template", "description", "concurrency_limit")


class WorkPoolApiError(PrefectApiError):
    """Prefect's API refused a work-pool call; the message has the status and the API's detail."""


def pools_url(api_url: str, name: str | None = None) -> str:
    base = api_url.rstrip("/") + "/work_pools/"
    return base if name is None else f"{base}{name}"


def patch_body(props: dict[str, Any]) -> dict[str, Any]:
    """What the stack sets on the pool: template, description and the concurrency limit.

    `concurrency_limit` is sent even when None, so removing it from the stack removes the limit.
    The engine hands numbers to a dynamic provider as floats; Prefect wants an integer.
    """
    body = {key: props.get(key) for key in PATCHED}
    if body["concurrency_limit"] is not None:
        body["concurrency_limit"] = int(body["concurrency_limit"])
    return body


def pool_diff(olds: dict[str, Any], news: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(changed properties, properties forcing a replacement)."""
    changed = [k for k in (*REPLACING, *UPDATABLE) if olds.get(k) != news.get(k)]
    return changed, [k for k in changed if k in REPLACING]


class _PoolApi(PrefectApi):
    """The work-pool calls (the client itself is shared with the automation provider)."""

    error = WorkPoolApiError

    def read(self, name: str) -> dict[str, Any] | None:
        response = self.call("GET", pools_url(self.api_url, name), ok=(200, 404))
        return None if response.status_code == 404 else response.json()

    def create(self, body: dict[str, Any]) -> dict[str, Any] | None:
        """The new pool, or None when one of that name exists already (409)."""
        response = self.call("POST", pools_url(self.api_url), body, ok=(200, 201, 409))
        return None if response.status_code == 409 else response.json()

    def update(self, name: str, body: dict[str, Any]) -> None:
        self.call("PATCH", pools_url(self.api_url, name), body)

    def delete(self, name: str) -> None:
        self.call("DELETE", pools_url(self.api_url, name), ok=(200, 204, 404))


class WorkPoolProvider(ResourceProvider):
    """CRUD of one work pool. Holds nothing: everything it needs arrives in the properties."""

    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        failures = target_failures(news, "a work pool")
        template = news.get("base_job_template")
        if not isinstance(template, dict) or "job_configuration" not in template:
            failures.append(CheckFailure("base_job_template", "needs job_configuration and variables"))
        limit = news.get("concurrency_limit")
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int | float) or limit < 1):
            failures.append(CheckFailure("concurrency_limit", "a positive number of runs, or unset"))
        return CheckResult(news, failures)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        changed, replaces = pool_diff(olds, news)
        return DiffResult(
            changes=bool(changed), replaces=replaces, stables=["type"], delete_before_replace=True
        )

    def create(self, props: dict[str, Any]) -> CreateResult:
        api = _PoolApi(props["api_url"], props.get("api_key"))
        name = props["name"]
        body = {"name": name, "type": WORKER_TYPE, **patch_body(props)}
        created = api.create(body)
        adopted = created is None
        if created is None:
            existing = api.read(name) or {}
            if existing.get("type") != WORKER_TYPE:
                raise WorkPoolApiError(
                    f"work pool {name!r} exists with type {existing.get('type')!r}, not {WORKER_TYPE!r}: "
                    "delete it or choose another workPoolName"
                )
            api.update(name, patch_body(props))
            created = api.read(name) or {}
        return CreateResult(
            id_=name, outs={**props, "type": WORKER_TYPE, "pool_id": created.get("id"), "adopted": adopted}
        )

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        pool = _PoolApi(props["api_url"], props.get("api_key")).read(id_)
        if pool is None:  # deleted outside Pulumi: the next `up` recreates it
            return ReadResult(None, {})
        return ReadResult(
            id_,
            {
                **props,
                "base_job_template": pool.get("base_job_template"),
                "description": pool.get("description"),
                "concurrency_limit": pool.get("concurrency_limit"),
                "type": pool.get("type"),
                "pool_id": pool.get("id"),
            },
        )

    def update(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        api = _PoolApi(news["api_url"], news.get("api_key"))
        api.update(id_, patch_body(news))
        return UpdateResult(
            outs={
                **news,
                "type": WORKER_TYPE,
                "pool_id": olds.get("pool_id"),
                "adopted": olds.get("adopted", False),
            }
        )

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        _PoolApi(props["api_url"], props.get("api_key")).delete(id_)


class _WorkPoolResource(DynamicResource, module="quest", name="PrefectWorkPool"):
    name: pulumi.Output[str]
    pool_id: pulumi.Output[str]

    def __init__(self, resource_name: str, props: dict[str, Any], opts: pulumi.ResourceOptions | None = None):
        super().__init__(WorkPoolProvider(), resource_name, {**props, "pool_id": None, "adopted": None}, opts)


@dataclass(frozen=True, kw_only=True)
class LambdaWorkPoolArgs:
    """The pool's name, the function its runs invoke, and the Prefect API that holds it."""

    pool_name: str
    function_arn: pulumi.Input[str]  # the base job template's default function
    region: str
    api_url: str
    api_key: pulumi.Output[str] | None  # a secret: stored encrypted in the state, never exported
    # Runs Prefect lets be in flight at once (it holds further runs back); None: no limit. The
    # function's reserved concurrency is sized from the same setting (config.py).
    concurrency_limit: int | None = None
    invocation_type: InvocationType = "Event"
    # The function's on-failure destination queue and log group (Runner outputs): the template's
    # defaults, so a worker outside the function reconciles hard deaths and links the logs too.
    invoke_failure_queue_url: pulumi.Input[str] | None = None
    log_group_name: pulumi.Input[str] | None = None


class LambdaWorkPool(pulumi.ComponentResource):
    """The `aws-lambda` work pool whose runs the runner function executes. Output: `pool_name`."""

    pool_name: pulumi.Output[str]

    def __init__(
        self, name: str, args: LambdaWorkPoolArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("quest:prefect:LambdaWorkPool", name, None, opts)
        from flows.worker import base_job_template_for

        template = pulumi.Output.all(
            args.function_arn, args.invoke_failure_queue_url, args.log_group_name
        ).apply(
            lambda a: base_job_template_for(
                a[0],
                region=args.region,
                invocation_type=args.invocation_type,
                invoke_failure_queue_url=a[1],
                log_group_name=a[2],
            )
        )
        api_key: pulumi.Output[str] | None = (
            None if args.api_key is None else pulumi.Output.secret(args.api_key)
        )
        pool = _WorkPoolResource(
            f"{name}-pool",
            {
                "name": args.pool_name,
                "api_url": args.api_url,
                "api_key": api_key,
                "base_job_template": template,
                "description": "Flow runs executed by the quest Lambda function (created by Pulumi).",
                "concurrency_limit": args.concurrency_limit,
            },
            opts=pulumi.ResourceOptions(parent=self, additional_secret_outputs=["api_key"]),
        )
        self.pool_name = pool.name
        self.register_outputs({"pool_name": self.pool_name})
