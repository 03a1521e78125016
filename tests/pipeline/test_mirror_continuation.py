"""A survey mirror too big for one invocation continues in follow-up runs (issue 12), in-process.

The real function path (`run_flow_run` with a Lambda-like context: its SIGALRM deadline and the
run's budget) runs deployment runs of `mirror-survey` under the session harness, against a
trickled loopback upstream and a local store. Each follow-up is a real flow run that the partial
run created through Prefect; the test runs it the way the pool's next invocation would.
"""

from __future__ import annotations

import functools
import itertools
import re
import uuid

import pytest
from lambda_context import FakeContext

from flows.devkit.upstream_server import GeneratedFile, UpstreamServer
from flows.io.store import LocalStore
from flows.runtime.flow_run import run_flow_run

MARGIN = 2.5  # DEADLINE_MARGIN_SECONDS, scaled down
KIB = 1024
UUID_RE = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


def _wait_until_due(run) -> None:
    """What the pool's worker does: submit a run when it is due (Prefect would hold an early
    start in Pending until then, inside the invocation's time)."""
    import time
    from datetime import UTC, datetime

    time.sleep(max(0.0, (run.expected_start_time - datetime.now(UTC)).total_seconds()))


def _client():
    from prefect.client.orchestration import get_client

    return get_client(sync_client=True)


def _deploy_mirror(parameters: dict) -> uuid.UUID:
    with _client() as client:
        flow_id = client.create_flow_from_name("mirror-survey")
        deployment_id = client.create_deployment(
            flow_id=flow_id, name=f"mirror-{uuid.uuid4().hex[:8]}", entrypoint="flows/ingest.py:mirror_survey"
        )
        return client.create_flow_run_from_deployment(deployment_id, parameters=parameters).id


def _env(monkeypatch, upstream: UpstreamServer, store_dir, margin: float) -> LocalStore:
    monkeypatch.setenv("QUEST_STORE", str(store_dir))
    monkeypatch.setenv("QUEST_CONTACT", "tests@example.com")
    monkeypatch.setenv("QUEST_BLS_BASE_URL", upstream.bls_base_url)
    monkeypatch.setenv("QUEST_CONCURRENCY", "2")
    monkeypatch.setenv("QUEST_RETRIES", "0")
    monkeypatch.setenv("QUEST_CONTINUATION_MARGIN_SECONDS", str(margin))
    return LocalStore(store_dir)


@pytest.mark.parametrize("batched", [False, True], ids=["a-task-run-per-file", "small-files-batched"])
def test_a_survey_too_big_for_one_run_completes_over_follow_up_runs(
    prefect_harness, monkeypatch, tmp_path, batched
):
    # 10 files of 256 KiB at 128 KiB/s each, two at a time: ~10 s of transfers for runs of 8 s.
    # Batched: the same files 3 to a task run (as a plan of many small files has them), so the hard
    # stop falls inside batches and the files a batch did not reach go to the follow-up.
    files = {f"pr.part.{i:02d}": GeneratedFile(256 * KIB, seed=i) for i in range(10)}
    if batched:
        from flows import ingest
        from flows.core import plan

        units = functools.partial(plan.transfer_units, batch_files=3, batch_above=2)
        monkeypatch.setattr(ingest, "transfer_units", units)
    with UpstreamServer({"pr": files}, require_contact=True) as upstream:
        upstream.trickle("*/pr.part.*", bytes_per_second=128 * KIB)
        store = _env(monkeypatch, upstream, tmp_path / "data", margin=4)
        store.put_bytes("bls/pr/pr.gone", b"no longer listed")  # deleted only by the completing run
        parameters = {
            "survey": "pr",
            "dry_run": False,
            "allow_mass_delete": True,
            "snapshot_population": False,
        }
        run_id = _deploy_mirror(parameters)
        chain = []
        chain_links: list[str] = []  # each follow-up's chain start: the first run's, carried
        for _ in itertools.count():
            assert len(chain) < 8, chain
            result = run_flow_run(str(run_id), context=FakeContext(MARGIN + 8), margin_seconds=MARGIN)
            with _client() as client:
                run = client.read_flow_run(run_id)
            chain.append((run.state.type.value, run.state.message))
            assert run.state.type.value == "COMPLETED", (run.state, result)
            match = re.fullmatch(
                rf"partial: (\d+) of (\d+) files; continues in run .+? \(({UUID_RE})\)",
                run.state.message or "",
            )
            if match is None:
                break
            assert int(match[1]) >= 1
            assert store.head("bls/pr/pr.gone") is not None  # a partial run deletes nothing
            follow_up = uuid.UUID(match[3])
            with _client() as client:
                child = client.read_flow_run(follow_up)
                link = client.read_task_run(child.parent_task_run_id)
            # The follow-up: same deployment, same parameters but the mass-delete leave (issue 27) and
            # the chain it continues, a child of the partial run, SCHEDULED; created when the time
            # was up (not in the last seconds), for the end of the run's time.
            state = child.parameters.pop("chain")
            assert child.deployment_id == run.deployment_id
            assert child.parameters == {**parameters, "allow_mass_delete": False}
            assert state["link"] == len(chain_links) + 2 and state["stalls"] == 0
            chain_links.append(state["started"])
            assert link.flow_run_id == run_id and child.state.type.value == "SCHEDULED"
            if len(chain) == 1:  # ~10 s of transfers in 8 s: files were still waiting when time was up
                assert (child.expected_start_time - child.created).total_seconds() > 1.5, child
            _wait_until_due(child)
            run_id = follow_up
    assert len(chain) >= 2, chain  # it did continue
    assert len(set(chain_links)) == 1, chain_links
    totals = [int(re.match(r"partial: \d+ of (\d+)", m)[1]) for _, m in chain[:-1]]
    assert totals == sorted(totals, reverse=True) and totals[0] == 10  # each plan skips what is done
    assert store.head("bls/pr/pr.gone") is None
    assert store.list_keys("bls/pr/") == sorted(f"bls/pr/{n}" for n in files)
    for name, body in files.items():
        assert store.read_bytes(f"bls/pr/{name}") == b"".join(body.iter_chunks())


def test_a_file_no_run_can_move_fails_naming_it_its_size_and_the_knob(prefect_harness, monkeypatch, tmp_path):
    # 3 MiB at 256 KiB/s needs ~12 s; a run has 6 s.
    with UpstreamServer(
        {"pr": {"pr.huge": GeneratedFile(3 * 1024 * KIB, seed=1)}}, require_contact=True
    ) as upstream:
        upstream.trickle("*/pr.huge", bytes_per_second=256 * KIB)
        store = _env(monkeypatch, upstream, tmp_path / "data", margin=4)
        run_id = _deploy_mirror({"survey": "pr"})
        states = []
        for _ in range(3):  # the first run may leave it "not done yet" before it measured a rate
            run_flow_run(str(run_id), context=FakeContext(MARGIN + 6), margin_seconds=MARGIN)
            with _client() as client:
                run = client.read_flow_run(run_id)
            states.append(run.state)
            match = re.search(rf"continues in run .+? \(({UUID_RE})\)", run.state.message or "")
            if match is None:
                break
            run_id = uuid.UUID(match[1])
            with _client() as client:
                _wait_until_due(client.read_flow_run(run_id))
    final = states[-1]
    assert final.type.value == "FAILED", states
    assert "pr.huge (3145728 bytes)" in final.message and "timeout" in final.message, final.message
    assert store.head("bls/pr/pr.huge") is None


@pytest.mark.parametrize("seconds", [None])
def test_without_a_budget_nothing_changes(prefect_harness, monkeypatch, tmp_path, seconds):
    from flows.ingest import mirror_survey

    files = {f"pr.part.{i}": GeneratedFile(64 * KIB, seed=i) for i in range(4)}
    with UpstreamServer({"pr": files}, require_contact=True) as upstream:
        store = _env(monkeypatch, upstream, tmp_path / "data", margin=3600)
        summary = mirror_survey("pr")
    assert not summary.partial and sorted(summary.added) == sorted(files)
    assert store.list_keys("bls/pr/") == sorted(f"bls/pr/{n}" for n in files)


# --------------------------------------------------------------------------- bounded chains (issue 27)

STOPPED_RE = (
    r"stopped: (?P<reason>.+); (?P<done>\d+) of (?P<total>\d+) files moved in this run"
    r"(?:; population snapshot (?P<snapshot>\S+) written)?; the next daily ingest picks up from here"
)


def _run_chain(run_id: uuid.UUID, seconds: float, links: int, between=None) -> list:
    """Run a chain link by link as the pool would (at most `links`); `between(n)` after link n.
    Returns the runs as read after each link ended."""
    runs = []
    for n in range(1, links + 1):
        run_flow_run(str(run_id), context=FakeContext(MARGIN + seconds), margin_seconds=MARGIN)
        with _client() as client:
            run = client.read_flow_run(run_id)
        runs.append(run)
        match = re.search(rf"continues in run .+? \(({UUID_RE})\)", run.state.message or "")
        if match is None:
            break
        if between is not None:
            between(n)
        run_id = uuid.UUID(match[1])
        with _client() as client:
            _wait_until_due(client.read_flow_run(run_id))
    return runs


def _artifact(run_id: uuid.UUID) -> str:
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with _client() as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]))
        )
    return "\n".join(a.data for a in found if a.key.startswith("mirror-"))


@pytest.mark.parametrize("redating", ["after-every-run", "on-every-download"])
def test_an_upstream_that_re_dates_its_files_cannot_keep_a_chain_going(
    prefect_harness, monkeypatch, tmp_path, redating
):
    """Each run moves files and upstream dates them anew (after the run, or as each is served): every
    plan has all 20 files again. The chain stops at its second follow-up without progress (the bound
    set to 2 here, 3 by default) with one line, takes pr's population snapshot all the same,
    deletes nothing, and the survey is no longer "still mirroring" for the next daily ingest."""
    from flows.core import continuation
    from flows.devkit.samples import population_body
    from flows.ingest import _mirrors_in_progress

    monkeypatch.setattr(continuation, "MAX_STALLED_FOLLOW_UPS", 2, raising=False)  # today: none
    # 20 files of 2 s each, two at a time, in runs of 14 s: about 10 move a run, never all. The runs
    # are long enough that the last one's snapshot (a subflow) ends in time on a loaded machine:
    # under CI's load one 8 s run spent 6 s of it waiting on the Prefect server to end the subflow.
    files = {f"pr.part.{i:02d}": GeneratedFile(256 * KIB, seed=i) for i in range(20)}
    with UpstreamServer({"pr": files}, population_body(), require_contact=True) as upstream:
        upstream.trickle("*/pr.part.*", bytes_per_second=128 * KIB)
        if redating == "on-every-download":
            upstream.redate("pr", on="download")
        store = _env(monkeypatch, upstream, tmp_path / "data", margin=4)
        monkeypatch.setenv("QUEST_POPULATION_URL", upstream.population_url)
        store.put_bytes("bls/pr/pr.gone", b"no longer listed")

        def redate_all(_: int) -> None:
            if redating == "after-every-run":
                for name in files:
                    upstream.touch_file("pr", name)

        parameters = {"survey": "pr", "allow_mass_delete": True, "snapshot_population": True}
        first = _deploy_mirror(parameters)
        runs = _run_chain(first, seconds=14, links=6, between=redate_all)
    states = [(r.state.type.value, r.state.message) for r in runs]
    assert len(runs) == 3, states  # today: still "continues in run ..." at the sixth run
    last = runs[-1]
    assert last.state.type.value == "COMPLETED" and "\n" not in last.state.message, states
    stopped = re.fullmatch(STOPPED_RE, last.state.message)
    assert stopped, last.state.message
    assert stopped["reason"].startswith("no net progress in 2 follow-up runs (this run's plan had 20 files")
    assert int(stopped["total"]) == 20 and int(stopped["done"]) >= 1
    # pr's chain carried the day's snapshot: the run that ends it takes it.
    assert stopped["snapshot"] and store.list_keys("population/") == [stopped["snapshot"]]
    assert f"**Stopped:** {last.state.message.removeprefix('stopped: ')}" in _artifact(last.id)
    assert store.head("bls/pr/pr.gone") is not None  # a stopped chain deletes nothing
    for run in runs[1:]:  # the follow-ups: no mass-delete leave, the first run's start carried
        assert run.parameters["allow_mass_delete"] is False
        assert run.parameters["chain"]["started"] == runs[1].parameters["chain"]["started"]
    assert [r.parameters.get("chain", {}).get("link") for r in runs] == [None, 2, 3]
    assert "pr" not in _mirrors_in_progress(runs[0].deployment_id)


def test_a_chain_past_its_day_stops_whatever_its_progress(prefect_harness, monkeypatch, tmp_path):
    """A follow-up of a chain that began 21 hours ago (a chain that kept making a little progress
    all day) moves what its run allows, starts no follow-up and leaves the rest to the next ingest."""
    from datetime import UTC, datetime, timedelta

    files = {f"pr.part.{i:02d}": GeneratedFile(256 * KIB, seed=i) for i in range(10)}
    with UpstreamServer({"pr": files}, require_contact=True) as upstream:
        upstream.trickle("*/pr.part.*", bytes_per_second=128 * KIB)
        store = _env(monkeypatch, upstream, tmp_path / "data", margin=4)
        began = datetime.now(UTC) - timedelta(hours=21)
        chain = {"started": began.isoformat(), "link": 40, "stalls": 0, "pending": 100}
        (run,) = _run_chain(_deploy_mirror({"survey": "pr", "chain": chain}), seconds=8, links=2)
    assert run.state.type.value == "COMPLETED", run.state
    stopped = re.fullmatch(STOPPED_RE, run.state.message or "")
    assert stopped, run.state.message
    assert stopped["reason"] == (
        f"the chain started {began:%Y-%m-%d %H:%M} UTC is past its day (20 h; this is run 40 of it)"
    )
    assert 1 <= int(stopped["done"]) < 10 and stopped["snapshot"] is None
    assert len(store.list_keys("bls/pr/")) == int(stopped["done"])


def test_a_follow_up_never_carries_the_mass_delete_leave_and_says_so_at_the_guard(
    prefect_harness, monkeypatch, tmp_path
):
    """The first run may delete most of the mirror (allow_mass_delete): it moves part of the plan
    and continues; its follow-up, without the leave, meets the guard and says why in one line,
    having deleted nothing."""
    files = {f"pr.part.{i:02d}": GeneratedFile(256 * KIB, seed=i) for i in range(10)}
    with UpstreamServer({"pr": files}, require_contact=True) as upstream:
        upstream.trickle("*/pr.part.*", bytes_per_second=128 * KIB)
        store = _env(monkeypatch, upstream, tmp_path / "data", margin=4)
        gone = [f"bls/pr/pr.old.{i:02d}" for i in range(20)]
        for key in gone:
            store.put_bytes(key, b"no longer listed")
        first = _deploy_mirror({"survey": "pr", "allow_mass_delete": True})
        runs = _run_chain(first, seconds=8, links=3)
    assert len(runs) == 2, [(r.state.type.value, r.state.message) for r in runs]
    assert runs[0].state.type.value == "COMPLETED" and runs[0].state.message.startswith("partial: ")
    follow_up = runs[1]
    assert follow_up.parameters["allow_mass_delete"] is False
    assert follow_up.state.type.value == "FAILED" and "\n" not in follow_up.state.message
    message = follow_up.state.message
    assert "the listing would delete 20 of " in message, message
    assert "this is a follow-up run: allow_mass_delete is one person's decision for one run" in message
    assert all(store.head(key) is not None for key in gone)


def test_a_mirror_started_by_a_follow_up_ingest_says_why_its_guard_holds(
    prefect_harness, monkeypatch, tmp_path
):
    with UpstreamServer({"pr": {"pr.a": GeneratedFile(KIB, seed=1)}}, require_contact=True) as upstream:
        store = _env(monkeypatch, upstream, tmp_path / "data", margin=4)
        for i in range(5):
            store.put_bytes(f"bls/pr/pr.old.{i}", b"no longer listed")
        with _client() as client:
            flow_id = client.create_flow_from_name("mirror-survey")
            name = f"mirror-{uuid.uuid4().hex[:8]}"
            deployment = client.create_deployment(
                flow_id=flow_id, name=name, entrypoint="flows/ingest.py:mirror_survey"
            )
            run = client.create_flow_run_from_deployment(
                deployment, parameters={"survey": "pr"}, tags=["survey:pr", "ingest-continuation"]
            )
        (run,) = _run_chain(run.id, seconds=30, links=1)
    assert run.state.type.value == "FAILED", run.state
    assert "this is a follow-up run: allow_mass_delete" in run.state.message and "\n" not in run.state.message
