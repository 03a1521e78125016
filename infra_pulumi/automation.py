"""The zombie-run automation as a Pulumi resource: a dynamic provider over Prefect's REST API.

A Lambda invocation can die without a word to Prefect (killed at its timeout, out of memory, the
sandbox recycled): its flow run stays RUNNING. The function sends flow-run heartbeats every
`HEARTBEAT_FREQUENCY_SECONDS` (`PREFECT_FLOWS_HEARTBEAT_FREQUENCY`, runner.py); this automation —
Prefect's documented zombie-flow automation ("How to detect and respond to zombie flows") — marks
a run CRASHED when, after a heartbeat, neither another heartbeat nor a terminal state arrives
within `ZOMBIE_AFTER_SECONDS`.

Scope. Prefect 3.8.8's heartbeat event (`flow_engine._build_heartbeat_event_template`) relates the
flow run only to its flow (id, role `flow`, name), its deployment (id only) and its tags (role
`tag`, id `prefect.tag.<tag>`, `events.related.tags_as_related_resources`) — not to its work pool
or work queue, which only the server's state-change events carry. A trigger's `match_related` must
hold for every event it counts, heartbeats included, so a work-pool filter would never see a
heartbeat and never fire. The automation is therefore scoped by a tag: the function puts
`LAMBDA_RUN_TAG` on every flow run it executes and on their subflows, and the server's
state-change events (`prefect.flow-run.Completed`, ...) relate the run's tags the same way
(`server.models.events._resource_data_as_related_resources`), so the heartbeat that arms the
trigger and the end that disarms it match the same `match_related`. Only runs the function
executes carry the tag, so nothing outside Lambda is ever crashed: the same flows run anywhere else
against the same workspace (`quest run` with Prefect's default 180 s heartbeat) are not watched.
Unscoped, the automation would crash every run in the workspace that heartbeats more slowly than
every `ZOMBIE_AFTER_SECONDS`.

A tag added to a run only after the server has already emitted a state-change event for it may be
missing from its state-change events for a while (the server caches a run's related resources
for `PREFECT_API_EVENTS_RELATED_RESOURCE_CACHE_TTL`, 5 min): its end then does not disarm the trigger,
which fires after the window — and Prefect refuses to move a run already in a terminal state to
CRASHED, so the action fails harmlessly. Runs tagged when they are created avoid even that.

Like the work pool, an existing automation of the same name is adopted (Prefect does not make
names unique; more than one of the name is refused), the provider is stateless and the API key
arrives as a secret input (see `work_pool.py`). The REST client is `prefect_api.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
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

from flows.core.names import HEARTBEAT_FREQUENCY_SECONDS, LAMBDA_RUN_TAG, ZOMBIE_AFTER_SECONDS
from infra_pulumi.prefect_api import PrefectApi, PrefectApiError, target_failures

HEARTBEAT_EVENT = "prefect.flow-run.heartbeat"
# A heartbeat, or any terminal state, within the window means the run is alive or done.
EXPECTED_EVENTS: tuple[str, ...] = (
    HEARTBEAT_EVENT,
    "prefect.flow-run.Completed",
    "prefect.flow-run.Failed",
    "prefect.flow-run.Cancelled",
    "prefect.flow-run.Crashed",
)
# Prefect's minimum `within` for a proactive trigger.
MIN_WITHIN_SECONDS = 10

# Properties whose change is an in-place PUT (an automation is addressed by id, so a new name is
# a PUT too); another API is another automation (replace).
UPDATABLE = ("name", "description", "enabled", "trigger", "actions", "api_key")
REPLACING = ("api_url",)
# The automation's own fields, as sent (POST and PUT take the same body).
BODY_FIELDS = ("name", "description", "enabled", "trigger", "actions")
# The trigger and action keys the stack sets (the server adds ids and defaults on reading).
TRIGGER_KEYS = (
    "type",
    "match",
    "match_related",
    "after",
    "expect",
    "for_each",
    "posture",
    "threshold",
    "within",
)
SET_KEYS = ("after", "expect", "for_each")  # sets in Prefect's schema: compared sorted
ACTION_KEYS = ("type", "state", "message")


class AutomationApiError(PrefectApiError):
    """Prefect's API refused an automation call; the message has the status and the API's detail."""


def tag_resource_id(tag: str) -> str:
    """A tag as a related resource of Prefect's events (`prefect.events.related`)."""
    return f"prefect.tag.{tag}"


def zombie_trigger(
    run_tag: str = LAMBDA_RUN_TAG, within_seconds: int = ZOMBIE_AFTER_SECONDS
) -> dict[str, Any]:
    """Per flow run with this tag: after a heartbeat, expect a heartbeat or an end within the window."""
    return {
        "type": "event",
        "match": {"prefect.resource.id": ["prefect.flow-run.*"]},
        "match_related": {"prefect.resource.role": "tag", "prefect.resource.id": [tag_resource_id(run_tag)]},
        "after": [HEARTBEAT_EVENT],
        "expect": sorted(EXPECTED_EVENTS),
        "for_each": ["prefect.resource.id"],
        "posture": "Proactive",
        "threshold": 1,
        "within": within_seconds,
    }


def zombie_actions(within_seconds: int = ZOMBIE_AFTER_SECONDS) -> list[dict[str, Any]]:
    message = (
        f"No heartbeat for {within_seconds} s (the function sends one every "
        f"{HEARTBEAT_FREQUENCY_SECONDS} s): the Lambda invocation running this flow run was killed "
        "(timeout, memory, or the sandbox ended) before it could report a final state."
    )
    return [{"type": "change-flow-run-state", "state": "CRASHED", "message": message}]


def automation_body(props: dict[str, Any]) -> dict[str, Any]:
    """The POST/PUT body: the automation's fields from the resource's properties."""
    body = {key: props.get(key) for key in BODY_FIELDS}
    body["trigger"] = canonical_trigger(body["trigger"] or {})
    body["description"] = body["description"] or ""
    body["enabled"] = body["enabled"] is not False
    return body


def _seconds(value: Any) -> int | float:
    """A `within` as Prefect returns it (seconds, or an ISO 8601 duration) in seconds."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds: int | float = value
    else:
        from pydantic import TypeAdapter

        seconds = TypeAdapter(timedelta).validate_python(value).total_seconds()
    return int(seconds) if float(seconds).is_integer() else seconds


def canonical_trigger(trigger: dict[str, Any]) -> dict[str, Any]:
    """The keys the stack sets, sets sorted, `within` in whole seconds (the engine sends floats)."""
    out = {key: trigger.get(key) for key in TRIGGER_KEYS if key in trigger}
    for key in SET_KEYS:
        if key in out:
            out[key] = sorted(out[key] or [])
    if "within" in out:
        out["within"] = _seconds(out["within"])
    threshold = out.get("threshold")
    if isinstance(threshold, float):
        out["threshold"] = int(threshold)
    return out


def view(automation: dict[str, Any]) -> dict[str, Any]:
    """An automation read from Prefect, in the shape the stack sends (to diff against)."""
    return {
        "name": automation.get("name"),
        "description": automation.get("description") or "",
        "enabled": automation.get("enabled"),
        "trigger": canonical_trigger(automation.get("trigger") or {}),
        "actions": [{k: a.get(k) for k in ACTION_KEYS} for a in automation.get("actions") or []],
    }


def automation_diff(olds: dict[str, Any], news: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(changed properties, properties forcing a replacement)."""

    def norm(props: dict[str, Any], key: str) -> Any:
        return canonical_trigger(props[key]) if key == "trigger" and props.get(key) else props.get(key)

    changed = [k for k in (*REPLACING, *UPDATABLE) if norm(olds, k) != norm(news, k)]
    return changed, [k for k in changed if k in REPLACING]


class _AutomationApi(PrefectApi):
    error = AutomationApiError

    def read(self, automation_id: str) -> dict[str, Any] | None:
        response = self.call("GET", self.url(f"automations/{automation_id}"), ok=(200, 404))
        return None if response.status_code == 404 else response.json()

    def named(self, name: str) -> list[dict[str, Any]]:
        body = {"automations": {"name": {"any_": [name]}}, "limit": 10}
        found: list[dict[str, Any]] = self.call("POST", self.url("automations/filter"), body).json()
        return [a for a in found if a.get("name") == name]

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        created: dict[str, Any] = self.call("POST", self.url("automations/"), body).json()
        return created

    def replace(self, automation_id: str, body: dict[str, Any]) -> None:
        self.call("PUT", self.url(f"automations/{automation_id}"), body)

    def delete(self, automation_id: str) -> None:
        self.call("DELETE", self.url(f"automations/{automation_id}"), ok=(200, 204, 404))


class AutomationProvider(ResourceProvider):
    """CRUD of one automation. Holds nothing: everything it needs arrives in the properties."""

    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        failures = target_failures(news, "an automation")
        trigger = news.get("trigger")
        if not isinstance(trigger, dict) or trigger.get("type") != "event":
            failures.append(CheckFailure("trigger", "needs an event trigger"))
        elif (
            trigger.get("posture") == "Proactive" and _seconds(trigger.get("within", 0)) < MIN_WITHIN_SECONDS
        ):
            message = f"a proactive trigger needs within >= {MIN_WITHIN_SECONDS} s"
            failures.append(CheckFailure("trigger", message))
        if not isinstance(news.get("actions"), list) or not news["actions"]:
            failures.append(CheckFailure("actions", "needs at least one action"))
        return CheckResult(news, failures)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        changed, replaces = automation_diff(olds, news)
        return DiffResult(changes=bool(changed), replaces=replaces, delete_before_replace=True)

    def create(self, props: dict[str, Any]) -> CreateResult:
        api = _AutomationApi(props["api_url"], props.get("api_key"))
        body = automation_body(props)
        existing = api.named(body["name"])
        if len(existing) > 1:
            raise AutomationApiError(
                f"{len(existing)} automations are named {body['name']!r}: delete all but one to let "
                "the stack adopt it"
            )
        if existing:
            automation_id = str(existing[0]["id"])
            api.replace(automation_id, body)
        else:
            automation_id = str(api.create(body)["id"])
        return CreateResult(
            id_=automation_id,
            outs={**props, **body, "automation_id": automation_id, "adopted": bool(existing)},
        )

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        automation = _AutomationApi(props["api_url"], props.get("api_key")).read(id_)
        if automation is None:  # deleted outside Pulumi: the next `up` recreates it
            return ReadResult(None, {})
        return ReadResult(id_, {**props, **view(automation), "automation_id": id_})

    def update(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        body = automation_body(news)
        _AutomationApi(news["api_url"], news.get("api_key")).replace(id_, body)
        return UpdateResult(
            outs={**news, **body, "automation_id": id_, "adopted": olds.get("adopted", False)}
        )

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        _AutomationApi(props["api_url"], props.get("api_key")).delete(id_)


class _AutomationResource(DynamicResource, module="quest", name="PrefectAutomation"):
    name: pulumi.Output[str]
    automation_id: pulumi.Output[str]

    def __init__(self, resource_name: str, props: dict[str, Any], opts: pulumi.ResourceOptions | None = None):
        super().__init__(
            AutomationProvider(), resource_name, {**props, "automation_id": None, "adopted": None}, opts
        )


@dataclass(frozen=True, kw_only=True)
class ZombieRunAutomationArgs:
    """The automation's name, the tag of the runs it watches, and the Prefect API that holds it."""

    automation_name: str  # named after the stack, so two stacks on one workspace keep their own
    api_url: str
    api_key: pulumi.Output[str] | None  # a secret: stored encrypted in the state, never exported
    run_tag: str = LAMBDA_RUN_TAG  # on every flow run the function executes (and its subflows)
    within_seconds: int = ZOMBIE_AFTER_SECONDS
    pool_name: pulumi.Input[str] | None = None  # named in the description only (see the module doc)


class ZombieRunAutomation(pulumi.ComponentResource):
    """The automation crashing the function's flow runs whose heartbeats stop. Output: `automation_id`."""

    automation_id: pulumi.Output[str]
    automation_name: pulumi.Output[str]

    def __init__(
        self, name: str, args: ZombieRunAutomationArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("quest:prefect:ZombieRunAutomation", name, None, opts)
        api_key: pulumi.Output[str] | None = (
            None if args.api_key is None else pulumi.Output.secret(args.api_key)
        )
        description = pulumi.Output.from_input(args.pool_name or "the Lambda work pool").apply(
            lambda pool: (
                f"Marks a flow run tagged {args.run_tag!r} (every run the function of {pool} "
                f"executes, and its subflows) Crashed when its heartbeats stop for "
                f"{args.within_seconds} s (created by Pulumi)."
            )
        )
        automation = _AutomationResource(
            f"{name}-automation",
            {
                "name": args.automation_name,
                "api_url": args.api_url,
                "api_key": api_key,
                "description": description,
                "enabled": True,
                "trigger": zombie_trigger(args.run_tag, args.within_seconds),
                "actions": zombie_actions(args.within_seconds),
            },
            opts=pulumi.ResourceOptions(parent=self, additional_secret_outputs=["api_key"]),
        )
        self.automation_id = automation.automation_id
        self.automation_name = automation.name
        self.register_outputs({"automation_id": self.automation_id, "automation_name": self.automation_name})
