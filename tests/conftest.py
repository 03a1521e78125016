"""Shared fixtures: one Prefect test harness per session, moto-backed AWS, isolated settings."""

from __future__ import annotations

import os

# Before Prefect or boto3 is imported anywhere: no telemetry, no real AWS credentials.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_LOGGING_TO_API_BATCH_INTERVAL", "0.3")
for _name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN"):
    os.environ.pop(_name, None)
os.environ["AWS_ACCESS_KEY_ID"] = "testing"
os.environ["AWS_SECRET_ACCESS_KEY"] = "testing"
os.environ["AWS_DEFAULT_REGION"] = "us-east-1"
os.environ["AWS_REGION"] = "us-east-1"
for _name in [n for n in os.environ if n.startswith("QUEST_")]:
    os.environ.pop(_name)

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def prefect_harness():
    """One Prefect API for the whole session (it costs ~10 s to start)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def aws():
    """moto's in-process AWS for boto3 clients created inside the block."""
    from moto import mock_aws

    with mock_aws():
        yield


@pytest.fixture
def s3_bucket(aws):
    import boto3

    client = boto3.client("s3", region_name="us-east-1")
    client.create_bucket(Bucket="quest-test")
    return "quest-test"


@pytest.fixture
def s3_client(aws):
    import boto3

    return boto3.client("s3", region_name="us-east-1")


@pytest.fixture(autouse=True)
def _main_thread_event_loop():
    """Give the main thread an event loop before each test.

    `@pulumi.runtime.test` schedules on `asyncio.get_event_loop()`, which raises once any earlier test
    ran `asyncio.run()` (it leaves the main thread with no loop); the order of tests must not matter.
    """
    import asyncio

    policy = asyncio.get_event_loop_policy()
    try:
        loop = policy.get_event_loop()
        if loop.is_closed():
            raise RuntimeError("closed")
    except RuntimeError:
        policy.set_event_loop(policy.new_event_loop())
    yield
