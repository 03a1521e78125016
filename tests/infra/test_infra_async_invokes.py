"""Every async path of every stack shape has its retries, event age and on-failure destination
chosen on purpose (issue 28), checked on the whole Pulumi program under mocks.

The async paths: EventBridge's schedule (the daily ingest without a work pool, the every-minute
poll with one) and, with a work pool, the worker's Event invokes of flow runs. Lambda's defaults
(2 retries, 6 hours, no destination) would retry a timed-out ingest twice.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
from pulumi_mocks import ROOT, install, policy_doc, run, stack_outputs, stack_yaml_config

from flows.core.names import ENV_INVOKE_FAILURE_QUEUE_URL, INVOKE_MAX_EVENT_AGE_SECONDS
from infra_pulumi.policies import check
from infra_pulumi.runner import POLL_MAX_EVENT_AGE_SECONDS, SCHEDULE_MAX_RETRY_ATTEMPTS

API_KEY = "pnu_async-invokes-secret-0123456789abcdef"
INVOKE_CONFIG = "aws:lambda/functionEventInvokeConfig:FunctionEventInvokeConfig"
SHAPES = {
    # name: (extra config, secret keys, the schedule's payload kind, its event age)
    "without-prefect": ({}, [], "ingest", INVOKE_MAX_EVENT_AGE_SECONDS),
    "work-pool": (
        {"quest:prefectApiUrl": "https://prefect.example/api", "quest:prefectApiKey": API_KEY},
        ["prefectApiKey"],
        "poll",
        POLL_MAX_EVENT_AGE_SECONDS,
    ),
}


@pytest.fixture(params=sorted(SHAPES))
def stack(request, tmp_path: Path):
    extra, secrets, kind, age = SHAPES[request.param]
    package = tmp_path / "runner.zip"
    with zipfile.ZipFile(package, "w") as zf:
        zf.writestr("flows/__init__.py", "")
    config = {**stack_yaml_config(ROOT / "Pulumi.dev.yaml"), "quest:lambdaPackagePath": str(package), **extra}
    mocks = install(config, secrets)

    def program():
        from infra_pulumi.__main__ import main

        main()
        return stack_outputs()

    return mocks, run(program), kind, age


def test_every_async_invoke_has_no_retries_a_bounded_age_and_the_stacks_destination(stack):
    mocks, outputs, _kind, _age = stack
    fn = mocks.one("aws:lambda/function:Function")
    failures = next(q for q in mocks.of_type("aws:sqs/queue:Queue") if q.name.endswith("-invoke-failures"))
    (config,) = mocks.of_type(INVOKE_CONFIG)  # one per function: it covers every async path
    inputs = config.inputs
    assert inputs["functionName"] == fn.outputs["name"] and "qualifier" not in inputs
    assert inputs["maximumRetryAttempts"] == 0
    assert inputs["maximumEventAgeInSeconds"] == INVOKE_MAX_EVENT_AGE_SECONDS == 3600
    assert inputs["destinationConfig"] == {"onFailure": {"destination": failures.arn}}
    assert outputs["invokeFailureQueueUrl"] == failures.id
    assert check(mocks.resources) == []

    # Lambda checks the role may send to the destination when the config is saved.
    role = mocks.one("aws:iam/role:Role")
    (policy,) = [
        p for p in mocks.of_type("aws:iam/rolePolicy:RolePolicy") if p.name.endswith("runner-policy")
    ]
    assert mocks.depends_on(config.name, policy.name)
    assert policy.inputs["role"] == role.id
    sends = [
        s
        for s in policy_doc(policy)["Statement"]
        if "sqs:SendMessage" in s["Action"] and s["Effect"] == "Allow"
    ]
    assert [s["Resource"] for s in sends] == [[failures.arn]]
    # ...and the queue's own policy lets only that role send (a Deny for every other principal).
    queue_policy = next(p for p in mocks.of_type("aws:sqs/queuePolicy:QueuePolicy"))
    only = policy_doc(queue_policy)["Statement"][0]
    assert only["Effect"] == "Deny" and only["Condition"] == {
        "StringNotEquals": {"aws:PrincipalArn": role.arn}
    }


def test_the_schedule_bounds_eventbridges_own_retries(stack):
    mocks, _outputs, kind, age = stack
    fn = mocks.one("aws:lambda/function:Function")
    (target,) = mocks.of_type("aws:cloudwatch/eventTarget:EventTarget")
    assert target.inputs["arn"] == fn.arn
    assert target.inputs["retryPolicy"] == {
        "maximumEventAgeInSeconds": age,
        "maximumRetryAttempts": SCHEDULE_MAX_RETRY_ATTEMPTS,
    }
    from flows.runtime.handler import event_kind

    payload = json.loads(target.inputs["input"]) if "input" in target.inputs else None
    scheduled = {"source": "aws.events", "detail-type": "Scheduled Event"}
    assert event_kind(payload or scheduled) == kind


def test_only_the_poll_reads_the_destination_back(stack):
    mocks, _outputs, kind, _age = stack
    env = mocks.one("aws:lambda/function:Function").inputs["environment"]["variables"]
    failures = next(q for q in mocks.of_type("aws:sqs/queue:Queue") if q.name.endswith("-invoke-failures"))
    (policy,) = [
        p for p in mocks.of_type("aws:iam/rolePolicy:RolePolicy") if p.name.endswith("runner-policy")
    ]
    on_failures = {
        a for s in policy_doc(policy)["Statement"] if failures.arn in s["Resource"] for a in s["Action"]
    }
    if kind == "poll":
        assert env[ENV_INVOKE_FAILURE_QUEUE_URL] == failures.id
        assert {"sqs:SendMessage", "sqs:ReceiveMessage", "sqs:DeleteMessage"} <= on_failures
    else:  # nothing reads it back: the role may only send (Lambda delivers with the function's role)
        assert ENV_INVOKE_FAILURE_QUEUE_URL not in env
        assert on_failures == {"sqs:SendMessage"}
