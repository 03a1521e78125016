"""The daily ingest's fan-out when the day is not clean (issue 12), in-process under the harness:
a survey whose mirror chain from an earlier day is still going gets no second run, a survey whose
check fails is reported while the others go on, and a check still running at the run's hard stop
is left for the follow-up ingest instead of crashing the run at its deadline.

The ingest runs as a deployment run through the function's path (`run_flow_run` with a Lambda-like
context), with a `mirror-survey` deployment on the API; the mirror runs it starts are real flow
runs that stay SCHEDULED (no worker here), which is all the ingest needs to see.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from lambda_context import FakeContext

from flows.core.names import INGEST_CONTINUATION_TAG, MIRROR_DEPLOYMENT
from flows.devkit.samples import population_body, sample_bls_survey
from flows.devkit.upstream_server import UpstreamServer
from flows.io.store import LocalStore
from flows.runtime.flow_run import run_flow_run

MARGIN = 2.5  # DEADLINE_MARGIN_SECONDS, scaled down
UUID_RE = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


def _client():
    from prefect.client.orchestration import get_client

    return get_client(sync_client=True)


@pytest.fixture
def deployments(prefect_harness) -> Iterator[dict[str, uuid.UUID]]:
    """`mirror-survey/mirror-survey` (what the fan-out looks for) and an ingest deployment; removed after."""
    with _client() as client:
        mirror = client.create_deployment(
            flow_id=client.create_flow_from_name("mirror-survey"),
            name=MIRROR_DEPLOYMENT.split("/")[1],
            entrypoint="flows/ingest.py:mirror_survey",
        )
        ingest = client.create_deployment(
            flow_id=client.create_flow_from_name("ingest"),
            name=f"ingest-{uuid.uuid4().hex[:8]}",
            entrypoint="flows/ingest.py:ingest",
        )
    yield {"mirror": mirror, "ingest": ingest}
    with _client() as client:
        for deployment in (mirror, ingest):
            client.delete_deployment(deployment)


@pytest.fixture
def upstream(monkeypatch, tmp_path) -> Iterator[UpstreamServer]:
    surveys = {s: sample_bls_survey(s, seed=i) for i, s in enumerate(("pr", "ce", "la"))}
    with UpstreamServer(surveys, population_body(), require_contact=True) as up:
        for name, value in {
            "QUEST_STORE": str(tmp_path / "data"),
            "QUEST_CONTACT": "tests@example.com",
            "QUEST_BLS_BASE_URL": up.bls_base_url,
            "QUEST_POPULATION_URL": up.population_url,
            "QUEST_CONCURRENCY": "2",
            "QUEST_RETRIES": "0",
            "QUEST_CONTINUATION_MARGIN_SECONDS": "4",
        }.items():
            monkeypatch.setenv(name, value)
        yield up


def _mirror_run(deployment: uuid.UUID, survey: str, days_ago: float = 0, **parameters: Any) -> Any:
    """A run of the mirror deployment that is not final: an earlier day's chain still going."""
    from prefect.states import Scheduled

    when = datetime.now(UTC) - timedelta(days=days_ago)
    with _client() as client:
        return client.create_flow_run_from_deployment(
            deployment, parameters={"survey": survey, **parameters}, state=Scheduled(scheduled_time=when)
        )


def _ingest(deployments: dict[str, uuid.UUID], seconds: float = 60, **parameters: Any) -> Any:
    with _client() as client:
        run = client.create_flow_run_from_deployment(deployments["ingest"], parameters=parameters)
    run_flow_run(str(run.id), context=FakeContext(MARGIN + seconds), margin_seconds=MARGIN)
    with _client() as client:
        return client.read_flow_run(run.id)


def _trickle(upstream: UpstreamServer, **seconds: float) -> None:
    """Each named survey's listing takes about that many seconds to arrive."""
    import httpx

    for survey, taking in seconds.items():
        url = upstream.survey_url(survey)
        size = len(httpx.get(url, headers={"User-Agent": "tests@example.com"}).content)
        upstream.trickle(f"*/time.series/{survey}/", bytes_per_second=max(1, int(size / taking)))


def _children(parent: uuid.UUID) -> dict[str, Any]:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

    with _client() as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[parent]))
        )
    return {r.parameters.get("survey") or "ingest": r for r in runs if r.deployment_id is not None}


def test_a_survey_still_mirroring_from_an_earlier_run_gets_no_second_run(deployments, upstream, tmp_path):
    pr = _mirror_run(deployments["mirror"], "pr", snapshot_population=True)
    ce = _mirror_run(deployments["mirror"], "ce")
    _mirror_run(deployments["mirror"], "la", days_ago=2)  # stale (a lost worker): not in the way
    run = _ingest(deployments, surveys=["pr", "ce", "la"])
    assert run.state.type.value == "COMPLETED", run.state
    message = run.state.message
    assert f"still mirroring from an earlier run: pr ({pr.name} {pr.id}), ce ({ce.name} {ce.id})" in message
    assert f"population snapshot written by pr's mirror run {pr.id} (started earlier)" in message
    children = _children(run.id)
    assert sorted(children) == ["la"] and f"mirror runs started: la ({children['la'].id})" in message
    assert children["la"].name == "mirror la" and "survey:la" in children["la"].tags  # issue 13
    assert re.fullmatch(r"ingest \d{4}-\d{2}-\d{2}", run.name), run.name
    # Not even checked: no listing GET for the two surveys being mirrored, one for la.
    assert {s: len(upstream.listing_gets(s)) for s in ("pr", "ce", "la")} == {"pr": 0, "ce": 0, "la": 1}
    assert LocalStore(tmp_path / "data").list_keys("population/") == []  # pr's chain writes it


def test_pr_mirrored_by_a_run_that_does_not_snapshot_leaves_the_snapshot_to_the_next_day(
    deployments, upstream, tmp_path
):
    pr = _mirror_run(deployments["mirror"], "pr")  # started by hand, snapshot_population False
    run = _ingest(deployments, surveys=["pr", "ce"])
    assert run.state.type.value == "COMPLETED", run.state
    assert f"population snapshot not written: pr is being mirrored by run {pr.name} ({pr.id})" in (
        run.state.message
    )
    assert sorted(_children(run.id)) == ["ce"]
    assert LocalStore(tmp_path / "data").list_keys("population/") == []


def test_a_failing_check_is_reported_and_the_other_surveys_go_on(deployments, upstream, tmp_path):
    upstream.fail("*/time.series/ce/", 503, times=None)
    run = _ingest(deployments, surveys=["pr", "ce", "la"])
    assert run.state.type.value == "FAILED", run.state
    message = run.state.message
    assert message.startswith("1 of 3 surveys could not be checked; ce FAILED: "), message
    assert "503" in message and "\n" not in message
    children = _children(run.id)
    assert sorted(children) == ["la", "pr"]  # the others were checked and started
    assert children["pr"].parameters["snapshot_population"] is True
    assert f"population snapshot written by pr's mirror run {children['pr'].id}" in message


def test_a_check_still_running_at_the_hard_stop_is_left_for_the_follow_up_ingest(
    deployments, upstream, tmp_path
):
    _trickle(upstream, ce=60, la=60)  # a minute each: past the run
    # 6 s: pr is checked (changed, started) beside ce, whose listing is still trickling at the hard
    # stop (2 s before the end), as is la's if it started once pr's check was done; without the
    # stop they would run into the run's deadline and crash it.
    run = _ingest(deployments, seconds=6, surveys=["pr", "ce", "la"], allow_mass_delete=True)
    assert run.state.type.value == "COMPLETED", run.state
    match = re.match(
        rf"partial: checked 1 of 3 surveys; continues in run .+? \(({UUID_RE})\)", run.state.message or ""
    )
    assert match, run.state.message
    children = _children(run.id)
    assert sorted(children) == ["ingest", "pr"]
    follow = children["ingest"]
    assert str(follow.id) == match[1] and follow.parameters["surveys"] == ["ce", "la"]
    assert INGEST_CONTINUATION_TAG in follow.tags
    # The mass-delete leave was this run's (and its own mirror runs'); never its follow-up's (issue 27).
    assert children["pr"].parameters["allow_mass_delete"] is True
    assert follow.parameters["allow_mass_delete"] is False
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with _client() as client:
        (summary,) = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run.id]))
        )
    assert summary.key == "ingest-summary" and summary.description == run.state.message
    assert f"| `pr` | changed: mirror run started | `{children['pr'].id}` |" in summary.data
    assert f"| `la` | not checked yet: left for {follow.name} ({follow.id}) |" in summary.data


def test_a_first_check_that_never_fits_in_a_run_fails_instead_of_chaining_forever(
    deployments, upstream, tmp_path, monkeypatch
):
    # After the hard stop the run fails two surveys and creates la's follow-up: 4 s for that (a
    # margin of 8), not 2: under a loaded CI the suite's SQLite server once took longer than 2 s.
    monkeypatch.setenv("QUEST_CONTINUATION_MARGIN_SECONDS", "8")
    _trickle(upstream, pr=60, ce=60)  # both checks start at once (QUEST_CONCURRENCY=2); neither ends
    run = _ingest(deployments, seconds=10, surveys=["pr", "ce", "la"])
    assert run.state.type.value == "FAILED", run.state
    message = run.state.message
    for survey in ("pr", "ce"):
        assert f"{survey} FAILED: its listing and stored state could not be read within one run" in message
    assert "population snapshot not written: pr could not be checked" in message
    follow = _children(run.id).get("ingest")  # la was not reached: the follow-up checks it
    assert follow is not None and follow.parameters["surveys"] == ["la"]


def test_the_follow_up_ingest_is_created_when_the_time_is_up_not_at_the_hard_stop(
    deployments, upstream, tmp_path, monkeypatch
):
    """pr's check ends with less than the margin left while ce's still trickles and la waits: the
    follow-up (ce, la) is created then, before pr's mirror run, due when this run's time is over;
    ce's check is stopped at the hard stop later. Its creation stays out of the run's last seconds,
    where a loaded server's retry once outlasted the deadline (stop 21, SQLite). Time up at 2 s as
    before, but 6 s (not 4) between the hard stop and the end: under pytest-xdist's three workers
    the wrap-up after the hard stop once took longer than 4 s and Lambda's deadline crashed the run."""
    monkeypatch.setenv("QUEST_CONTINUATION_MARGIN_SECONDS", "12")  # time up 12 s before the end
    _trickle(upstream, pr=3.0, ce=60.0)
    run = _ingest(deployments, seconds=14, surveys=["pr", "ce", "la"])
    assert run.state.type.value == "COMPLETED", run.state
    assert re.match(r"partial: checked 1 of 3 surveys; continues in run ", run.state.message or "")
    children = _children(run.id)
    assert sorted(children) == ["ingest", "pr"]
    follow = children["ingest"]
    assert follow.parameters["surveys"] == ["ce", "la"] and INGEST_CONTINUATION_TAG in follow.tags
    assert follow.created < children["pr"].created  # at the time-up, before pr's result was acted on
    assert follow.expected_start_time >= run.start_time + timedelta(seconds=9)  # due as this run ends


def test_a_check_that_ends_after_the_hand_over_is_taken_off_the_follow_up(deployments, upstream, monkeypatch):
    """ce is still being checked when the time is up, so the follow-up is created with ce and la;
    ce then ends before the hard stop, and the follow-up is narrowed to la: no survey is listed
    twice in a day (a no-change day stays at one listing GET per survey)."""
    monkeypatch.setenv("QUEST_CONTINUATION_MARGIN_SECONDS", "10")  # time up at 6 s, hard stop at 11 s
    _trickle(upstream, pr=6.5, ce=8.0)
    run = _ingest(deployments, seconds=16, surveys=["pr", "ce", "la"], allow_mass_delete=True)
    assert run.state.type.value == "COMPLETED", run.state
    assert re.match(r"partial: checked 2 of 3 surveys; continues in run ", run.state.message or "")
    children = _children(run.id)
    assert sorted(children) == ["ce", "ingest", "pr"]
    follow = children["ingest"]
    assert follow.created < children["pr"].created  # handed over at the time-up, ce still running
    assert follow.parameters["surveys"] == ["la"]  # then narrowed
    assert follow.parameters["allow_mass_delete"] is False  # never carried (issue 27)
