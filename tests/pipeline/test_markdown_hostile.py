"""Upstream text in the run pages (issue 27, class 5): a real ingest against a loopback upstream whose
file names and root folders carry links, images, HTML and bare URLs; the artifacts are read back
from the Prefect API and rendered. Nothing in them can be clicked or loaded, and the names still read
as they are."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from markdown_check import active, text, tokens

from flows.core.errors import ListingError
from flows.core.listing import parse_listing
from flows.devkit.samples import population_body, sample_bls_survey
from flows.devkit.upstream_server import UpstreamServer
from flows.discovery import SurveySelection
from flows.ingest_summary import IngestFanOut

# Accepted file names (no `/`, `..` or control characters), each a different way into a link.
NAMES = [
    "pr.[click](javascript:alert(1))",
    "pr.![t](https:beacon.example)",
    "pr.`x` <img src=x onerror=alert(1)>",
    "pr.www.evil.example",
    "pr.user@evil.example",
    "pr.<https:evil.example>",
    "pr.a|[b](https:evil.example)",
]
ROOT_FOLDERS = ["[x](https:evil.example)", "www.evil.example", "<img src=x>", "a|![t](https:t.example)"]


@pytest.fixture
def upstream(monkeypatch, tmp_path):
    files = dict(sample_bls_survey("pr", seed=5))
    for i, name in enumerate(NAMES):
        # The listing's href is percent-encoded, as IIS writes it; the mirror reads the name decoded.
        files[quote(name, safe="!$&'()*+,;=:@-._~")] = f"hostile {i}\n".encode()
    with UpstreamServer({"pr": files}, population_body()) as up:
        for folder in ROOT_FOLDERS:
            up.add_root_entry(folder)
        monkeypatch.setenv("QUEST_BLS_BASE_URL", up.bls_base_url)
        monkeypatch.setenv("QUEST_POPULATION_URL", up.population_url)
        monkeypatch.setenv("QUEST_STORE", str(tmp_path / "data"))
        yield up


def _artifacts(flow_run_ids):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        return client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=list(flow_run_ids)))
        )


def _subflows(root_id):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[root_id]))
        )
    return [r.id for r in runs]


def test_hostile_file_names_and_root_folders_render_as_text(prefect_harness, upstream):
    from flows.ingest import ingest

    state = ingest(["all"], return_state=True)
    assert state.is_completed(), state
    root = state.state_details.flow_run_id
    artifacts = {a.key: a for a in _artifacts([root, *_subflows(root)])}
    assert {"ingest-summary", "mirror-pr", "population-snapshot"} <= set(artifacts), sorted(artifacts)
    for artifact in artifacts.values():
        for markdown in (artifact.data, artifact.description or ""):
            assert active(markdown) == [], (artifact.key, markdown)
    mirror = text(artifacts["mirror-pr"].data)
    for name in NAMES:
        assert name in mirror, (name, artifacts["mirror-pr"].data)
    surveys = text(artifacts["ingest-summary"].data)
    for folder in ROOT_FOLDERS:
        assert folder in surveys, (folder, artifacts["ingest-summary"].data)


# The listing error quotes the page's first 80 characters of text.
HOSTILE_PAGE = (
    "<html><body><h1>[Log in](https:e.example)</h1>![](https:b.example) a@e.example|www.e.example"
    "</body></html>"
)


def test_a_failed_check_quoting_its_page_renders_as_text():
    with pytest.raises(ListingError) as failure:
        parse_listing(HOSTILE_PAGE, "https://download.bls.gov/pub/time.series/ce/")
    why = str(failure.value)
    assert "[Log in](https:e.example)" in why and "|www.e.example" in why  # the page's text, quoted
    fanned = IngestFanOut(
        selection=SurveySelection(surveys=["pr", "ce"]),
        unchanged=[],
        started={"pr": "run-1"},
        failed={"ce": why},
    )
    page = fanned.markdown()
    assert active(page) == [], page
    assert why in text(page)
    assert sum(t.type == "td_open" for t in tokens(page)) == 2 * 4, page  # the `|` added no cell
