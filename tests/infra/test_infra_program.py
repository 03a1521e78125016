"""The whole Pulumi program under mocks, with the real Pulumi.dev.yaml, checked by the policy rules."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
from pulumi_mocks import ROOT, install, is_secret_value, run, stack_outputs, stack_yaml_config

from flows.core.names import (
    ENV_FUNCTION_TIMEOUT_SECONDS,
    ENV_INVOKE_FAILURE_QUEUE_URL,
    HEARTBEAT_FREQUENCY_SECONDS,
    INVOKE_MAX_EVENT_AGE_SECONDS,
    INVOKE_MAX_RETRY_ATTEMPTS,
    LAMBDA_RUN_TAG,
    ZOMBIE_AFTER_SECONDS,
)
from infra_pulumi.automation import zombie_actions, zombie_trigger
from infra_pulumi.config import REPORTS_MAX_CONCURRENCY, StackConfigError
from infra_pulumi.policies import check

API_KEY = "pnu_program-level-secret-0123456789abcdef"


@pytest.fixture
def package_zip(tmp_path: Path) -> str:
    """A prebuilt package path: the config route that keeps `pulumi up` (and these tests) from building."""
    path = tmp_path / "runner.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("flows/__init__.py", "")
    return str(path)


def _program(config: dict, secret_keys: list[str] | None = None, stack: str = "dev"):
    mocks = install(config, secret_keys, stack=stack)

    def program():
        from infra_pulumi.__main__ import main

        main()
        return stack_outputs()

    return mocks, run(program)


def _dev_config(package_zip: str, **overrides) -> dict:
    return {
        **stack_yaml_config(ROOT / "Pulumi.dev.yaml"),
        "quest:lambdaPackagePath": package_zip,
        **overrides,
    }


def test_dev_stack_deploys_and_passes_every_policy(package_zip):
    mocks, outputs = _program(_dev_config(package_zip))
    assert check(mocks.resources) == []

    bucket = mocks.one("aws:s3/bucket:Bucket")
    queues = {q.name: q for q in mocks.of_type("aws:sqs/queue:Queue")}
    fn = mocks.one("aws:lambda/function:Function")
    assert outputs["bucketName"] == bucket.id
    assert outputs["queueUrl"] == queues["quest-dev-notifications-queue"].id
    assert outputs["dlqUrl"] == queues["quest-dev-notifications-dlq"].id
    assert outputs["functionArn"] == fn.arn and outputs["functionName"] == fn.outputs["name"]
    assert "workPoolName" not in outputs
    assert outputs["invokeFailureQueueUrl"] == queues["quest-dev-runner-invoke-failures"].id
    assert not mocks.of_type("pulumi-python:dynamic/quest:PrefectAutomation")

    # Values from Pulumi.dev.yaml reach the resources.
    dev = stack_yaml_config(ROOT / "Pulumi.dev.yaml")
    assert fn.inputs["timeout"] == dev["quest:functionTimeoutSeconds"]
    assert fn.inputs["environment"]["variables"]["QUEST_CONTACT"] == dev["quest:contact"]
    assert (
        queues["quest-dev-notifications-queue"].inputs["visibilityTimeoutSeconds"] >= 6 * fn.inputs["timeout"]
    )
    assert bucket.inputs["forceDestroy"] is True

    # Without a Prefect API: the daily ingest schedule, no secret, no work pool.
    (rule,) = mocks.of_type("aws:cloudwatch/eventRule:EventRule")
    assert rule.inputs["scheduleExpression"] == "cron(0 6 * * ? *)"
    assert not mocks.of_type("aws:secretsmanager/secret:Secret")
    assert len(mocks.of_type("aws:iam/rolePolicy:RolePolicy")) == 1


def test_tags_come_from_one_provider_used_by_every_aws_resource(package_zip):
    mocks, _ = _program(_dev_config(package_zip))
    (provider,) = mocks.of_type("pulumi:providers:aws")
    assert provider.inputs["region"] == "us-east-1"
    assert json.loads(provider.inputs["defaultTags"]) == {"tags": {"Project": "quest", "Stack": "dev"}}
    aws_resources = [r for r in mocks.resources if r.type.startswith("aws:")]
    assert aws_resources and all(f"::{provider.name}::" in r.provider for r in aws_resources)


def test_every_aws_resource_belongs_to_a_component(package_zip):
    mocks, _ = _program(_dev_config(package_zip))
    parents = mocks.monitor.parents
    components = {r.name: r.type for r in mocks.resources if r.type.startswith("quest:")}
    assert set(components.values()) >= {
        "quest:storage:Storage",
        "quest:queue:NotificationQueue",
        "quest:runner:Runner",
        "quest:runner:RunnerSchedule",
    }
    for r in mocks.resources:
        if r.type.startswith("aws:"):
            assert parents[r.name].rsplit("::", 1)[-1] in components, r.name


def test_prefect_stack_creates_the_work_pool_and_polls_it_instead(package_zip):
    config = _dev_config(
        package_zip, **{"quest:prefectApiUrl": "https://prefect.example/api", "quest:prefectApiKey": API_KEY}
    )
    mocks, outputs = _program(config, ["prefectApiKey"])
    assert check(mocks.resources) == []
    assert outputs["workPoolName"] == "quest-lambda"

    (rule,) = mocks.of_type("aws:cloudwatch/eventRule:EventRule")
    assert rule.inputs["scheduleExpression"] == "rate(1 minute)"
    target = mocks.one("aws:cloudwatch/eventTarget:EventTarget")
    assert json.loads(target.inputs["input"]) == {"poll_work_pool": "quest-lambda"}

    fn = mocks.one("aws:lambda/function:Function")
    env = fn.inputs["environment"]["variables"]
    secret = mocks.one("aws:secretsmanager/secret:Secret")
    assert env["PREFECT_API_URL"] == "https://prefect.example/api"
    assert env["QUEST_PREFECT_API_KEY_SECRET_ARN"] == secret.arn
    invoke = next(p for p in mocks.of_type("aws:iam/rolePolicy:RolePolicy") if p.name.endswith("invoke-self"))
    assert json.loads(invoke.inputs["policy"])["Statement"][0]["Resource"] == [fn.arn]

    # The key is an input only where it must be, and there marked secret.
    holders = [r for r in mocks.resources if API_KEY in json.dumps(r.inputs, default=str)]
    assert {r.type for r in holders} <= {
        "aws:secretsmanager/secretVersion:SecretVersion",
        "pulumi-python:dynamic/quest:PrefectWorkPool",
        "pulumi-python:dynamic/quest:PrefectAutomation",
        "pulumi-python:dynamic/quest:PrefectConcurrencyLimit",
    }
    for r in holders:
        wrapped = [v for v in r.inputs.values() if API_KEY in json.dumps(v, default=str)]
        assert wrapped and all(is_secret_value(v) for v in wrapped), r.name
    assert API_KEY not in json.dumps(outputs, default=str)


def test_plaintext_api_key_in_config_is_refused(package_zip):
    config = _dev_config(
        package_zip, **{"quest:prefectApiUrl": "https://prefect.example/api", "quest:prefectApiKey": API_KEY}
    )
    with pytest.raises(StackConfigError, match="--secret"):
        _program(config, secret_keys=[])


def test_prefect_stack_without_a_key_is_refused(package_zip):
    with pytest.raises(Exception, match="prefectApiKey"):
        _program(_dev_config(package_zip, **{"quest:prefectApiUrl": "https://prefect.example/api"}))


def test_missing_contact_and_region_are_refused(package_zip):
    config = _dev_config(package_zip)
    del config["quest:contact"]
    with pytest.raises(StackConfigError, match="contact"):
        _program(config)
    config = _dev_config(package_zip)
    del config["aws:region"]
    with pytest.raises(StackConfigError, match="aws:region"):
        _program(config)


def test_a_broken_prebuilt_package_is_refused(tmp_path):
    bad = tmp_path / "not-a.zip"
    bad.write_text("nope")
    with pytest.raises(Exception, match="not a zip"):
        _program(_dev_config(str(bad)))


def test_a_mistyped_key_is_refused(package_zip):
    with pytest.raises(StackConfigError, match="functionTimoutSeconds"):
        _program(_dev_config(package_zip, **{"quest:functionTimoutSeconds": "60"}))


def _prefect_stack(package_zip: str, **overrides):
    config = _dev_config(
        package_zip,
        **{"quest:prefectApiUrl": "https://prefect.example/api", "quest:prefectApiKey": API_KEY, **overrides},
    )
    return _program(config, ["prefectApiKey"])


def test_prefect_stack_has_a_failure_destination_and_exports_it(package_zip):
    mocks, outputs = _prefect_stack(package_zip)
    queues = {q.name: q for q in mocks.of_type("aws:sqs/queue:Queue")}
    failures = queues["quest-dev-runner-invoke-failures"]
    assert outputs["invokeFailureQueueUrl"] == failures.id
    fn = mocks.one("aws:lambda/function:Function")
    env = fn.inputs["environment"]["variables"]
    assert env[ENV_INVOKE_FAILURE_QUEUE_URL] == failures.id
    assert env[ENV_FUNCTION_TIMEOUT_SECONDS] == str(int(fn.inputs["timeout"])) == "600"
    assert env["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] == str(HEARTBEAT_FREQUENCY_SECONDS)
    config = mocks.one("aws:lambda/functionEventInvokeConfig:FunctionEventInvokeConfig").inputs
    assert config["functionName"] == fn.outputs["name"]
    assert config["destinationConfig"]["onFailure"]["destination"] == failures.arn
    assert config["maximumRetryAttempts"] == INVOKE_MAX_RETRY_ATTEMPTS
    assert config["maximumEventAgeInSeconds"] == INVOKE_MAX_EVENT_AGE_SECONDS
    # The pool tells a worker anywhere where the dead invocations are and whose logs to forward.
    pool = mocks.one("pulumi-python:dynamic/quest:PrefectWorkPool")
    props = pool.inputs["base_job_template"]["variables"]["properties"]
    assert props["invoke_failure_queue_url"]["default"] == failures.id
    log_group = mocks.one("aws:cloudwatch/logGroup:LogGroup")
    assert props["log_group_name"]["default"] == log_group.outputs["name"]


@pytest.mark.parametrize("runs", [None, 1, 25])
def test_runs_limit_the_pool_and_size_the_functions_reserved_concurrency(package_zip, runs):
    overrides = {} if runs is None else {"quest:maxConcurrentRuns": runs}
    mocks, _ = _prefect_stack(package_zip, **overrides)
    assert check(mocks.resources) == []
    expected_runs = runs or 10  # the default
    pool = mocks.one("pulumi-python:dynamic/quest:PrefectWorkPool")
    assert pool.inputs["concurrency_limit"] == expected_runs
    mapping = mocks.one("aws:lambda/eventSourceMapping:EventSourceMapping")
    reports = mapping.inputs["scalingConfig"]["maximumConcurrency"]
    assert reports == REPORTS_MAX_CONCURRENCY == 2
    fn = mocks.one("aws:lambda/function:Function")
    # Runs + the SQS reports batches + the every-minute poll.
    assert fn.inputs["reservedConcurrentExecutions"] == expected_runs + reports + 1


def test_dev_stack_reserves_nothing(package_zip):
    mocks, _ = _program(_dev_config(package_zip))
    fn = mocks.one("aws:lambda/function:Function")
    assert fn.inputs.get("reservedConcurrentExecutions") is None


def test_prefect_stack_creates_the_zombie_run_automation_named_after_the_stack(package_zip):
    mocks, outputs = _prefect_stack(package_zip)
    automation = mocks.one("pulumi-python:dynamic/quest:PrefectAutomation")
    inputs = automation.inputs
    assert inputs["name"] == "quest-dev: crash flow runs whose heartbeats stopped"
    assert inputs["api_url"] == "https://prefect.example/api"
    assert is_secret_value(inputs["api_key"]) and inputs["api_key"]["value"] == API_KEY
    assert inputs["enabled"] is True
    assert inputs["trigger"] == zombie_trigger(LAMBDA_RUN_TAG, ZOMBIE_AFTER_SECONDS)
    # Scoped to the runs the function tags, never to flow names (the same flows run elsewhere).
    assert inputs["trigger"]["match_related"] == {
        "prefect.resource.role": "tag",
        "prefect.resource.id": ["prefect.tag.quest-in-lambda"],
    }
    assert inputs["actions"] == zombie_actions(ZOMBIE_AFTER_SECONDS)
    assert "quest-lambda" in inputs["description"] and "'quest-in-lambda'" in inputs["description"]
    assert outputs["zombieAutomationId"] == automation.id
    # Another stack on the same workspace keeps its own automation.
    mocks, _ = _program(
        {
            **_dev_config(package_zip),
            "quest:prefectApiUrl": "https://prefect.example/api",
            "quest:prefectApiKey": API_KEY,
        },
        ["prefectApiKey"],
        stack="prod",
    )
    assert mocks.one("pulumi-python:dynamic/quest:PrefectAutomation").inputs["name"].startswith("quest-prod:")
