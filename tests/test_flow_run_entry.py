"""The function side of the work pool: entrypoints, the run's env, the API key from its secret."""

from __future__ import annotations

import json

import pytest

from flows.aws_lambda import prepare_runtime
from flows.flow_run_entry import (
    FlowRunEntryError,
    api_key_from_secret_string,
    applied_env,
    load_prefect_api_key,
    module_entrypoint,
    run_env,
    run_flow_run,
)
from flows.names import ENV_PREFECT_API_KEY_SECRET_ARN


@pytest.mark.parametrize(
    ("entrypoint", "expected"),
    [
        ("flows/ingest.py:ingest", "flows.ingest:ingest"),
        ("./flows/reports.py:reports", "flows.reports:reports"),
        ("flows.ingest:ingest", "flows.ingest:ingest"),
    ],
)
def test_module_entrypoint(entrypoint, expected):
    assert module_entrypoint(entrypoint) == expected


@pytest.mark.parametrize("bad", [None, "", "flows/ingest.py", "/abs/flows/x.py:f", "../x.py:f", "a-b/x.py:f"])
def test_module_entrypoint_rejects(bad):
    with pytest.raises(FlowRunEntryError):
        module_entrypoint(bad)


def test_run_env_keeps_the_runtime_own_variables():
    env = {
        "QUEST_BLS_SURVEYS": "pr",
        "PREFECT__FLOW_RUN_ID": "x",
        "PREFECT_API_URL": "http://elsewhere",
        "PREFECT_API_KEY": "k",
        "PREFECT_HOME": "/var/task",
        "AWS_ACCESS_KEY_ID": "a",
        "LAMBDA_TASK_ROOT": "/",
        "_HANDLER": "x",
        "UNSET": None,
    }
    assert run_env(env) == {"QUEST_BLS_SURVEYS": "pr", "PREFECT__FLOW_RUN_ID": "x"}
    assert run_env(None) == {}
    with pytest.raises(FlowRunEntryError):
        run_env(["not", "a", "dict"])


def test_applied_env_restores_for_the_next_warm_invocation():
    environ = {"KEEP": "1", "OVERRIDE": "old"}
    with applied_env({"OVERRIDE": "new", "ADDED": "2"}, environ):
        assert environ == {"KEEP": "1", "OVERRIDE": "new", "ADDED": "2"}
    assert environ == {"KEEP": "1", "OVERRIDE": "old"}


def test_bad_flow_run_id_is_a_clear_error():
    with pytest.raises(FlowRunEntryError, match="not a UUID"):
        run_flow_run("nope")


def test_secret_string_forms():
    assert api_key_from_secret_string(" pnu_abc \n", "s") == "pnu_abc"
    assert api_key_from_secret_string(json.dumps({"api_key": "pnu_j"}), "s") == "pnu_j"
    assert api_key_from_secret_string(json.dumps({"PREFECT_API_KEY": "pnu_k"}), "s") == "pnu_k"
    for bad in ("", "{not json", json.dumps({"other": 1})):
        with pytest.raises(FlowRunEntryError):
            api_key_from_secret_string(bad, "s")


def test_prepare_runtime_reads_the_api_key_from_secrets_manager(aws):
    import boto3

    sm = boto3.client("secretsmanager", region_name="us-east-1")
    arn = sm.create_secret(Name="quest/prefect-api-key", SecretString="pnu_from_secret")["ARN"]
    environ = {"AWS_LAMBDA_FUNCTION_NAME": "runner", ENV_PREFECT_API_KEY_SECRET_ARN: arn}
    prepare_runtime(environ)
    assert environ["PREFECT_API_KEY"] == "pnu_from_secret"
    assert environ["PREFECT_HOME"] == "/tmp/prefect"
    # Warm start / explicit key: no second read.
    sm.put_secret_value(SecretId=arn, SecretString="pnu_rotated")
    assert load_prefect_api_key(environ) is False
    assert environ["PREFECT_API_KEY"] == "pnu_from_secret"
    # No secret configured: nothing happens.
    assert load_prefect_api_key({}) is False


def test_missing_secret_is_a_clear_error(aws):
    environ = {ENV_PREFECT_API_KEY_SECRET_ARN: "arn:aws:secretsmanager:us-east-1:123456789012:secret:gone"}
    with pytest.raises(FlowRunEntryError, match="secret .*gone.*ResourceNotFoundException"):
        load_prefect_api_key(environ)
    assert "PREFECT_API_KEY" not in environ
