"""What a user sees of the ingest in the Prefect UI (issue 13), read back through the Prefect API
after real runs under the session harness: readable run and task names, `survey:<name>` tags, a
summary artifact on the ingest run, artifact descriptions that carry the counts, and a
description for every deployment parameter."""

from __future__ import annotations

import re

import pytest

from flows.devkit.samples import population_body, sample_bls_survey
from flows.devkit.upstream_server import UpstreamServer

DAY = r"\d{4}-\d{2}-\d{2}"


@pytest.fixture
def upstream(monkeypatch, tmp_path):
    surveys = {"pr": sample_bls_survey("pr", seed=7), "ce": sample_bls_survey("ce", seed=8)}
    with UpstreamServer(surveys, population_body(), require_contact=True) as up:
        monkeypatch.setenv("QUEST_BLS_BASE_URL", up.bls_base_url)
        monkeypatch.setenv("QUEST_POPULATION_URL", up.population_url)
        monkeypatch.setenv("QUEST_STORE", str(tmp_path / "data"))
        monkeypatch.setenv("QUEST_CONTACT", "tests@example.com")
        yield up


def _client():
    from prefect.client.orchestration import get_client

    return get_client(sync_client=True)


def _run_tree(root_id):
    """The root run, its subflow runs by name, and every task run of the tree."""
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterParentFlowRunId,
        TaskRunFilter,
        TaskRunFilterFlowRunId,
    )

    with _client() as client:
        root = client.read_flow_run(root_id)
        subflows = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[root_id]))
        )
        ids = [root_id, *(r.id for r in subflows)]
        tasks = client.read_task_runs(
            task_run_filter=TaskRunFilter(flow_run_id=TaskRunFilterFlowRunId(any_=ids))
        )
    return root, {r.name: r for r in subflows}, [t.name for t in tasks]


def _artifacts(flow_run_id):
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with _client() as client:
        return client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )


def test_an_ingest_run_has_readable_names_tags_and_a_summary(prefect_harness, upstream, tmp_path):
    from flows.ingest import ingest

    state = ingest(["pr", "ce"], return_state=True)
    assert state.is_completed(), state
    root, subflows, tasks = _run_tree(state.state_details.flow_run_id)
    assert re.fullmatch(rf"ingest {DAY}", root.name), root.name
    assert {"mirror pr", "mirror ce"} <= set(subflows), sorted(subflows)
    assert any(re.fullmatch(rf"population {DAY}", n) for n in subflows), sorted(subflows)
    assert "survey:pr" in subflows["mirror pr"].tags and "survey:ce" in subflows["mirror ce"].tags
    pr_files = sorted(sample_bls_survey("pr", seed=7))
    assert {f"transfer {name}" for name in pr_files} <= set(tasks), tasks
    assert f"list {upstream.survey_url('pr')}" in tasks and "read stored bls/pr/" in tasks
    assert "resolve surveys" in tasks
    assert not [t for t in tasks if re.search(r"-[0-9a-f]{3}$", t)], tasks  # no `read-object-44c`

    (summary,) = [a for a in _artifacts(root.id) if a.key == "ingest-summary"]
    assert summary.description.startswith("2 surveys: 2 changed, ") and "transferred" in summary.description
    assert "| `pr` | " in summary.data and "| `ce` | " in summary.data
    assert "## Population snapshot" in summary.data and re.search(
        r"`population/\S+\.json` \(\d+ years, ", summary.data
    )
    assert re.search(r"\d+(\.\d)? (B|KiB|MiB)", summary.data)  # human sizes
    (mirror,) = [a for a in _artifacts(subflows["mirror pr"].id) if a.key == "mirror-pr"]
    assert mirror.description.startswith(f"BLS mirror pr: {len(pr_files)} added, ")
    target = str(tmp_path / "data" / "bls" / "pr")
    assert f"→ `{target}/`" in mirror.data, mirror.data[:300]  # the exact prefix, not the store root


def test_every_deployment_parameter_has_a_description():
    from prefect.utilities.callables import parameter_schema

    from flows.ingest import ingest, mirror_survey
    from flows.reports import reports

    for flow in (ingest, mirror_survey, reports):
        properties = parameter_schema(flow.fn).model_dump()["properties"]
        assert properties, flow.name
        for name, prop in properties.items():
            assert len(prop.get("description") or "") > 20, (flow.name, name, prop)
            assert "anyOf" not in prop, (flow.name, name, prop)  # no `Property is type "None"` in the form
