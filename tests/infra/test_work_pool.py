"""The work pool's dynamic provider against a real Prefect API (session harness), and its wiring."""

from __future__ import annotations

import base64
import uuid

import pytest

from flows.worker import base_job_template_for
from infra_pulumi.work_pool import WorkPoolApiError, WorkPoolProvider, pool_diff

ARN = "arn:aws:lambda:us-east-1:123456789012:function:quest-dev-runner"


@pytest.fixture
def api_url(prefect_harness):
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value()


def _props(api_url: str, name: str, arn: str = ARN, concurrency_limit: int | float | None = 10) -> dict:
    return {
        "name": name,
        "api_url": api_url,
        "api_key": "pnu_test_key",
        "base_job_template": base_job_template_for(arn, region="us-east-1"),
        "description": "test pool",
        "concurrency_limit": concurrency_limit,
    }


def _read(name: str):
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            return client.read_work_pool(name)
        except ObjectNotFound:
            return None


def test_create_update_read_delete(api_url):
    provider = WorkPoolProvider()
    props = _props(api_url, f"pool-{uuid.uuid4().hex[:8]}")
    assert provider.check({}, props).failures == []

    created = provider.create(props)
    assert created.id == props["name"] and created.outs["adopted"] is False
    pool = _read(props["name"])
    assert pool.type == "aws-lambda"
    assert pool.concurrency_limit == 10  # sent on create
    assert pool.base_job_template["variables"]["properties"]["function_name"]["default"] == ARN

    new_arn = ARN.replace("quest-dev-runner", "quest-dev-runner-2")
    # The engine hands numbers to a dynamic provider as floats: Prefect still gets an integer.
    news = _props(api_url, props["name"], new_arn, concurrency_limit=25.0)
    diff = provider.diff(created.id, created.outs, news)
    assert diff.changes and diff.replaces == []
    updated = provider.update(created.id, created.outs, news)
    assert updated.outs["pool_id"] == created.outs["pool_id"]
    pool_now = _read(props["name"])
    assert pool_now.base_job_template["variables"]["properties"]["function_name"]["default"] == new_arn
    assert pool_now.concurrency_limit == 25  # PATCHed

    read = provider.read(created.id, updated.outs)
    assert (
        read.id == created.id
        and read.outs["base_job_template"]["variables"]["properties"]["function_name"]["default"] == new_arn
    )
    assert read.outs["concurrency_limit"] == 25

    # Removing the limit from the stack removes it from the pool.
    unlimited = _props(api_url, props["name"], new_arn, concurrency_limit=None)
    assert provider.diff(created.id, read.outs, unlimited).changes
    updated = provider.update(created.id, read.outs, unlimited)
    assert _read(props["name"]).concurrency_limit is None

    provider.delete(created.id, updated.outs)
    assert _read(props["name"]) is None
    assert provider.read(created.id, updated.outs).id is None  # gone: next `up` recreates
    provider.delete(created.id, updated.outs)  # deleting twice is not an error


def test_adopts_an_existing_pool_of_the_same_name(api_url):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate

    name = f"pool-{uuid.uuid4().hex[:8]}"
    with get_client(sync_client=True) as client:
        client.create_work_pool(WorkPoolCreate(name=name, type="aws-lambda"))
    created = WorkPoolProvider().create(_props(api_url, name))
    assert created.outs["adopted"] is True
    adopted = _read(name)
    assert adopted.base_job_template["variables"]["properties"]["function_name"]["default"] == ARN
    assert adopted.concurrency_limit == 10  # the stack's limit, also on an adopted pool


def test_refuses_to_adopt_a_pool_of_another_type(api_url):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate

    name = f"pool-{uuid.uuid4().hex[:8]}"
    with get_client(sync_client=True) as client:
        client.create_work_pool(WorkPoolCreate(name=name, type="process"))
    with pytest.raises(WorkPoolApiError, match="type 'process'"):
        WorkPoolProvider().create(_props(api_url, name))
    assert _read(name).type == "process"  # untouched


def test_api_errors_are_clear(api_url):
    props = _props(api_url, "bad name/with slash")
    with pytest.raises(WorkPoolApiError, match="answered"):
        WorkPoolProvider().create(props)


def test_check_and_diff_rules():
    failures = (
        WorkPoolProvider().check({}, {"name": "", "api_url": "ftp://x", "base_job_template": {}}).failures
    )
    assert {f.property for f in failures} == {"name", "api_url", "base_job_template"}
    template = base_job_template_for(ARN)
    for limit in (0, -1, "10", True):
        props = {
            "name": "p",
            "api_url": "https://x/api",
            "base_job_template": template,
            "concurrency_limit": limit,
        }
        assert [f.property for f in WorkPoolProvider().check({}, props).failures] == ["concurrency_limit"]
    template = base_job_template_for(ARN)
    for url in ("http://prefect.example/api", "HTTP://127.0.0.1.evil.com/api", "http://u@localhost/api"):
        failures = (
            WorkPoolProvider()
            .check({}, {"name": "p", "api_url": url, "base_job_template": template})
            .failures
        )
        assert [f.property for f in failures] == ["api_url"], url
    for url in ("https://api.prefect.cloud/api", "http://127.0.0.1:4200/api", "http://[::1]:4200/api"):
        assert (
            WorkPoolProvider()
            .check({}, {"name": "p", "api_url": url, "base_job_template": template})
            .failures
            == []
        )
    olds = {"name": "a", "api_url": "http://x/api", "api_key": "k", "base_job_template": {"t": 1}}
    assert pool_diff(olds, dict(olds)) == ([], [])
    assert pool_diff(olds, {**olds, "name": "b"}) == (["name"], ["name"])
    assert pool_diff(olds, {**olds, "api_key": "k2"}) == (["api_key"], [])
    assert pool_diff(olds, {**olds, "concurrency_limit": 5}) == (["concurrency_limit"], [])


def test_the_key_is_never_sent_to_plain_http():
    """State from before `check` refused such URLs: delete/read must not send the key either."""
    props = {"api_url": "http://prefect.example/api", "api_key": "pnu_test_key"}
    for call in (lambda: WorkPoolProvider().delete("p", props), lambda: WorkPoolProvider().read("p", props)):
        with pytest.raises(WorkPoolApiError, match="refusing to send the Prefect API key"):
            call()


def test_the_pickled_provider_carries_no_key():
    from pulumi.dynamic.dynamic import serialize_provider

    provider = WorkPoolProvider()
    provider.create  # noqa: B018 - the provider has no state to capture
    blob = base64.b64decode(serialize_provider(provider))
    assert b"pnu_" not in blob and vars(provider) == {}


class _Mocks:
    def __init__(self):
        self.resources: dict[str, dict] = {}

    def new_resource(self, args):
        self.resources[args.typ] = dict(args.inputs)
        return f"{args.name}-id", dict(args.inputs)

    def call(self, args):
        return {}


def test_component_passes_the_key_as_a_secret_input_not_in_the_provider():
    import pulumi
    from pulumi.runtime.rpc import _special_secret_sig, _special_sig_key

    mocks = _Mocks()
    pulumi.runtime.set_mocks(mocks, project="quest", stack="test", preview=False)
    try:
        from infra_pulumi.work_pool import LambdaWorkPool, LambdaWorkPoolArgs

        @pulumi.runtime.test
        def check():
            pool = LambdaWorkPool(
                "wp",
                LambdaWorkPoolArgs(
                    pool_name="quest-lambda",
                    function_arn=pulumi.Output.from_input(ARN),
                    region="us-east-1",
                    api_url="https://api.prefect.cloud/api/accounts/a/workspaces/w",
                    api_key=pulumi.Output.secret("pnu_very_secret"),
                    concurrency_limit=7,
                ),
            )

            def verify(name):
                assert name == "quest-lambda"
                inputs = mocks.resources["pulumi-python:dynamic/quest:PrefectWorkPool"]
                # A secret input: the state stores it encrypted.
                assert inputs["api_key"] == {
                    _special_sig_key: _special_secret_sig,
                    "value": "pnu_very_secret",
                }
                assert inputs["concurrency_limit"] == 7
                template = inputs["base_job_template"]
                assert template["variables"]["properties"]["function_name"]["default"] == ARN
                provider = inputs["__provider"]
                provider = provider["value"] if isinstance(provider, dict) else provider
                assert b"pnu_very_secret" not in base64.b64decode(provider)

            return pool.pool_name.apply(verify)

        check()
    finally:
        pulumi.runtime.set_mocks(_Mocks(), project="quest", stack="test", preview=False)
