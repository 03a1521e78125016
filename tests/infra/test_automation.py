"""The zombie-run automation's dynamic provider against a real Prefect API (session harness).

Create, read back, update, adopt, delete; and that Prefect itself evaluates it: a run tagged as the
function tags its runs whose heartbeats stop is marked Crashed, an untagged run is left alone, and
the server's own state-change events for a tagged run match the same trigger (so an end disarms it).
"""

from __future__ import annotations

import base64
import time
import uuid
from datetime import UTC, datetime

import httpx
import pytest

from flows.core.names import HEARTBEAT_FREQUENCY_SECONDS, LAMBDA_RUN_TAG, ZOMBIE_AFTER_SECONDS
from infra_pulumi.automation import (
    MIN_WITHIN_SECONDS,
    AutomationApiError,
    AutomationProvider,
    automation_body,
    automation_diff,
    view,
    zombie_actions,
    zombie_trigger,
)


@pytest.fixture
def api_url(prefect_harness):
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value()


def _props(api_url: str, name: str | None = None, within: int = ZOMBIE_AFTER_SECONDS, tag=LAMBDA_RUN_TAG):
    return {
        "name": name or f"zombies-{uuid.uuid4().hex[:8]}",
        "api_url": api_url,
        "api_key": "pnu_test_key",
        "description": "test automation",
        "enabled": True,
        "trigger": zombie_trigger(tag, within),
        "actions": zombie_actions(within),
    }


def _get(api_url: str, automation_id: str) -> dict | None:
    response = httpx.get(f"{api_url}/automations/{automation_id}")
    return None if response.status_code == 404 else response.raise_for_status().json()


def _named(api_url: str, name: str) -> list[dict]:
    body = {"automations": {"name": {"any_": [name]}}}
    return httpx.post(f"{api_url}/automations/filter", json=body).raise_for_status().json()


def test_the_body_is_prefects_documented_zombie_automation():
    trigger = zombie_trigger()
    assert trigger == {
        "type": "event",
        "match": {"prefect.resource.id": ["prefect.flow-run.*"]},
        "match_related": {
            "prefect.resource.role": "tag",
            "prefect.resource.id": ["prefect.tag.quest-in-lambda"],
        },
        "after": ["prefect.flow-run.heartbeat"],
        "expect": sorted(
            [
                "prefect.flow-run.heartbeat",
                "prefect.flow-run.Completed",
                "prefect.flow-run.Failed",
                "prefect.flow-run.Cancelled",
                "prefect.flow-run.Crashed",
            ]
        ),
        "for_each": ["prefect.resource.id"],
        "posture": "Proactive",
        "threshold": 1,
        "within": ZOMBIE_AFTER_SECONDS,
    }
    (action,) = zombie_actions()
    assert action["type"] == "change-flow-run-state" and action["state"] == "CRASHED"
    assert "heartbeat" in action["message"] and "Lambda invocation" in action["message"]
    # Silence for more than three beats before a run counts as dead.
    assert 3 * HEARTBEAT_FREQUENCY_SECONDS < ZOMBIE_AFTER_SECONDS
    # Prefect's own schema accepts it as is.
    from prefect.server.events.schemas.automations import AutomationCore

    core = AutomationCore.model_validate(
        {"name": "x", "trigger": trigger, "actions": zombie_actions(), "enabled": True}
    )
    assert core.trigger.within.total_seconds() == ZOMBIE_AFTER_SECONDS


def test_the_tag_is_related_as_prefect_relates_a_runs_tags():
    """The heartbeat and state-change events relate a run's tags with this id and role."""
    from prefect.events.related import tags_as_related_resources

    (related,) = tags_as_related_resources([LAMBDA_RUN_TAG])
    match_related = zombie_trigger()["match_related"]
    assert related.id in match_related["prefect.resource.id"]
    assert related.role == match_related["prefect.resource.role"]


def test_create_read_update_delete(api_url):
    provider = AutomationProvider()
    props = _props(api_url)
    assert provider.check({}, props).failures == []

    created = provider.create(props)
    assert created.outs["adopted"] is False and created.outs["automation_id"] == created.id
    stored = _get(api_url, created.id)
    assert stored["enabled"] is True and stored["name"] == props["name"]
    # Reads back identical to what was sent (ids and server defaults aside).
    assert view(stored) == automation_body(props)
    assert stored["trigger"]["posture"] == "Proactive" and stored["trigger"]["within"] == ZOMBIE_AFTER_SECONDS
    assert stored["actions"][0]["state"] == "CRASHED" and stored["actions"][0]["force"] is False

    read = provider.read(created.id, created.outs)
    assert read.id == created.id
    assert provider.diff(created.id, read.outs, props).changes is False  # refresh: no spurious diff

    news = {**_props(api_url, name=f"{props['name']}-renamed", within=120), "description": "changed"}
    diff = provider.diff(created.id, created.outs, news)
    assert diff.changes and diff.replaces == []
    updated = provider.update(created.id, created.outs, news)
    assert updated.outs["automation_id"] == created.id
    stored = _get(api_url, created.id)
    assert stored["name"] == news["name"] and stored["description"] == "changed"
    assert stored["trigger"]["within"] == 120 and "120 s" in stored["actions"][0]["message"]
    assert view(stored) == automation_body(news)

    provider.delete(created.id, updated.outs)
    assert _get(api_url, created.id) is None
    assert provider.read(created.id, updated.outs).id is None  # gone: next `up` recreates
    provider.delete(created.id, updated.outs)  # deleting twice is not an error


def test_a_disabled_automation_is_enabled_again(api_url):
    provider = AutomationProvider()
    props = _props(api_url)
    created = provider.create(props)
    httpx.patch(f"{api_url}/automations/{created.id}", json={"enabled": False}).raise_for_status()
    read = provider.read(created.id, created.outs)
    assert read.outs["enabled"] is False
    assert provider.diff(created.id, read.outs, props).changes
    provider.update(created.id, read.outs, props)
    assert _get(api_url, created.id)["enabled"] is True
    provider.delete(created.id, props)


def test_adopts_an_existing_automation_of_the_same_name(api_url):
    props = _props(api_url)
    other = {**automation_body(_props(api_url, within=300)), "name": props["name"], "enabled": False}
    existing = httpx.post(f"{api_url}/automations/", json=other).raise_for_status().json()

    created = AutomationProvider().create(props)
    assert created.outs["adopted"] is True and created.id == existing["id"]
    assert [a["id"] for a in _named(api_url, props["name"])] == [existing["id"]]  # no second one
    assert view(_get(api_url, created.id)) == automation_body(props)  # enabled, 105 s
    AutomationProvider().delete(created.id, created.outs)


def test_refuses_to_guess_between_automations_of_the_same_name(api_url):
    props = _props(api_url)
    for _ in range(2):
        httpx.post(f"{api_url}/automations/", json=automation_body(props)).raise_for_status()
    with pytest.raises(AutomationApiError, match="2 automations are named"):
        AutomationProvider().create(props)
    assert len(_named(api_url, props["name"])) == 2  # untouched


def test_api_errors_are_clear(api_url):
    props = _props(api_url)
    props["trigger"] = {**props["trigger"], "posture": "Sideways"}
    with pytest.raises(AutomationApiError, match="answered 422"):
        AutomationProvider().create(props)


def test_check_and_diff_rules():
    failures = AutomationProvider().check(
        {}, {"name": "", "api_url": "ftp://x", "trigger": {}, "actions": []}
    )
    assert {f.property for f in failures.failures} == {"name", "api_url", "trigger", "actions"}
    short = _props("https://api.prefect.cloud/api", within=MIN_WITHIN_SECONDS - 1)
    assert [f.property for f in AutomationProvider().check({}, short).failures] == ["trigger"]
    for url in ("http://prefect.example/api", "http://u@localhost/api"):
        failures = AutomationProvider().check({}, _props(url)).failures
        assert [f.property for f in failures] == ["api_url"], url

    olds = _props("https://a.example/api", name="n")
    assert automation_diff(olds, dict(olds)) == ([], [])
    # The engine hands numbers back as floats: 105.0 is no change.
    as_floats = {**olds, "trigger": {**olds["trigger"], "within": 105.0, "threshold": 1.0}}
    assert automation_diff(olds, as_floats) == ([], [])
    assert automation_diff(olds, {**olds, "name": "m"}) == (["name"], [])
    assert automation_diff(olds, {**olds, "api_url": "https://b.example/api"}) == (["api_url"], ["api_url"])
    assert automation_diff(olds, {**olds, "api_key": "k2"}) == (["api_key"], [])


def test_the_key_is_never_sent_to_plain_http():
    props = {"api_url": "http://prefect.example/api", "api_key": "pnu_test_key"}
    for call in (
        lambda: AutomationProvider().delete("id", props),
        lambda: AutomationProvider().read("id", props),
    ):
        with pytest.raises(AutomationApiError, match="refusing to send the Prefect API key"):
            call()


def test_the_pickled_provider_carries_no_key():
    from pulumi.dynamic.dynamic import serialize_provider

    provider = AutomationProvider()
    blob = base64.b64decode(serialize_provider(provider))
    assert b"pnu_" not in blob and vars(provider) == {}


# --------------------------------------------------------------------------- Prefect evaluates it


def _running_run(api_url: str, flow_name: str, tags: list[str]) -> tuple[str, str, list[str]]:
    """A RUNNING flow run with these tags from its creation (as the function tags its runs)."""
    flow = httpx.post(f"{api_url}/flows/", json={"name": flow_name}).raise_for_status().json()
    run = httpx.post(
        f"{api_url}/flow_runs/",
        json={"flow_id": flow["id"], "tags": tags, "state": {"type": "RUNNING", "name": "Running"}},
    )
    return flow["id"], run.raise_for_status().json()["id"], tags


def _heartbeat(api_url: str, flow_id: str, run_id: str, tags: list[str], *, flow_name: str) -> None:
    """The event Prefect's flow engine sends (`_build_heartbeat_event_template`)."""
    from prefect.events.related import tags_as_related_resources

    event = {
        "id": str(uuid.uuid4()),
        "occurred": datetime.now(UTC).isoformat(),
        "event": "prefect.flow-run.heartbeat",
        "resource": {"prefect.resource.id": f"prefect.flow-run.{run_id}", "prefect.resource.name": "r"},
        "related": [
            {
                "prefect.resource.id": f"prefect.flow.{flow_id}",
                "prefect.resource.role": "flow",
                "prefect.resource.name": flow_name,
            },
            *(dict(r) for r in tags_as_related_resources(set(tags))),
        ],
    }
    httpx.post(f"{api_url}/events", json=[event]).raise_for_status()


def _state(api_url: str, run_id: str) -> str:
    return httpx.get(f"{api_url}/flow_runs/{run_id}").raise_for_status().json()["state"]["type"]


def _events(api_url: str, run_id: str) -> dict[str, dict]:
    """The events Prefect stored about this run, by name."""
    body = {
        "filter": {
            "resource": {"id": [f"prefect.flow-run.{run_id}"]},
            "occurred": {"since": "2000-01-01T00:00:00Z"},
        },
        "limit": 50,
    }
    found = httpx.post(f"{api_url}/events/filter", json=body).raise_for_status().json()["events"]
    return {e["event"]: e for e in found}


def test_prefect_crashes_a_tagged_run_whose_heartbeats_stop(api_url):
    """Same trigger with Prefect's shortest window, so the test waits seconds, not minutes."""
    from prefect.server.events.schemas.automations import EventTrigger
    from prefect.server.events.schemas.events import ReceivedEvent

    props = _props(api_url, within=MIN_WITHIN_SECONDS)
    created = AutomationProvider().create(props)
    try:
        time.sleep(2)  # the triggers service loads automations on change
        flow = f"ingest-{uuid.uuid4().hex[:6]}"  # one flow: only the tag tells the runs apart
        zombie = _running_run(api_url, flow, [LAMBDA_RUN_TAG, "other"])
        local = _running_run(api_url, flow, [])  # e.g. `quest run` against the same workspace
        ended = _running_run(api_url, flow, [LAMBDA_RUN_TAG])
        for run in (zombie, local, ended):
            _heartbeat(api_url, *run, flow_name=flow)
        # The server's own state-change event for a tagged run relates the tag too: an end
        # matches the trigger and disarms it, like another heartbeat.
        completed = {"state": {"type": "COMPLETED", "name": "Completed"}}
        httpx.post(f"{api_url}/flow_runs/{ended[1]}/set_state", json=completed).raise_for_status()
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and _state(api_url, zombie[1]) != "CRASHED":
            time.sleep(2)
        run = httpx.get(f"{api_url}/flow_runs/{zombie[1]}").json()
        assert run["state"]["type"] == "CRASHED", run["state"]
        assert "No heartbeat" in run["state"]["message"]
        assert _state(api_url, local[1]) == "RUNNING"  # not tagged: never watched
        assert _state(api_url, ended[1]) == "COMPLETED"
        trigger = EventTrigger.model_validate(props["trigger"])
        events = _events(api_url, ended[1])
        for name in ("prefect.flow-run.heartbeat", "prefect.flow-run.Completed"):
            assert trigger.covers(ReceivedEvent.model_validate(events[name])), name
        assert not trigger.covers(
            ReceivedEvent.model_validate(_events(api_url, local[1])["prefect.flow-run.heartbeat"])
        )
    finally:
        AutomationProvider().delete(created.id, created.outs)
