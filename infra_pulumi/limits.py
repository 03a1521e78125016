"""Politeness to BLS as Pulumi resources: Prefect global concurrency limits over Prefect's REST API.

BLS blocks robots that make several requests per second (bls.gov/bls/blsterms.htm). With one
flow run per survey on Lambda, many invocations talk to BLS at once, so the limits must live
where they all look: Prefect. `BlsPolitenessLimits` creates the two limits the flows take around
every request to BLS (`flows/io/limits.py`), under the names in `flows.core.names`:

- `BLS_CONCURRENCY_LIMIT`: `limit` = N slots, no decay: a slot is held for a whole request.
- `BLS_RATE_LIMIT`: the pacer, K = `pacer_slots(R)` slots, no decay: a request holds one from
  before it is sent until at least a second after its answer, so BLS sees at most K requests in
  any second whatever the delays in between (`flows/core/pacing.py`). Not a Prefect rate limit
  (slots decaying at R per second): that decay is timed by the server's transaction clock, and
  under load `scale_bench` saw 3 requests in one second at R=2 through it. An older stack's
  decaying limit of this name is PATCHed to the pacer on the next `up`; until then the function
  refuses to request BLS, naming the fix (`flows.core.limit_state`).

The names are fixed (the function reads them from `flows.core.names`), so every stack on one
workspace shares them, as they share BLS; an existing limit of the name is adopted (PATCHed to
the stack's numbers). Like the work pool (`work_pool.py`) the provider is stateless and the API
key arrives as a secret input; the REST client is `prefect_api.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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

from flows.core.names import BLS_CONCURRENCY_LIMIT, BLS_RATE_LIMIT
from flows.core.pacing import pacing_for
from infra_pulumi.prefect_api import PrefectApi, PrefectApiError, target_failures

# Properties whose change is an in-place PATCH; another name or API is another limit (replace).
UPDATABLE = ("limit", "slot_decay_per_second", "active", "api_key")
REPLACING = ("name", "api_url")
BODY_FIELDS = ("limit", "slot_decay_per_second", "active")


class ConcurrencyLimitApiError(PrefectApiError):
    """Prefect's API refused a concurrency-limit call; the message has the status and the detail."""


def limit_body(props: dict[str, Any]) -> dict[str, Any]:
    """What the stack sets (the engine hands numbers to a provider as floats; `limit` is an int)."""
    return {
        "limit": int(props["limit"]),
        "slot_decay_per_second": float(props.get("slot_decay_per_second") or 0.0),
        "active": props.get("active") is not False,
    }


def limit_diff(olds: dict[str, Any], news: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(changed properties, properties forcing a replacement)."""

    def norm(props: dict[str, Any], key: str) -> Any:
        value = props.get(key)
        if key == "limit" and value is not None:
            return int(value)
        if key == "slot_decay_per_second":
            return float(value or 0.0)
        if key == "active":
            return value is not False
        return value

    changed = [k for k in (*REPLACING, *UPDATABLE) if norm(olds, k) != norm(news, k)]
    return changed, [k for k in changed if k in REPLACING]


class _LimitApi(PrefectApi):
    error = ConcurrencyLimitApiError

    def read(self, id_or_name: str) -> dict[str, Any] | None:
        response = self.call("GET", self.url(f"v2/concurrency_limits/{id_or_name}"), ok=(200, 404))
        return None if response.status_code == 404 else response.json()

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        created: dict[str, Any] = self.call("POST", self.url("v2/concurrency_limits/"), body).json()
        return created

    def update(self, id_or_name: str, body: dict[str, Any]) -> None:
        self.call("PATCH", self.url(f"v2/concurrency_limits/{id_or_name}"), body)

    def delete(self, id_or_name: str) -> None:
        self.call("DELETE", self.url(f"v2/concurrency_limits/{id_or_name}"), ok=(200, 204, 404))


class ConcurrencyLimitProvider(ResourceProvider):
    """CRUD of one global concurrency limit. Holds nothing: everything arrives in the properties."""

    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        failures = target_failures(news, "a concurrency limit")
        limit = news.get("limit")
        if isinstance(limit, bool) or not isinstance(limit, int | float) or limit < 1 or limit != int(limit):
            failures.append(CheckFailure("limit", "a whole number of slots, at least 1"))
        decay = news.get("slot_decay_per_second", 0)
        if isinstance(decay, bool) or not isinstance(decay, int | float) or decay < 0:
            failures.append(CheckFailure("slot_decay_per_second", "slots per second, 0 or more"))
        return CheckResult(news, failures)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        changed, replaces = limit_diff(olds, news)
        return DiffResult(changes=bool(changed), replaces=replaces, delete_before_replace=True)

    def create(self, props: dict[str, Any]) -> CreateResult:
        api = _LimitApi(props["api_url"], props.get("api_key"))
        body = limit_body(props)
        existing = api.read(props["name"])
        if existing is not None:
            limit_id = str(existing["id"])
            api.update(limit_id, body)
        else:
            limit_id = str(api.create({"name": props["name"], **body})["id"])
        return CreateResult(
            id_=limit_id, outs={**props, **body, "limit_id": limit_id, "adopted": existing is not None}
        )

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        limit = _LimitApi(props["api_url"], props.get("api_key")).read(id_)
        if limit is None:  # deleted outside Pulumi: the next `up` recreates it
            return ReadResult(None, {})
        seen = {key: limit.get(key) for key in ("name", *BODY_FIELDS)}
        return ReadResult(id_, {**props, **seen, "limit_id": id_})

    def update(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        body = limit_body(news)
        _LimitApi(news["api_url"], news.get("api_key")).update(id_, body)
        return UpdateResult(outs={**news, **body, "limit_id": id_, "adopted": olds.get("adopted", False)})

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        _LimitApi(props["api_url"], props.get("api_key")).delete(id_)


class _LimitResource(DynamicResource, module="quest", name="PrefectConcurrencyLimit"):
    name: pulumi.Output[str]
    limit_id: pulumi.Output[str]

    def __init__(self, resource_name: str, props: dict[str, Any], opts: pulumi.ResourceOptions | None = None):
        super().__init__(
            ConcurrencyLimitProvider(), resource_name, {**props, "limit_id": None, "adopted": None}, opts
        )


@dataclass(frozen=True, kw_only=True)
class BlsPolitenessLimitsArgs:
    """N requests in flight and R started per second to BLS, across every invocation at once."""

    api_url: str
    api_key: pulumi.Output[str] | None  # a secret: stored encrypted in the state, never exported
    max_concurrent_requests: int
    requests_per_second: float
    concurrency_limit_name: str = BLS_CONCURRENCY_LIMIT
    rate_limit_name: str = BLS_RATE_LIMIT


class BlsPolitenessLimits(pulumi.ComponentResource):
    """The two limits. Outputs: `concurrency_limit_name`, `rate_limit_name` and their ids."""

    concurrency_limit_name: pulumi.Output[str]
    rate_limit_name: pulumi.Output[str]
    concurrency_limit_id: pulumi.Output[str]
    rate_limit_id: pulumi.Output[str]

    def __init__(
        self, name: str, args: BlsPolitenessLimitsArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("quest:prefect:BlsPolitenessLimits", name, None, opts)
        api_key: pulumi.Output[str] | None = (
            None if args.api_key is None else pulumi.Output.secret(args.api_key)
        )
        child = pulumi.ResourceOptions(parent=self, additional_secret_outputs=["api_key"])
        common = {"api_url": args.api_url, "api_key": api_key, "active": True}
        concurrency = _LimitResource(
            f"{name}-concurrency",
            {
                **common,
                "name": args.concurrency_limit_name,
                "limit": args.max_concurrent_requests,
                "slot_decay_per_second": 0.0,
            },
            opts=child,
        )
        rate = _LimitResource(
            f"{name}-rate",
            {
                **common,
                "name": args.rate_limit_name,
                "limit": pacing_for(args.requests_per_second).slots,
                "slot_decay_per_second": 0.0,
            },
            opts=child,
        )
        self.concurrency_limit_name, self.concurrency_limit_id = concurrency.name, concurrency.limit_id
        self.rate_limit_name, self.rate_limit_id = rate.name, rate.limit_id
        self.register_outputs(
            {
                "concurrency_limit_name": self.concurrency_limit_name,
                "rate_limit_name": self.rate_limit_name,
                "concurrency_limit_id": self.concurrency_limit_id,
                "rate_limit_id": self.rate_limit_id,
            }
        )
