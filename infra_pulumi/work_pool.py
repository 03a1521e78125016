"""The Prefect work pool as a Pulumi resource: a dynamic provider over Prefect's REST API.

`LambdaWorkPool` creates (or adopts, when one of that name exists) an `aws-lambda` pool whose base
job template comes from the worker's own template (`flows.worker.base_job_template_for`) with the
runner function's ARN as the default, updates it on change and deletes it on destroy.

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
from flows.run_env import api_url_problem

if TYPE_CHECKING:  # annotations only; both are imported where used (flows.worker loads Prefect)
    import httpx

    from flows.worker import InvocationType

# Properties whose change is an in-place PATCH; a new name or API is another pool (replace).
UPDATABLE = ("base_job_template", "description", "api_key")
REPLACING = ("name", "api_url")
HTTP_TIMEOUT_SECONDS = 30.0


class WorkPoolApiError(Exception):
    """Prefect's API refused a work-pool call; the message has the status and the API's detail."""


def pools_url(api_url: str, name: str | None = None) -> str:
    base = api_url.rstrip("/") + "/work_pools/"
    return base if name is None else f"{base}{name}"


def pool_diff(olds: dict[str, Any], news: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(changed properties, properties forcing a replacement)."""
    changed = [k for k in (*REPLACING, *UPDATABLE) if olds.get(k) != news.get(k)]
    return changed, [k for k in changed if k in REPLACING]


class _Api:
    """A few calls of Prefect's REST API (Cloud or self-hosted), bearer-authenticated when keyed."""

    def __init__(self, api_url: str, api_key: str | None):
        problem = api_url_problem(api_url)
        if api_key and problem:  # also for state written before `check` refused such URLs
            raise WorkPoolApiError(f"{problem}; refusing to send the Prefect API key there")
        self.api_url = api_url
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    def _call(
        self, method: str, url: str, body: dict[str, Any] | None = None, ok: tuple[int, ...] = (200, 201, 204)
    ) -> httpx.Response:
        import httpx

        response = httpx.request(method, url, json=body, headers=self.headers, timeout=HTTP_TIMEOUT_SECONDS)
        if response.status_code not in ok:
            detail = response.text[:500]
            raise WorkPoolApiError(f"{method} {url} answered {response.status_code}: {detail}")
        return response

    def read(self, name: str) -> dict[str, Any] | None:
        response = self._call("GET", pools_url(self.api_url, name), ok=(200, 404))
        return None if response.status_code == 404 else response.json()

    def create(self, body: dict[str, Any]) -> dict[str, Any] | None:
        """The new pool, or None when one of that name exists already (409)."""
        response = self._call("POST", pools_url(self.api_url), body, ok=(200, 201, 409))
        return None if response.status_code == 409 else response.json()

    def update(self, name: str, body: dict[str, Any]) -> None:
        self._call("PATCH", pools_url(self.api_url, name), body)

    def delete(self, name: str) -> None:
        self._call("DELETE", pools_url(self.api_url, name), ok=(200, 204, 404))


class WorkPoolProvider(ResourceProvider):
    """CRUD of one work pool. Holds nothing: everything it needs arrives in the properties."""

    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        failures = []
        if not news.get("name"):
            failures.append(CheckFailure("name", "a work pool needs a name"))
        problem = api_url_problem(news.get("api_url"))
        if problem:
            failures.append(CheckFailure("api_url", problem))
        template = news.get("base_job_template")
        if not isinstance(template, dict) or "job_configuration" not in template:
            failures.append(CheckFailure("base_job_template", "needs job_configuration and variables"))
        return CheckResult(news, failures)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        changed, replaces = pool_diff(olds, news)
        return DiffResult(
            changes=bool(changed), replaces=replaces, stables=["type"], delete_before_replace=True
        )

    def create(self, props: dict[str, Any]) -> CreateResult:
        api = _Api(props["api_url"], props.get("api_key"))
        name = props["name"]
        body = {
            "name": name,
            "type": WORKER_TYPE,
            "base_job_template": props["base_job_template"],
            "description": props.get("description"),
        }
        created = api.create(body)
        adopted = created is None
        if created is None:
            existing = api.read(name) or {}
            if existing.get("type") != WORKER_TYPE:
                raise WorkPoolApiError(
                    f"work pool {name!r} exists with type {existing.get('type')!r}, not {WORKER_TYPE!r}: "
                    "delete it or choose another workPoolName"
                )
            api.update(name, {k: v for k, v in body.items() if k in ("base_job_template", "description")})
            created = api.read(name) or {}
        return CreateResult(
            id_=name, outs={**props, "type": WORKER_TYPE, "pool_id": created.get("id"), "adopted": adopted}
        )

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        pool = _Api(props["api_url"], props.get("api_key")).read(id_)
        if pool is None:  # deleted outside Pulumi: the next `up` recreates it
            return ReadResult(None, {})
        return ReadResult(
            id_,
            {
                **props,
                "base_job_template": pool.get("base_job_template"),
                "description": pool.get("description"),
                "type": pool.get("type"),
                "pool_id": pool.get("id"),
            },
        )

    def update(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        api = _Api(news["api_url"], news.get("api_key"))
        api.update(
            id_, {"base_job_template": news["base_job_template"], "description": news.get("description")}
        )
        return UpdateResult(
            outs={
                **news,
                "type": WORKER_TYPE,
                "pool_id": olds.get("pool_id"),
                "adopted": olds.get("adopted", False),
            }
        )

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        _Api(props["api_url"], props.get("api_key")).delete(id_)


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
    invocation_type: InvocationType = "Event"


class LambdaWorkPool(pulumi.ComponentResource):
    """The `aws-lambda` work pool whose runs the runner function executes. Output: `pool_name`."""

    pool_name: pulumi.Output[str]

    def __init__(
        self, name: str, args: LambdaWorkPoolArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("quest:prefect:LambdaWorkPool", name, None, opts)
        from flows.worker import base_job_template_for

        template = pulumi.Output.from_input(args.function_arn).apply(
            lambda arn: base_job_template_for(arn, region=args.region, invocation_type=args.invocation_type)
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
            },
            opts=pulumi.ResourceOptions(parent=self, additional_secret_outputs=["api_key"]),
        )
        self.pool_name = pool.name
        self.register_outputs({"pool_name": self.pool_name})
