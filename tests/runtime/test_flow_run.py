"""The function side of the work pool: entrypoints, the run's env, the API key from its secret."""

from __future__ import annotations

import json

import pytest

from flows.core.errors import FlowRunEntryError
from flows.core.names import ENV_PREFECT_API_KEY_SECRET_ARN
from flows.io.environ import patched_environ
from flows.runtime.flow_run import (
    api_key_from_secret_string,
    check_prefect_api_target,
    event_run_env,
    load_prefect_api_key,
    module_entrypoint,
    run_flow_run,
)
from flows.runtime.handler import prepare_runtime


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


def test_event_env_applies_only_run_settings():
    env = {
        "quest_bls_surveys": "pr",
        "PREFECT__FLOW_RUN_ID": "x",
        "PREFECT_API_URL": "http://elsewhere",
        "prefect_api_url": "http://elsewhere",
        "PREFECT_API_KEY": "k",
        "PREFECT_HOME": "/var/task",
        "AWS_ACCESS_KEY_ID": "a",
        "LAMBDA_TASK_ROOT": "/",
        "_HANDLER": "x",
        "QUEST_STORE": "s3://other",
        "UNSET": None,
    }
    result = event_run_env(env)
    assert result.accepted == {"QUEST_BLS_SURVEYS": "pr"}
    assert len(result.refused) == 9
    assert event_run_env(None).accepted == {} and event_run_env(None).refused == ()
    # Not an object: refused as a whole, the run proceeds without it.
    (refusal,) = event_run_env(["QUEST_STORE=s3://other"]).refused
    assert "JSON object" in refusal.message()


def test_applied_env_restores_for_the_next_warm_invocation():
    environ = {"KEEP": "1", "OVERRIDE": "old"}
    with patched_environ({"OVERRIDE": "new", "ADDED": "2"}, environ=environ):
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
    environ = {
        "AWS_LAMBDA_FUNCTION_NAME": "runner",
        ENV_PREFECT_API_KEY_SECRET_ARN: arn,
        "PREFECT_API_URL": "https://api.prefect.cloud/api/accounts/a/workspaces/w",
    }
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
    environ = {
        ENV_PREFECT_API_KEY_SECRET_ARN: "arn:aws:secretsmanager:us-east-1:123456789012:secret:gone",
        "PREFECT_API_URL": "http://127.0.0.1:4200/api",
    }
    with pytest.raises(FlowRunEntryError, match="secret .*gone.*ResourceNotFoundException"):
        load_prefect_api_key(environ)
    assert "PREFECT_API_KEY" not in environ


@pytest.mark.parametrize(
    "url",
    [
        None,
        "http://prefect.example/api",
        "HTTP://prefect.example/api",
        "http://127.0.0.1.evil.com/api",
        "http://localhost.evil.com/api",
        "https://evil@127.0.0.1/api",
        "http://127.0.0.1@evil.com/api",
    ],
)
def test_the_key_is_never_loaded_for_an_unsafe_api_url(aws, url):
    import boto3

    sm = boto3.client("secretsmanager", region_name="us-east-1")
    arn = sm.create_secret(Name="quest/key", SecretString="pnu_from_secret")["ARN"]
    environ = {ENV_PREFECT_API_KEY_SECRET_ARN: arn}
    if url is not None:
        environ["PREFECT_API_URL"] = url
    with pytest.raises(FlowRunEntryError, match="refusing to send the Prefect API key"):
        prepare_runtime(environ)
    assert "PREFECT_API_KEY" not in environ
    # A key given directly (no secret) is held to the same rule.
    with pytest.raises(FlowRunEntryError, match="refusing"):
        load_prefect_api_key({"PREFECT_API_KEY": "pnu_direct", "PREFECT_API_URL": url or ""})


@pytest.mark.parametrize(
    ("url", "safe"),
    [
        ("https://api.prefect.cloud/api", True),
        ("http://127.0.0.1:4200/api", True),
        ("http://prefect.example/api", False),
        ("http://localhost.evil.com/api", False),
    ],
)
def test_what_prefect_loaded_is_checked_too(url, safe):
    """Profiles or any-case names could set the URL Prefect really uses: that one is checked."""
    from prefect.settings import PREFECT_API_KEY, PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: url, PREFECT_API_KEY: "pnu_x"}):
        if safe:
            check_prefect_api_target()
        else:
            with pytest.raises(FlowRunEntryError, match="refusing"):
                check_prefect_api_target()
    with temporary_settings({PREFECT_API_URL: "http://prefect.example/api"}):
        check_prefect_api_target()  # no credential configured: nothing to leak


def test_refused_env_is_logged_by_name_never_by_value(prefect_harness, caplog):
    import logging
    import uuid

    from prefect.exceptions import ObjectNotFound

    caplog.set_level(logging.WARNING, logger="flows.runtime.flow_run")
    with pytest.raises(ObjectNotFound):  # no such run: only the logging before it matters here
        run_flow_run(str(uuid.uuid4()), env={"Prefect_Api_Url": "http://value-canary.example"})
    assert "'Prefect_Api_Url' not applied" in caplog.text
    assert "value-canary" not in caplog.text
