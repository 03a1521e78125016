"""The BLS politeness limits: the dynamic provider against a real Prefect API (session harness), the
component under Pulumi mocks, and the program creating them with the work pool from stack config."""

from __future__ import annotations

import uuid
import zipfile
from pathlib import Path

import httpx
import pytest
from pulumi_mocks import ROOT, install, is_secret_value, run, stack_outputs, stack_yaml_config

from flows.core.names import BLS_CONCURRENCY_LIMIT, BLS_RATE_LIMIT
from infra_pulumi.config import StackConfigError, parse
from infra_pulumi.limits import (
    ConcurrencyLimitApiError,
    ConcurrencyLimitProvider,
    limit_body,
    limit_diff,
)

API_KEY = "pnu_limits-secret-0123456789abcdef"
LIMIT_TYPE = "pulumi-python:dynamic/quest:PrefectConcurrencyLimit"


@pytest.fixture
def api_url(prefect_harness):
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value()


def _props(api_url: str, name: str | None = None, limit: float = 4, decay: float = 0.0) -> dict:
    return {
        "name": name or f"limit-{uuid.uuid4().hex[:8]}",
        "api_url": api_url,
        "api_key": "pnu_test_key",
        "limit": limit,
        "slot_decay_per_second": decay,
        "active": True,
    }


def _get(api_url: str, id_or_name: str) -> dict | None:
    response = httpx.get(f"{api_url}/v2/concurrency_limits/{id_or_name}")
    return None if response.status_code == 404 else response.raise_for_status().json()


def test_create_read_update_delete(api_url):
    provider = ConcurrencyLimitProvider()
    props = _props(api_url, limit=4.0)  # the engine hands numbers over as floats
    created = provider.create(props)
    stored = _get(api_url, created.id)
    assert stored is not None and stored["name"] == props["name"]
    assert (stored["limit"], stored["slot_decay_per_second"], stored["active"]) == (4, 0.0, True)
    assert created.outs["limit_id"] == created.id and created.outs["adopted"] is False

    read = provider.read(created.id, created.outs)
    assert read.id == created.id and read.outs["limit"] == 4

    news = {**created.outs, "limit": 2, "active": False}
    changed, replaces = limit_diff(created.outs, news)
    assert changed == ["limit", "active"] and replaces == []
    provider.update(created.id, created.outs, news)
    stored = _get(api_url, created.id)
    assert stored is not None and (stored["limit"], stored["active"]) == (2, False)

    provider.delete(created.id, news)
    assert _get(api_url, created.id) is None
    assert provider.read(created.id, news).id is None  # gone: the next `up` recreates it
    provider.delete(created.id, news)  # deleting what is gone is fine


def test_adopts_an_existing_limit_of_the_same_name(api_url):
    name = f"adopt-{uuid.uuid4().hex[:8]}"
    httpx.post(f"{api_url}/v2/concurrency_limits/", json={"name": name, "limit": 9}).raise_for_status()
    created = ConcurrencyLimitProvider().create(_props(api_url, name, limit=1, decay=2.0))
    stored = _get(api_url, name)
    assert stored is not None and str(stored["id"]) == created.id and created.outs["adopted"] is True
    assert (stored["limit"], stored["slot_decay_per_second"]) == (1, 2.0)
    ConcurrencyLimitProvider().delete(created.id, created.outs)


def test_the_limits_it_creates_are_what_prefects_concurrency_takes(api_url):
    """Both limits are plain concurrency limits taken under a lease (the pacer's slots are held
    past each answer, `flows/core/pacing.py`); neither is a decaying rate limit."""
    from prefect.concurrency.sync import concurrency, rate_limit

    provider = ConcurrencyLimitProvider()
    conc = provider.create(_props(api_url, limit=2))
    rate = provider.create(_props(api_url, limit=2))
    try:
        for made in (conc, rate):
            with concurrency(made.outs["name"], occupy=1, strict=True, lease_duration=60):
                stored = _get(api_url, made.id)
                assert stored is not None and stored["active_slots"] == 1
        with pytest.raises(Exception, match="slot decay"):
            rate_limit(rate.outs["name"], strict=True)
    finally:
        provider.delete(conc.id, conc.outs)
        provider.delete(rate.id, rate.outs)


def test_api_errors_are_clear(api_url):
    with pytest.raises(ConcurrencyLimitApiError, match=r"POST .*v2/concurrency_limits/ answered 422"):
        ConcurrencyLimitProvider().create(_props(api_url, name="bad/name"))


def test_check_and_diff_rules():
    provider = ConcurrencyLimitProvider()
    good = _props("https://api.prefect.cloud/api/accounts/a/workspaces/w")
    assert provider.check({}, good).failures == []
    bad = {**good, "name": "", "limit": 0, "slot_decay_per_second": -1, "api_url": "http://example.com/api"}
    assert sorted(f.property for f in provider.check({}, bad).failures) == [
        "api_url",
        "limit",
        "name",
        "slot_decay_per_second",
    ]
    assert [f.property for f in provider.check({}, {**good, "limit": 2.5}).failures] == ["limit"]
    assert limit_diff(good, {**good, "limit": 4.0}) == ([], [])  # a float from the engine is no change
    assert limit_diff(good, {**good, "name": "other"}) == (["name"], ["name"])
    assert limit_diff(good, {**good, "slot_decay_per_second": 3}) == (["slot_decay_per_second"], [])
    assert limit_body({"limit": 3.0, "slot_decay_per_second": None}) == {
        "limit": 3,
        "slot_decay_per_second": 0.0,
        "active": True,
    }


def test_the_key_is_never_sent_to_plain_http():
    with pytest.raises(ConcurrencyLimitApiError, match="refusing to send the Prefect API key"):
        ConcurrencyLimitProvider().create(_props("http://prefect.example.com/api"))


# --------------------------------------------------------------------------- the program


@pytest.fixture
def package_zip(tmp_path: Path) -> str:
    path = tmp_path / "runner.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("flows/__init__.py", "")
    return str(path)


@pytest.fixture(autouse=True)
def _fresh_stack():
    """Each program gets its own root stack, and leaves none behind: the root's exports would
    otherwise carry over into the next program run in this process (another module's too)."""
    from pulumi.runtime.settings import ROOT as PULUMI_ROOT_STACK

    PULUMI_ROOT_STACK.set(None)
    yield
    PULUMI_ROOT_STACK.set(None)


def _program(package_zip: str, **overrides: str):
    from pulumi.runtime.settings import ROOT as PULUMI_ROOT_STACK

    PULUMI_ROOT_STACK.set(None)
    config = {
        **stack_yaml_config(ROOT / "Pulumi.dev.yaml"),
        "quest:lambdaPackagePath": package_zip,
        **overrides,
    }
    mocks = install(config, ["prefectApiKey"] if "quest:prefectApiKey" in config else None)

    def program():
        from infra_pulumi.__main__ import main

        main()
        return stack_outputs()

    return mocks, run(program)


def test_a_prefect_stack_creates_both_limits_with_the_pool(package_zip):
    mocks, outputs = _program(
        package_zip,
        **{
            "quest:prefectApiUrl": "https://prefect.example/api",
            "quest:prefectApiKey": API_KEY,
            "quest:blsMaxConcurrentRequests": "3",
            "quest:blsRequestsPerSecond": "1.5",
        },
    )
    limits = {r.inputs["name"]: r.inputs for r in mocks.resources if r.type == LIMIT_TYPE}
    assert set(limits) == {BLS_CONCURRENCY_LIMIT, BLS_RATE_LIMIT}
    conc, rate = limits[BLS_CONCURRENCY_LIMIT], limits[BLS_RATE_LIMIT]
    assert (conc["limit"], conc["slot_decay_per_second"], conc["active"]) == (3, 0.0, True)
    # The pacer for R = 1.5: two slots (R rounded up), each held 4/3 s after its answer, no decay.
    assert (rate["limit"], rate["slot_decay_per_second"], rate["active"]) == (2, 0.0, True)
    for inputs in (conc, rate):
        assert inputs["api_url"] == "https://prefect.example/api"
        assert is_secret_value(inputs["api_key"]) and inputs["api_key"]["value"] == API_KEY
    assert outputs["blsConcurrencyLimitName"] == BLS_CONCURRENCY_LIMIT
    assert outputs["blsRateLimitName"] == BLS_RATE_LIMIT
    assert API_KEY not in repr(outputs)


def test_defaults_are_four_concurrent_two_per_second_and_a_stack_without_prefect_has_none(package_zip):
    mocks, _ = _program(
        package_zip, **{"quest:prefectApiUrl": "https://prefect.example/api", "quest:prefectApiKey": API_KEY}
    )
    limits = {r.inputs["name"]: r.inputs for r in mocks.resources if r.type == LIMIT_TYPE}
    assert limits[BLS_CONCURRENCY_LIMIT]["limit"] == 4
    assert (limits[BLS_RATE_LIMIT]["limit"], limits[BLS_RATE_LIMIT]["slot_decay_per_second"]) == (2, 0.0)
    mocks, _ = _program(package_zip)
    assert [r for r in mocks.resources if r.type == LIMIT_TYPE] == []


@pytest.mark.parametrize(
    ("key", "value"),
    [("blsMaxConcurrentRequests", "0"), ("blsMaxConcurrentRequests", "65"), ("blsRequestsPerSecond", "0")],
)
def test_out_of_range_politeness_settings_are_refused(key, value):
    with pytest.raises(StackConfigError, match=key):
        parse({"contact": "ops@example.com", key: value})
