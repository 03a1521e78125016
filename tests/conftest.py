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
# The BLS politeness limits (4 in flight, 2/s by default) would make every loopback mirror test
# wait on them; the tests of the limits set their own numbers (tests/io/test_limits.py,
# tests/pipeline/test_politeness.py).
os.environ["QUEST_BLS_MAX_CONCURRENT_REQUESTS"] = "64"
os.environ["QUEST_BLS_REQUESTS_PER_SECOND"] = "1000"

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def prefect_harness():
    """One Prefect API for the whole session (it costs ~10 s to start)."""
    from prefect.events.worker import EventsWorker
    from prefect.testing.utilities import prefect_test_harness

    # On leaving, the harness drains Prefect's events worker with no time limit; once (a 3-module
    # run, all tests passed) that wait never ended and the session hung. Bound it: a few events
    # lost at the very end of the session are harmless, a CI run that never ends is not.
    drain_all = EventsWorker.drain_all.__func__  # type: ignore[attr-defined]

    def bounded_drain_all(cls, timeout=None, at_exit=True):  # noqa: ANN001 - mirrors Prefect's signature
        return drain_all(cls, timeout=30 if timeout is None else timeout, at_exit=at_exit)

    with prefect_test_harness(server_startup_timeout=120):
        yield
        EventsWorker.drain_all = classmethod(bounded_drain_all)  # type: ignore[method-assign]
    EventsWorker.drain_all = classmethod(drain_all)  # type: ignore[method-assign]


@pytest.fixture(scope="session")
def _moto_conditional_puts_are_atomic():
    """S3 decides a conditional PutObject (If-Match, If-None-Match) atomically: of two writers
    racing on one key, one wins. moto 5.2 checks the condition, then writes, with nothing held in
    between (`S3Response.put_object`), so under load both won and two syncs held one store lease
    (`test_store_lease`, seen once in a full run). Conditional PUTs go one at a time here, as S3
    has them; unconditional ones are left alone. Only moto's fixtures (`aws`, `moto_server`) take
    this: the store's contract tests on LocalStack and SeaweedFS run the race on their own
    atomic writes (tests/io/test_store_contract.py)."""
    import threading

    from moto.s3.responses import S3Response

    original = S3Response.put_object
    lock = threading.Lock()

    def put_object(self):  # type: ignore[no-untyped-def]
        if self.headers.get("If-Match") or self.headers.get("If-None-Match"):
            with lock:
                return original(self)
        return original(self)

    S3Response.put_object = put_object  # type: ignore[method-assign]
    yield
    S3Response.put_object = original  # type: ignore[method-assign]


@pytest.fixture
def aws(_moto_conditional_puts_are_atomic):
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


@pytest.fixture(scope="module")
def moto_server(_moto_conditional_puts_are_atomic):
    """moto's S3/SQS/... as a real HTTP server on loopback, for subprocesses (one per test module)."""
    from moto.server import ThreadedMotoServer

    srv = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    srv.start()
    host, port = srv.get_host_and_port()
    yield f"http://{host}:{port}"
    srv.stop()


@pytest.fixture(scope="session")
def localstack_backend():
    """LocalStack (S3 + SQS) in host mode for the session, or a one-line skip naming it."""
    import s3_backends
    import tool_cache

    try:
        with s3_backends.localstack() as backend:
            yield backend
    except tool_cache.ToolUnavailable as exc:
        tool_cache.skip_unavailable(exc)


@pytest.fixture(scope="session")
def seaweedfs_backend():
    """SeaweedFS's S3 server for the session, or a one-line skip naming it."""
    import s3_backends
    import tool_cache

    try:
        with s3_backends.seaweedfs() as backend:
            yield backend
    except tool_cache.ToolUnavailable as exc:
        tool_cache.skip_unavailable(exc)


def pytest_collection_finish(session):
    """Start installing the S3 backends the collected tests need (LocalStack takes ~80 s cold) and
    building the Lambda zip (~60 s cold), so the work overlaps the tests that run before them."""
    import lambda_code
    import s3_backends

    s3_backends.prefetch_for(s3_backends.backends_needed(session.items))
    lambda_code.prefetch_for(session.items)  # the Lambda zip and the runtime client's venv


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
